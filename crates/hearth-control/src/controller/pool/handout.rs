//! Handing a waiting VM out: the store's compare-and-set gives it the
//! tenant, its configuration, a new creation time and readiness deadline;
//! a NIC it has is opened to the create's policy; then its agent link
//! sends the configuration, and the VM becomes ready when its services
//! are (the agent says so, as after a cold boot).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hearth_store::PoolTake;
use hearth_types::api::{CreateVm, Vm, DEFAULT_MEMORY_MIB, DEFAULT_VCPUS};
use hearth_types::Timestamp;

use hearth_net::NicPolicy;

use super::{fit, nic, pool_of, source};
use crate::controller::{ControlError, Controller, Scope};

/// The pooled VM `req` gets, if its image has a pool with a waiting VM
/// that fits; `None`: boot it cold. `policy`: its NIC's, merged.
pub(in crate::controller) async fn hand_out(
    ctl: &Arc<Controller>,
    scope: &Scope,
    req: &CreateVm,
    policy: Option<&NicPolicy>,
    timeout: Duration,
) -> Result<Option<Vm>, ControlError> {
    let pools = ctl.store.pools().await?;
    let Some(pool) = pool_of(&pools, &req.image) else {
        return Ok(None);
    };
    let settings = &pool.settings;
    let pooled_nic = nic::pooled_nic(ctl, pool);
    if let Err(why) = fit::fits(req, settings.template.is_some(), pooled_nic) {
        tracing::info!(image = %req.image, why = why.as_str(), "create boots cold: it does not fit the pool");
        ctl.pools.count(&req.image, |c| c.cold += 1);
        return Ok(None);
    }
    let mut config = req.config.clone();
    if pooled_nic {
        config.network = Some(nic::guest_network());
    }
    let now = Timestamp::now();
    let ttl_ms = i64::try_from(settings.ttl_secs * 1000).unwrap_or(i64::MAX);
    let take = PoolTake {
        image: req.image.clone(),
        vcpus: req.vcpus.unwrap_or(DEFAULT_VCPUS),
        memory_mib: req.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB),
        assets: source::assets_of(ctl, pool).await,
        born_after: Timestamp::from_millis(now.as_millis().saturating_sub(ttl_ms)),
        tenant: scope.tenant.clone(),
        config,
        at: now,
        ready_deadline: now.plus(timeout),
        message: format!(
            "handed out from the pool of {} to tenant {}: its configuration goes to its agent now",
            req.image, scope.tenant
        ),
    };
    let Some(record) = ctl.store.take_pool_vm(&take).await? else {
        tracing::info!(image = %req.image, "create boots cold: no pooled VM is waiting");
        ctl.pools.count(&req.image, |c| c.cold += 1);
        return Ok(None);
    };
    let id = &record.vm.id;
    let mut vm = record.vm.clone();
    if let Some(policy) = policy.filter(|_| pooled_nic) {
        if let Err(why) = nic::open(ctl, id, policy).await {
            let message = format!("its network could not be opened at its hand-out: {why}");
            crate::controller::cleanup::fail(
                ctl,
                id,
                hearth_types::FailureCode::StartFailed,
                message,
            )
            .await;
            return Ok(ctl.store.vm(id).await?.map(|r| r.vm));
        }
        vm.network_policy = Some(policy.to_request());
    }
    match ctl.links.get(id).map(|link| link.configure()) {
        Some(Ok(())) => {}
        // Its watcher ended (the VM is going): its state says so.
        _ => tracing::warn!(vm = %id, "a handed-out VM has no agent link"),
    }
    ctl.pools.count(&req.image, |c| c.handed_out += 1);
    ctl.counters.created.fetch_add(1, Ordering::Relaxed);
    tracing::info!(vm = %id, tenant = %scope.tenant, image = %req.image, "VM handed out from its pool");
    Ok(Some(vm))
}
