//! The isolation this host gives VM hypervisors, decided once per process
//! (`hearth serve`, `hearth vm run`): what `hearth_vmm::isolation` finds
//! the host allows, with the data directory opened so each VM's user can
//! reach its own directory and the shared kernels and images, and nothing
//! else of hearth's.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use hearth_guestkit::DataDir;
use hearth_vmm::isolation::Isolation;

/// What this host allows, for VMs kept in `data`.
pub fn for_host(data: &DataDir) -> Arc<Isolation> {
    let isolation = Isolation::for_host();
    if isolation.users().is_ok() {
        if let Err(e) = open_data_dir(data) {
            tracing::warn!(error = %e, "could not set the data directory's permissions for VM users");
        }
    }
    tracing::debug!(
        users = ?isolation.users().map(|r| format!("{}-{}", r.first, r.last())),
        cgroups = ?isolation.cgroups().map(|c| format!("v{}", c.version())),
        "hypervisor isolation"
    );
    Arc::new(isolation)
}

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
pub fn open_data_dir(data: &DataDir) -> std::io::Result<()> {
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
