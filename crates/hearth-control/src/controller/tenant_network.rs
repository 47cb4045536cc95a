//! Tenants' network policies: set by an admin (the server checks the
//! token), kept in the store, merged into each of the tenant's VMs' own
//! policies at their create (`hearth_net::tenant` has the rules). The
//! networks of the always refused classes a tenant opened are worked out
//! again from its current policy whenever one of its VMs' networks is made
//! or served, so an allowance taken back is not kept by a VM that boots
//! again. A changed or removed policy also narrows the tenant's running
//! VMs at once (`hearth_net::tenant::narrow_running`): their records keep
//! the narrowed policy, their rules, resolver and proxy get it in place.

use hearth_net::NicPolicy;
use hearth_store::{VmFilter, VmRecord};
use hearth_types::api::{NetworkPolicy, TenantNetworkPolicy};
use hearth_types::{error_chain, TenantId, Timestamp, VmState};

use super::{ControlError, Controller};

impl Controller {
    /// Checks and replaces `tenant`'s network policy; VMs created from now
    /// on get it, running ones are narrowed to it.
    pub async fn put_tenant_network(
        &self,
        tenant: &TenantId,
        policy: NetworkPolicy,
    ) -> Result<TenantNetworkPolicy, ControlError> {
        let checked = hearth_net::tenant::check(&policy).map_err(ControlError::Invalid)?;
        super::guest_services::egress_policy(&checked).map_err(ControlError::Invalid)?;
        let record = TenantNetworkPolicy {
            tenant: tenant.clone(),
            policy: checked.to_request(),
            updated_at: Timestamp::now(),
        };
        self.store.put_tenant_network(&record).await?;
        tracing::info!(%tenant, "tenant network policy replaced");
        narrow_running_vms(self, tenant).await?;
        Ok(record)
    }

    pub async fn tenant_network(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<TenantNetworkPolicy>, ControlError> {
        Ok(self.store.tenant_network(tenant).await?)
    }

    /// The policy removed, if there was one.
    pub async fn delete_tenant_network(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<TenantNetworkPolicy>, ControlError> {
        let removed = self.store.delete_tenant_network(tenant).await?;
        if removed.is_some() {
            tracing::info!(%tenant, "tenant network policy removed");
            narrow_running_vms(self, tenant).await?;
        }
        Ok(removed)
    }
}

/// `tenant`'s checked policy; `None` when it has none.
async fn tenant_policy(
    ctl: &Controller,
    tenant: &TenantId,
) -> Result<Option<NicPolicy>, ControlError> {
    let Some(record) = ctl.store.tenant_network(tenant).await? else {
        return Ok(None);
    };
    hearth_net::tenant::check(&record.policy)
        .map(Some)
        .map_err(|why| {
            ControlError::Invalid(format!("tenant {tenant}'s stored network policy: {why}"))
        })
}

/// A new VM's policy within its tenant's: what its record keeps and its
/// NIC gets.
pub(super) async fn merged(
    ctl: &Controller,
    tenant: &TenantId,
    vm: NicPolicy,
) -> Result<NicPolicy, ControlError> {
    let outer = tenant_policy(ctl, tenant).await?;
    hearth_net::tenant::merge(vm, outer.as_ref()).map_err(ControlError::Invalid)
}

/// The NIC policy of a VM whose record keeps `stored` (merged at its
/// create), with what its tenant opens now.
pub(super) async fn stored_nic(
    ctl: &Controller,
    tenant: &TenantId,
    stored: &NetworkPolicy,
) -> Result<NicPolicy, ControlError> {
    let mut nic = NicPolicy::from_request(stored).map_err(ControlError::Invalid)?;
    let outer = tenant_policy(ctl, tenant).await?;
    nic.open = hearth_net::tenant::opened(&nic.allow, outer.as_ref());
    Ok(nic)
}

/// Narrows each of `tenant`'s VMs with a NIC to its current policy: the
/// record first (so a reboot or a restarted server keeps it), then the
/// running network. A VM whose network could not be changed is logged and
/// given an event; the others are still narrowed.
async fn narrow_running_vms(ctl: &Controller, tenant: &TenantId) -> Result<(), ControlError> {
    let outer = tenant_policy(ctl, tenant).await?;
    let filter = VmFilter {
        tenant: Some(tenant.clone()),
        states: Vec::new(),
    };
    for record in ctl.store.list_vms(&filter).await? {
        if record.vm.state == VmState::Destroyed {
            continue;
        }
        let Some(stored) = &record.vm.network_policy else {
            continue;
        };
        let own = NicPolicy::from_request(stored).map_err(ControlError::Invalid)?;
        let narrowed = hearth_net::tenant::narrow_running(own, outer.as_ref());
        if narrowed.to_request() != *stored {
            let request = narrowed.to_request();
            let id = &record.vm.id;
            ctl.store.set_vm_network_policy(id, &request).await?;
        }
        apply_narrowed(ctl, &record, &narrowed).await;
    }
    Ok(())
}

async fn apply_narrowed(ctl: &Controller, record: &VmRecord, policy: &NicPolicy) {
    let id = &record.vm.id;
    match ctl.networks.update(id, policy).await {
        Ok(true) => tracing::info!(vm = %id, "network policy narrowed to its tenant's"),
        Ok(false) => {}
        Err(why) => {
            tracing::warn!(vm = %id, error = %why, "narrowing a running VM's network to its tenant's policy");
            let message = format!("its network could not take its tenant's new policy: {why}");
            if let Err(e) = ctl.store.add_event(id, Timestamp::now(), &message).await {
                tracing::warn!(vm = %id, error = %error_chain(&e), "recording an event");
            }
        }
    }
}
