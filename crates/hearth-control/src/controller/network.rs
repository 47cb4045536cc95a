//! VM networks as the controller uses them (`hearth-net`): a create step
//! that gives the VM its NIC (slot recorded before the kernel is touched)
//! and tells the agent its address; the detach of the one deletion path;
//! the reconciler pass. The host's ruleset is installed at the first
//! networked VM, so a host that never asks for a NIC is never changed.

use std::collections::HashSet;
use std::sync::Arc;

use hearth_net::{NetHost, Network, NicPolicy, Orphans, Prefix, TransitPool, VmNic};
use hearth_store::{Store, VmFilter};
use hearth_types::api::{NetworkMode, VmNetworkInfo};
use hearth_types::guest::GuestNetwork;
use hearth_types::{error_chain, VmId, VmState};
use tokio::sync::{Mutex, OnceCell};

use super::guest_services::GuestServices;
use super::{ControlError, Controller};

/// Where VM networks are made.
#[derive(Debug, Clone, Default)]
pub struct NetworkConfig {
    /// Names of every namespace and link (`{prefix}-s{slot}`).
    pub prefix: Prefix,
    pub pool: TransitPool,
    /// A named namespace (`/run/netns/NAME`) the VM networks hang off
    /// instead of the controller's own (a test's, or a host that keeps VM
    /// traffic apart).
    pub host_namespace: Option<String>,
    /// How the guests' resolver and web proxy resolve names: the host's
    /// resolver when `None` (`hearth serve` puts its `--egress-host`
    /// table in front of it).
    pub resolver: Option<Arc<dyn hearth_egress::Resolver>>,
    /// What a VM created without `network` gets (`hearth serve
    /// --default-network`); `None`: no NIC.
    pub default: Option<NetworkMode>,
}

/// The controller's VM networks, or why this host has none.
#[derive(Debug)]
pub(crate) struct Networks {
    network: Result<Network<dyn Store>, String>,
    /// The host's ruleset and forwarding, set up at the first NIC (tried
    /// again at the next one if it failed).
    prepared: OnceCell<()>,
    orphans: Mutex<Orphans>,
    /// Each networked VM's resolver and web proxy.
    services: GuestServices,
}

impl Networks {
    pub(crate) fn new(config: &NetworkConfig, store: Arc<dyn Store>) -> Networks {
        let host_ns = match &config.host_namespace {
            Some(name) => hearth_net::netns::open(name).map_err(|e| error_chain(&e)),
            None => hearth_net::netns::current()
                .map_err(|e| format!("opening this process's network namespace: {e}")),
        };
        let network = host_ns.map(|ns| {
            let host = NetHost::new(config.prefix.clone(), config.pool, ns);
            Network::new(host, store.clone())
        });
        Networks {
            network,
            prepared: OnceCell::new(),
            orphans: Mutex::new(Orphans::new(hearth_net::SLOT_GRACE)),
            services: GuestServices::new(
                config
                    .resolver
                    .clone()
                    .unwrap_or_else(|| Arc::new(hearth_egress::SystemResolver)),
                store,
            ),
        }
    }

    /// The same, removing what no VM owns at the first pass that sees it
    /// instead of after [`hearth_net::SLOT_GRACE`]: for owners whose
    /// liveness is exact (a foreground run's lock), since a slot is
    /// stored before its kernel objects exist.
    pub(crate) fn without_orphan_grace(mut self) -> Networks {
        self.orphans = Mutex::new(Orphans::new(std::time::Duration::ZERO));
        self
    }

    /// Refuses a request for a NIC this host cannot give.
    pub(super) fn check_available(&self) -> Result<(), ControlError> {
        match &self.network {
            Ok(_) => Ok(()),
            Err(why) => Err(ControlError::Invalid(format!(
                "this server cannot give VMs a network: {why}"
            ))),
        }
    }

    /// The VM's NIC, its slot claimed first; the host prepared before the
    /// first one; its resolver and proxy serving.
    pub(crate) async fn attach(&self, vm: &VmId, policy: &NicPolicy) -> Result<VmNic, String> {
        let network = self.network.as_ref().map_err(Clone::clone)?;
        let prepare = || async { network.host().prepare().await };
        let prepared = self.prepared.get_or_try_init(prepare).await;
        prepared.map_err(|e| format!("preparing the host: {}", error_chain(&e)))?;
        let nic = network.attach(vm, policy).await;
        let nic = nic.map_err(|e| error_chain(&e))?;
        let served = self.services.start(network.host(), vm, nic.slot, policy);
        if let Err(why) = served.await {
            if let Err(undo) = network.detach(vm).await {
                tracing::warn!(%vm, error = %error_chain(&undo), "removing a network whose services failed; the reconciler will retry");
            }
            return Err(format!("serving its resolver and proxy: {why}"));
        }
        Ok(nic)
    }

    /// One pass of the reconciler over these networks: `live` says which
    /// VMs still own theirs. What it removed is logged.
    pub(crate) async fn reconcile(&self, live: impl Fn(&VmId) -> bool) {
        let Ok(network) = &self.network else {
            return;
        };
        let mut orphans = self.orphans.lock().await;
        match network.reconcile(&mut orphans, live).await {
            Ok(report) => {
                for slot in &report.removed_orphans {
                    tracing::warn!(%slot, "removed an orphaned VM network");
                }
                for (vm, slot) in &report.released {
                    tracing::info!(%vm, %slot, "released the network of a VM that is gone");
                }
            }
            Err(e) => tracing::error!(error = %error_chain(&e), "network reconciler"),
        }
    }

    /// Gives VM `vm`'s running network `policy` in place: its namespace's
    /// and the host's rules, its resolver and proxy. `false` when it holds
    /// no network (stopped, or none).
    pub(crate) async fn update(&self, vm: &VmId, policy: &NicPolicy) -> Result<bool, String> {
        let network = self.network.as_ref().map_err(Clone::clone)?;
        let held = network.held().await.map_err(|e| error_chain(&e))?;
        let Some(mine) = held.into_iter().find(|s| &s.vm == vm) else {
            return Ok(false);
        };
        let slot = hearth_net::Slot::new(mine.slot).ok_or("a slot outside the pool")?;
        let updated = network.host().update(slot, policy).await;
        updated.map_err(|e| error_chain(&e))?;
        let services = &self.services;
        services
            .replace_policy(network.host(), vm, slot, policy)
            .await?;
        Ok(true)
    }

    /// Removes the VM's network if it has one (idempotent).
    pub(crate) async fn detach(&self, vm: &VmId) -> Result<bool, hearth_net::NetError> {
        self.services.stop(vm);
        match &self.network {
            Ok(network) => network.detach(vm).await,
            Err(_) => Ok(false),
        }
    }
}

/// The create step: attaches VM `id`'s network and adds it to the guest
/// configuration the agent reads, so the address is in place before any
/// service starts. A failure after the attach removes the network again.
pub(super) async fn attach(
    ctl: &Controller,
    id: &VmId,
    policy: &NicPolicy,
) -> Result<hearth_vmm::Nic, String> {
    let nic = ctl.networks.attach(id, policy).await?;
    let told = tell_guest(ctl, id, &nic).await;
    if let Err(why) = told {
        undo(ctl, id).await;
        return Err(why);
    }
    Ok(vmm_nic(nic))
}

/// What the hypervisor is given of `nic`: its TAP (by descriptor, and by
/// name in the VM's namespace) and the guest's MAC.
pub(crate) fn vmm_nic(nic: VmNic) -> hearth_vmm::Nic {
    let namespace = std::path::Path::new(hearth_net::netns::NETNS_DIR).join(&nic.name);
    hearth_vmm::Nic {
        mac: nic.guest.mac_text(),
        tap: nic.tap,
        tap_name: hearth_net::TAP_NAME.to_owned(),
        namespace: Some(namespace),
    }
}

async fn tell_guest(ctl: &Controller, id: &VmId, nic: &VmNic) -> Result<(), String> {
    let mut config = ctl
        .store
        .guest_config(id)
        .await
        .map_err(|e| error_chain(&e))?;
    config.network = Some(guest_network(&nic.guest));
    let stored = ctl.store.set_guest_config(id, &config).await;
    stored.map_err(|e| error_chain(&e))
}

/// What a guest with addressing `guest` is told: its address, the
/// gateway as its route and resolver, its MAC.
pub(crate) fn guest_network(guest: &hearth_net::GuestAddressing) -> GuestNetwork {
    GuestNetwork {
        mac: guest.mac_text(),
        address: guest.address,
        prefix_len: guest.prefix_len,
        gateway: guest.gateway,
        dns: vec![guest.gateway],
    }
}

impl Controller {
    /// VM `id`'s NIC: what its guest was told, and how many of its
    /// packets were refused. `None` when it has none (or it is gone).
    pub async fn vm_network(
        &self,
        scope: &super::Scope,
        id: &VmId,
    ) -> Result<Option<VmNetworkInfo>, ControlError> {
        self.vm(scope, id).await?;
        let config = self.store.guest_config(id).await?;
        let Some(guest) = config.network else {
            return Ok(None);
        };
        let Ok(network) = &self.networks.network else {
            return Ok(None);
        };
        let Some(refused_packets) = network.refused_packets(id).await? else {
            return Ok(None);
        };
        let refusals = self.networks.services.refusals(id);
        Ok(Some(VmNetworkInfo {
            mode: NetworkMode::Nat,
            address: format!("{}/{}", guest.address, guest.prefix_len),
            gateway: guest.gateway.to_string(),
            mac: guest.mac,
            refused_packets,
            resolver: guest.gateway.to_string(),
            refused_queries: refusals.queries,
            refused_connections: refusals.connections,
        }))
    }
}

/// Undoes the create step of a VM whose creation failed.
pub(super) async fn undo(ctl: &Controller, id: &VmId) {
    if let Err(e) = ctl.networks.detach(id).await {
        tracing::warn!(vm = %id, error = %error_chain(&e), "removing a failed VM's network; the reconciler will retry");
    }
}

/// One reconciler pass: networks of VMs that are gone are removed, and
/// kernel objects no slot accounts for once past their grace.
pub(super) async fn reconcile(ctl: &Controller) {
    let Ok(network) = &ctl.networks.network else {
        return;
    };
    let live = match ctl.store.list_vms(&VmFilter::default()).await {
        Ok(records) => records
            .into_iter()
            .filter(|r| r.vm.state != VmState::Destroyed)
            .map(|r| r.vm.id)
            .collect::<HashSet<VmId>>(),
        Err(e) => return tracing::error!(error = %e, "network reconciler: listing VMs"),
    };
    ctl.networks.reconcile(|vm| live.contains(vm)).await;
    serve_live(ctl, network, &live).await;
}

/// The resolver and proxy of every live VM that holds a slot (a VM a
/// restarted controller adopted has none yet), and of no other.
async fn serve_live(ctl: &Controller, network: &Network<dyn Store>, live: &HashSet<VmId>) {
    let services = &ctl.networks.services;
    for vm in services.serving() {
        if !live.contains(&vm) {
            services.stop(&vm);
        }
    }
    let held = match network.held().await {
        Ok(held) => held,
        Err(e) => return tracing::error!(error = %error_chain(&e), "network reconciler: slots"),
    };
    for slot in held {
        if !live.contains(&slot.vm) || services.is_serving(&slot.vm) {
            continue;
        }
        if let Err(why) = serve_adopted(ctl, network, &slot).await {
            tracing::warn!(vm = %slot.vm, %why, "serving a VM's resolver and proxy");
        }
    }
}

async fn serve_adopted(
    ctl: &Controller,
    network: &Network<dyn Store>,
    held: &hearth_store::NetSlot,
) -> Result<(), String> {
    let record = ctl.store.vm(&held.vm).await.map_err(|e| error_chain(&e))?;
    let record = record.ok_or("the VM's record is gone")?;
    let stored = record.vm.network_policy.unwrap_or_default();
    let policy = super::tenant_network::stored_nic(ctl, &record.vm.tenant, &stored)
        .await
        .map_err(|e| error_chain(&e))?;
    let slot = hearth_net::Slot::new(held.slot).ok_or("a slot outside the pool")?;
    let services = &ctl.networks.services;
    services
        .start(network.host(), &held.vm, slot, &policy)
        .await
}

impl From<hearth_net::NetError> for ControlError {
    fn from(e: hearth_net::NetError) -> ControlError {
        ControlError::Network(e)
    }
}
