//! NICs for pooled VMs. On a server whose default network is NAT, every
//! create that names no `network` gets a NIC, which is fixed at boot; so
//! the pools of such a server boot their VMs with one (a cold-booted pool;
//! a template's snapshot has none). A pooled VM's NIC is closed while it
//! waits: everything denied, no name resolved, and its agent, told
//! nothing, has not even put its address in place. At the hand-out the
//! create's policy (merged into its tenant's) is stored on the VM and
//! given to its network in place, before its configuration, the address
//! with it, goes to its agent.

use std::sync::Arc;

use hearth_net::{GuestAddressing, NicPolicy};
use hearth_store::PoolRecord;
use hearth_types::api::NetworkMode;
use hearth_types::guest::GuestNetwork;
use hearth_types::VmId;

use crate::controller::Controller;

/// Whether `pool`'s VMs have a NIC: on a server whose default network is
/// NAT, for a pool booted cold.
pub(super) fn pooled_nic(ctl: &Controller, pool: &PoolRecord) -> bool {
    ctl.config.network.default == Some(NetworkMode::Nat) && pool.settings.template.is_none()
}

/// A waiting VM's policy: nothing reached, no name resolved.
pub(in crate::controller) fn closed() -> NicPolicy {
    NicPolicy::reaching_nothing()
}

/// What a handed-out VM's agent puts on its NIC.
pub(super) fn guest_network() -> GuestNetwork {
    crate::controller::network::guest_network(&GuestAddressing::fixed())
}

/// Gives handed-out VM `id` its create's `policy`: stored first, so a
/// restarted server serves it with that, then its network in place.
pub(super) async fn open(
    ctl: &Arc<Controller>,
    id: &VmId,
    policy: &NicPolicy,
) -> Result<(), String> {
    let stored = ctl
        .store
        .set_vm_network_policy(id, &policy.to_request())
        .await;
    stored.map_err(|e| hearth_types::error_chain(&e))?;
    match ctl.networks.update(id, policy).await? {
        true => Ok(()),
        false => Err("it holds no network".to_owned()),
    }
}
