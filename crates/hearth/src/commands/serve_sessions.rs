//! The login sessions of `hearth serve`: the vault over the store (its key
//! file made at first start, 0600, or the operator's), the providers
//! catalogue, and the egress settings from the command line. Secrets stay
//! off it: an upstream proxy's credentials come from the environment.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hearth_control::controller::Controller;
use hearth_egress::{IpNet, Ports, ProxyCredentials, StaticHosts, UpstreamProxy};
use hearth_guestkit::DataDir;
use hearth_sessions::{Catalogue, EgressSettings, Sessions, SessionsConfig};
use hearth_vault::{KeyFile, Vault};

use crate::cli::{KeyFileArgs, SessionServeArgs};

/// Where an upstream proxy's `user:password` is read from.
pub const UPSTREAM_AUTH_ENV: &str = "HEARTH_EGRESS_UPSTREAM_AUTH";

/// Everything sessions need but the controller, checked before serving.
#[derive(Debug)]
pub struct SessionParts {
    vault: Arc<Vault>,
    catalogue: Catalogue,
    config: SessionsConfig,
}

impl SessionParts {
    pub fn from_args(
        data: &DataDir,
        keys: &KeyFileArgs,
        args: &SessionServeArgs,
        store: Arc<dyn hearth_store::Store>,
    ) -> anyhow::Result<SessionParts> {
        let key_file = match &keys.key_file {
            Some(path) => KeyFile::provided(path.clone()),
            None => KeyFile::in_data_dir(data.root()),
        };
        let catalogue = match &args.providers {
            Some(dir) => Catalogue::with_dir(dir)?,
            None => Catalogue::builtin(),
        };
        let mut config = SessionsConfig::new(egress(args)?);
        config.default_ttl = Duration::from_secs(args.session_ttl);
        config.readiness_timeout = Duration::from_secs(args.session_readiness_timeout);
        Ok(SessionParts {
            vault: Arc::new(Vault::new(key_file, store)),
            catalogue,
            config,
        })
    }

    /// The keys of persistent VMs' encrypted disks, sealed in this vault.
    pub fn disk_keys(&self) -> Arc<dyn hearth_control::disk_keys::DiskKeys> {
        Arc::new(hearth_control::disk_keys::VaultDiskKeys::new(Arc::clone(
            &self.vault,
        )))
    }

    pub fn sessions(self, controller: Arc<Controller>) -> Sessions {
        Sessions::new(controller, self.vault, self.catalogue, self.config)
    }
}

fn egress(args: &SessionServeArgs) -> anyhow::Result<EgressSettings> {
    let mut settings = EgressSettings::system();
    settings.extra_domains = args.egress_allow.clone();
    for d in &settings.extra_domains {
        hearth_egress::DomainPattern::parse(d).with_context(|| format!("--egress-allow {d:?}"))?;
    }
    if !args.egress_ports.is_empty() {
        let mut ports = vec![80, 443];
        ports.extend(&args.egress_ports);
        settings.ports = Ports::Only(ports);
    }
    for net in &args.egress_networks {
        let parsed = IpNet::parse(net).with_context(|| {
            format!("--egress-allow-network {net:?}: give a CIDR such as 10.1.0.0/16")
        })?;
        settings.allowed_networks.push(parsed);
    }
    settings.resolver = Arc::new(static_hosts(&args.egress_hosts)?);
    if let Some(addr) = &args.egress_upstream {
        settings.upstream = Some(upstream(addr)?);
    }
    Ok(settings)
}

pub(crate) fn static_hosts(entries: &[String]) -> anyhow::Result<StaticHosts> {
    let mut hosts = StaticHosts::system();
    for entry in entries {
        let bad =
            || format!("--egress-host {entry:?}: give NAME=IP, e.g. auth.example.test=127.0.0.1");
        let (name, ip) = entry.split_once('=').with_context(bad)?;
        let ip: IpAddr = ip.parse().with_context(bad)?;
        hosts = hosts.with(name, &[ip]).with_context(bad)?;
    }
    Ok(hosts)
}

fn upstream(addr: &str) -> anyhow::Result<UpstreamProxy> {
    let parsed = addr.parse().with_context(|| {
        format!("--egress-upstream {addr:?}: give HOST:PORT with an IP address, e.g. 10.0.0.5:3128")
    })?;
    let mut proxy = UpstreamProxy::new(parsed);
    if let Ok(auth) = std::env::var(UPSTREAM_AUTH_ENV) {
        let (user, password) = auth
            .split_once(':')
            .with_context(|| format!("{UPSTREAM_AUTH_ENV} must be user:password"))?;
        proxy = proxy.with_credentials(ProxyCredentials::basic(user, password));
    }
    Ok(proxy)
}
