//! What the controller does for its VMs' confinement (the confining itself
//! is `hearth_vmm::isolation`'s): it releases a VM whose hypervisor ended
//! while no watcher saw it (its cgroup's counters recorded, the cgroup
//! removed, its files given back to root), and it sweeps cgroups no VM
//! accounts for.

use std::time::Duration;

use hearth_store::VmRecord;
use hearth_types::VmId;

use super::Controller;

/// A VM whose hypervisor is gone with no watcher to see it end.
pub(super) fn release(ctl: &Controller, id: &VmId) {
    let dir = ctl.config.data.vm(id);
    ctl.isolation.release(id, &dir);
}

/// However short the orphan grace, a cgroup younger than this is left: it
/// may belong to a VM (of any hearth on this host) between its cgroup's
/// creation and its hypervisor joining it.
const MIN_CGROUP_AGE: Duration = Duration::from_secs(60);

/// Removes the cgroups of VMs no active record accounts for, once they
/// are older than the orphan grace and empty (a cgroup with processes, or
/// a young one, may be another hearth's VM starting on this host).
pub(super) async fn sweep_cgroups(ctl: &Controller, active: &[VmRecord]) {
    let age = ctl.config.orphan_grace.max(MIN_CGROUP_AGE);
    for id in ctl.isolation.cgroup_vm_ids() {
        if active.iter().any(|r| r.vm.id == id) {
            continue;
        }
        let ours = matches!(ctl.store.vm(&id).await, Ok(Some(r)) if r.vm.state.is_active());
        if ours || !cgroup_older_than(ctl, &id, age) {
            continue;
        }
        match ctl.isolation.remove_cgroup(&id) {
            Ok(()) => tracing::warn!(vm = %id, "removed an orphaned cgroup"),
            Err(e) => tracing::debug!(vm = %id, error = %e, "an orphaned cgroup stays"),
        }
    }
}

fn cgroup_older_than(ctl: &Controller, id: &VmId, age: Duration) -> bool {
    let Ok(host) = ctl.isolation.cgroups() else {
        return false;
    };
    host.vm(id).paths().iter().all(|p| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() >= age)
    })
}
