//! What the controller does for its VMs' isolation (the confining itself
//! is `hearth_vmm::isolation`'s): it opens the data directory so each VM's
//! user can reach its own directory and the shared kernels and images, and
//! nothing else of hearth's; it releases a VM whose hypervisor ended while
//! no watcher saw it (its cgroup's counters recorded, the cgroup removed,
//! its files given back to root); and it sweeps cgroups no VM accounts for.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use hearth_guestkit::DataDir;
use hearth_store::VmRecord;
use hearth_types::VmId;

use super::Controller;

/// Directories VM users pass through to their own: searchable, not
/// listable.
const PASS_THROUGH: u32 = 0o711;
/// What only hearth reads: the archived logs of other VMs, the store.
const PRIVATE_DIR: u32 = 0o700;
const PRIVATE_FILE: u32 = 0o600;

/// Makes the data directory's root, `vms/` and `runs/` searchable by VM
/// users (each VM's own directory is its group's, see
/// `hearth_vmm::isolation::files`) and keeps the archives and the store
/// to hearth.
pub(super) fn open_data_dir(data: &DataDir) -> std::io::Result<()> {
    for dir in [data.root().to_owned(), data.vms(), data.runs()] {
        std::fs::create_dir_all(&dir)?;
        set_mode(&dir, PASS_THROUGH)?;
    }
    std::fs::create_dir_all(data.archives())?;
    set_mode(&data.archives(), PRIVATE_DIR)?;
    let store = data.store_file();
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{}{suffix}", store.display());
        if Path::new(&file).exists() {
            set_mode(Path::new(&file), PRIVATE_FILE)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// A VM whose hypervisor is gone with no watcher to see it end.
pub(super) fn release(ctl: &Controller, id: &VmId) {
    let dir = ctl.config.data.vm(id);
    ctl.isolation.release(id, &dir);
}

/// Removes the cgroups of VMs no active record accounts for, once they
/// are older than the orphan grace and empty (a cgroup with processes, or
/// a young one, may be another hearth's VM starting on this host).
pub(super) async fn sweep_cgroups(ctl: &Controller, active: &[VmRecord]) {
    for id in ctl.isolation.cgroup_vm_ids() {
        if active.iter().any(|r| r.vm.id == id) {
            continue;
        }
        let ours = matches!(ctl.store.vm(&id).await, Ok(Some(r)) if r.vm.state.is_active());
        if ours || !cgroup_older_than(ctl, &id, ctl.config.orphan_grace) {
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
