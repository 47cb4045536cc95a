//! A session's way out: the policy its VM's connections are held to (the
//! provider's login domains, widened by the operator's settings), and the
//! sink that records each connection against the session in the store.

use std::net::IpAddr;
use std::sync::Arc;

use hearth_egress::{
    ConnectionRecord, Connector, Domains, Egress, IpNet, Kind, Outcome, Policy, PolicyError, Ports,
    RecordSink, Resolver, UpstreamProxy,
};
use hearth_store::Store;
use hearth_types::session::EgressConnection;
use hearth_types::{SessionId, Timestamp};

use crate::providers::Provider;

/// The operator's egress settings, for every session of this server.
#[derive(Clone, Debug)]
pub struct EgressSettings {
    /// Domains every session may reach besides its provider's.
    pub extra_domains: Vec<String>,
    pub ports: Ports,
    /// Networks the address classes would refuse but that are allowed
    /// (a fake provider on the host's loopback in a test, a corporate
    /// proxy's network).
    pub allowed_networks: Vec<IpNet>,
    /// The host's own addresses, refused.
    pub host_addresses: Vec<IpAddr>,
    pub upstream: Option<UpstreamProxy>,
    pub resolver: Arc<dyn Resolver>,
    pub connector: Arc<dyn Connector>,
}

impl EgressSettings {
    /// The host's resolver and TCP, ports 80 and 443, nothing widened.
    pub fn system() -> Self {
        EgressSettings {
            extra_domains: Vec::new(),
            ports: Ports::default(),
            allowed_networks: Vec::new(),
            host_addresses: Vec::new(),
            upstream: None,
            resolver: Arc::new(hearth_egress::SystemResolver),
            connector: Arc::new(hearth_egress::TcpConnector::default()),
        }
    }

    /// What a session with `provider` may reach: its domains, the
    /// server's and `tenant_domains`; through `upstream` when given, else
    /// the server's upstream proxy.
    pub fn policy(
        &self,
        provider: &Provider,
        tenant_domains: &[String],
        upstream: Option<UpstreamProxy>,
    ) -> Result<Policy, PolicyError> {
        self.policy_for(&provider.domains, tenant_domains, upstream)
    }

    /// The same for `domains` instead of one provider's (a CLI VM's: every
    /// provider's).
    pub fn policy_for(
        &self,
        domains: &[String],
        tenant_domains: &[String],
        upstream: Option<UpstreamProxy>,
    ) -> Result<Policy, PolicyError> {
        let patterns = domains
            .iter()
            .chain(&self.extra_domains)
            .chain(tenant_domains)
            .map(|d| hearth_egress::DomainPattern::parse(d))
            .collect::<Result<Vec<_>, _>>()?;
        let mut policy = Policy::with_domains(Domains::Only(patterns))
            .with_ports(self.ports.clone())
            .with_host_addresses(self.host_addresses.clone());
        for net in &self.allowed_networks {
            policy = policy.allow_network(*net);
        }
        if let Some(upstream) = upstream.or_else(|| self.upstream.clone()) {
            policy = policy.with_upstream(upstream);
        }
        Ok(policy)
    }

    /// The proxy for one session: its records go to that session.
    pub fn proxy(&self, store: Arc<dyn Store>, session: SessionId) -> Egress {
        let sink = Arc::new(SessionSink { store, session });
        Egress::new(self.resolver.clone(), self.connector.clone(), sink)
    }
}

impl EgressSettings {
    /// The proxy of a VM that is no session's (a CLI VM): its records go
    /// to the server's log, host, port and outcome only.
    pub fn vm_proxy(&self, vm: hearth_types::VmId) -> Egress {
        let sink = Arc::new(LogSink { vm });
        Egress::new(self.resolver.clone(), self.connector.clone(), sink)
    }
}

#[derive(Debug)]
struct LogSink {
    vm: hearth_types::VmId,
}

impl RecordSink for LogSink {
    fn record(&self, record: ConnectionRecord) {
        let c = connection(&record);
        tracing::info!(vm = %self.vm, host = ?c.host, port = ?c.port, outcome = %c.outcome, reason = ?c.reason, "egress connection");
    }
}

/// Stores each record against its session, off the proxy's path.
#[derive(Debug)]
struct SessionSink {
    store: Arc<dyn Store>,
    session: SessionId,
}

impl RecordSink for SessionSink {
    fn record(&self, record: ConnectionRecord) {
        let (store, session) = (self.store.clone(), self.session.clone());
        let connection = connection(&record);
        tokio::spawn(async move {
            if let Err(e) = store.add_egress_connection(&session, &connection).await {
                tracing::warn!(%session, error = %hearth_types::error_chain(&e), "an egress record was not stored");
            }
        });
    }
}

/// The record as the API lists it: no address, no contents.
pub fn connection(record: &ConnectionRecord) -> EgressConnection {
    let (outcome, reason) = match &record.outcome {
        Outcome::Allowed => ("allowed", None),
        Outcome::Denied { denial } => ("denied", Some(format!("denied by policy: {denial}"))),
        Outcome::Failed { status, reason } => ("failed", Some(format!("{status}: {reason}"))),
        Outcome::BadRequest { reason, .. } => ("bad_request", Some(reason.clone())),
    };
    let at = record
        .started_at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| Timestamp::from_millis(d.as_millis() as i64))
        .unwrap_or_else(|_| Timestamp::now());
    EgressConnection {
        at,
        kind: record.kind.map(|k| match k {
            Kind::Tunnel => "tunnel".to_owned(),
            Kind::Forward => "forward".to_owned(),
            Kind::Intercepted => "intercepted".to_owned(),
        }),
        host: record.host.clone(),
        port: record.port,
        outcome: outcome.to_owned(),
        reason,
        bytes_up: record.bytes_up,
        bytes_down: record.bytes_down,
    }
}
