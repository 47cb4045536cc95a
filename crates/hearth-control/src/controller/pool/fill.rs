//! The pools' reconciler, run every tick: removes pooled VMs that must go
//! (past their time to live, booted from assets that changed since, beyond
//! their pool's size, of a pool that was removed, never connected), each
//! through the one deletion path, then starts boots where a pool is short:
//! at its refill rate, at most `pool_boots` pooled VMs booting at once, and
//! none while an explicit create is still starting (they go first).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_store::{PoolRecord, PoolVmRecord, VmFilter, VmRecord};
use hearth_types::{TenantId, Timestamp, VmState};

use super::{pool_of, source};
use crate::controller::{cleanup, Controller};

pub(in crate::controller) async fn reconcile(ctl: &Arc<Controller>) {
    sweep(ctl).await;
    refill(ctl).await;
}

/// Removes what must go from the pools.
pub(super) async fn sweep(ctl: &Arc<Controller>) {
    let (Ok(pools), Ok(entries)) = (ctl.store.pools().await, ctl.store.pool_vms().await) else {
        return;
    };
    let mut assets: BTreeMap<String, String> = BTreeMap::new();
    let mut kept: BTreeMap<String, u32> = BTreeMap::new();
    let now = Timestamp::now();
    for e in &entries {
        let Ok(Some(record)) = ctl.store.vm(&e.vm).await else {
            continue;
        };
        if !record.vm.state.is_active() {
            // It failed or was removed: its own cleanup is under way.
            let _ = ctl.store.remove_pool_vm(&e.vm).await;
            continue;
        }
        if !assets.contains_key(&e.image) {
            let now = match pool_of(&pools, &e.image) {
                Some(pool) => source::assets_of(ctl, pool).await,
                None => source::boot_assets(ctl, &e.image),
            };
            assets.insert(e.image.clone(), now);
        }
        let current = &assets[&e.image];
        let kept_here = kept.entry(e.image.clone()).or_default();
        match why_it_goes(ctl, &pools, e, current, *kept_here, now) {
            Some(why) => expire(ctl, record, &why).await,
            None => *kept_here += 1,
        }
    }
    strays(ctl, &entries).await;
}

/// Why pooled VM `e` must go, if it must; `kept` VMs of its pool stay so far.
fn why_it_goes(
    ctl: &Controller,
    pools: &[PoolRecord],
    e: &PoolVmRecord,
    assets: &str,
    kept: u32,
    now: Timestamp,
) -> Option<String> {
    let Some(s) = pool_of(pools, &e.image).map(|p| &p.settings) else {
        return Some("its pool was removed".into());
    };
    let age = now.since(e.created_at);
    let waited = e.warm_since.map(|since| now.since(since));
    if waited.is_some_and(|w| w >= Duration::from_secs(s.ttl_secs)) {
        return Some(format!(
            "older than its pool's time to live ({} s)",
            s.ttl_secs
        ));
    }
    if e.assets != assets {
        return Some("its image, kernel, hypervisor or template changed since it was made".into());
    }
    if !e.warm && age >= ctl.config.readiness_timeout {
        let secs = ctl.config.readiness_timeout.as_secs();
        return Some(format!("its agent did not connect within {secs} s"));
    }
    if kept >= s.size.min(s.max) {
        return Some(format!(
            "its pool holds {} VMs at most now",
            s.size.min(s.max)
        ));
    }
    None
}

/// Takes `record` out of its pool, unless a create took it first, and
/// destroys it.
async fn expire(ctl: &Arc<Controller>, record: VmRecord, why: &str) {
    let id = record.vm.id.clone();
    if !matches!(ctl.store.remove_pool_vm(&id).await, Ok(true)) {
        return;
    }
    let image = record.vm.image.clone();
    let _ = ctl
        .store
        .add_event(
            &id,
            Timestamp::now(),
            &format!("removed from its pool: {why}"),
        )
        .await;
    tracing::info!(vm = %id, image = %image, why, "pooled VM removed");
    ctl.pools.count(&image, |c| c.expired += 1);
    if let Err(e) = cleanup::destroy_now(ctl, record).await {
        tracing::warn!(vm = %id, error = %hearth_types::error_chain(&e), "a removed pooled VM could not be destroyed yet");
    }
}

/// Active VMs of the pool tenant that no pool row holds (a controller that
/// stopped between recording a pooled VM and its row): destroyed.
async fn strays(ctl: &Arc<Controller>, entries: &[PoolVmRecord]) {
    let filter = VmFilter {
        tenant: Some(TenantId::pool()),
        states: vec![VmState::Requested, VmState::Preparing, VmState::Booting],
    };
    let Ok(vms) = ctl.store.list_vms(&filter).await else {
        return;
    };
    for r in vms {
        if !entries.iter().any(|e| e.vm == r.vm.id) {
            tracing::info!(vm = %r.vm.id, "a pooled VM without its pool row is destroyed");
            let _ = cleanup::destroy_now(ctl, r).await;
        }
    }
}

/// Starts boots where pools are short.
async fn refill(ctl: &Arc<Controller>) {
    let (Ok(pools), Ok(entries)) = (ctl.store.pools().await, ctl.store.pool_vms().await) else {
        return;
    };
    if explicit_starting(ctl).await {
        return;
    }
    let booting = entries.iter().filter(|e| !e.warm).count();
    let mut slots = ctl.config.pool_boots.saturating_sub(booting);
    for pool in pools {
        if slots == 0 {
            return;
        }
        let have = entries.iter().filter(|e| e.image == pool.image).count();
        let want = pool.settings.size.min(pool.settings.max) as usize;
        if have >= want || !rate_allows(ctl, &pool) {
            continue;
        }
        slots -= 1;
        boot_one(ctl, &pool).await;
    }
}

async fn boot_one(ctl: &Arc<Controller>, pool: &PoolRecord) {
    mark_boot(ctl, &pool.image);
    match source::make(ctl, pool).await {
        Ok(id) => {
            ctl.pools.count(&pool.image, |c| c.boots += 1);
            tracing::info!(vm = %id, image = %pool.image, "pooled VM booting");
        }
        Err(e) => {
            tracing::warn!(image = %pool.image, error = %hearth_types::error_chain(&e), "a pooled VM could not be made")
        }
    }
}

/// Whether a create of a tenant's is still starting: then the pools wait.
async fn explicit_starting(ctl: &Controller) -> bool {
    let filter = VmFilter {
        tenant: None,
        states: vec![VmState::Requested, VmState::Preparing, VmState::Booting],
    };
    let pool = TenantId::pool();
    match ctl.store.list_vms(&filter).await {
        Ok(vms) => vms.iter().any(|r| r.vm.tenant != pool),
        Err(_) => true,
    }
}

/// Whether the pool's refill rate allows a boot now.
fn rate_allows(ctl: &Controller, pool: &PoolRecord) -> bool {
    let every = Duration::from_secs(60) / pool.settings.refill_per_min.max(1);
    let last = ctl
        .pools
        .last_boot
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    last.get(&pool.image).is_none_or(|at| at.elapsed() >= every)
}

fn mark_boot(ctl: &Controller, image: &str) {
    let mut last = ctl
        .pools
        .last_boot
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    last.insert(image.to_owned(), Instant::now());
}
