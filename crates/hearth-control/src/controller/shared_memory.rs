//! Shared templates (QEMU): a template VM's RAM is a file in its run
//! directory (`memory-backend-file,share=on`), its snapshot is saved with
//! `x-ignore-shared` so the RAM stays out of the state file, and once the
//! paused template's QEMU is gone the file, moved into the snapshot and
//! made root's and read-only, is the template's memory. A VM restored from
//! it maps the file private (`share=off,readonly=on,rom=off`): its pages
//! come from the page cache every such VM shares, and a write copies the
//! page for that VM alone, so the file never changes and never holds what a
//! restored VM wrote, such as its configuration (docs/snapshots.md).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_types::snapshot::SharedMemory;
use hearth_types::{BackendKind, MemoryFile, MemoryMapping, ProcessRef, SnapshotManifest};
use hearth_vmm::qemu::{cmdline, snapshot as qemu_snapshot};

use hearth_store::{SnapshotRole, StoreError, VmRecord};

use super::snapshot::{self, SnapshotFiles};
use super::{ControlError, Controller};

/// The memory file's name, in the template VM's run directory and then in
/// the snapshot.
pub(super) const MEMORY: &str = "memory";

/// How long the paused template's QEMU has to end once it is destroyed
/// (its guest cannot answer the power button: a 3 s grace, then a kill).
const EXIT_WAIT: Duration = Duration::from_secs(30);

/// The RAM of a VM being booted whose run directory is `run_dir`: for a
/// template VM on QEMU a file there; anonymous RAM otherwise (a template
/// on Firecracker is a plain snapshot).
pub(super) async fn of_new_vm(
    ctl: &Controller,
    record: &VmRecord,
    run_dir: &Path,
) -> Result<Option<MemoryFile>, StoreError> {
    let role = ctl.store.snapshot_role(&record.vm.id).await?;
    let template = matches!(role, Some((_, SnapshotRole::Template)));
    Ok(
        (template && record.vm.backend == BackendKind::Qemu).then(|| MemoryFile {
            path: run_dir.join(MEMORY),
            mapping: MemoryMapping::Template,
        }),
    )
}

/// The RAM of a VM restored from a snapshot with `manifest`: its template's
/// file, mapped copy-on-write.
pub(super) fn for_restore(manifest: &SnapshotManifest) -> Option<MemoryFile> {
    manifest.shared_memory.as_ref().map(|m| MemoryFile {
        path: m.file.path.clone(),
        mapping: MemoryMapping::CopyOnWrite,
    })
}

/// Moves the paused template's memory file into the snapshot (a rename:
/// QEMU's mapping goes with the file).
pub(super) fn move_into(memory: &MemoryFile, files: &SnapshotFiles) -> Result<(), ControlError> {
    std::fs::rename(&memory.path, memory_path(files)).map_err(|source| ControlError::Io {
        what: format!("the template's memory file {}", memory.path.display()),
        source,
    })
}

pub(super) fn memory_path(files: &SnapshotFiles) -> PathBuf {
    files.dir.join(MEMORY)
}

/// Once the template's QEMU (`process`) has ended: the memory file written
/// out, made root's and read-only for all, and what restores must match.
pub(super) async fn seal(
    process: Option<ProcessRef>,
    files: &SnapshotFiles,
) -> Result<SharedMemory, ControlError> {
    wait_exit(process).await?;
    let path = memory_path(files);
    let io = |source| ControlError::Io {
        what: format!("the template's memory file {}", path.display()),
        source,
    };
    std::fs::File::open(&path)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::os::unix::fs::chown(&path, Some(0), Some(0)).map_err(io)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).map_err(io)?;
    Ok(SharedMemory {
        file: snapshot::file_facts(&path)?,
        ..expected(path.clone())
    })
}

/// What this hearth restores a shared template with: the memory file as it
/// is on disk now (a missing one shows as 0 bytes), the capability and the
/// backend options.
pub(super) fn current(recorded: &SharedMemory) -> SharedMemory {
    let path = recorded.file.path.clone();
    let file = snapshot::file_facts(&path).unwrap_or(hearth_types::snapshot::FileFacts {
        path: path.clone(),
        size: 0,
        mtime_ns: 0,
    });
    SharedMemory {
        file,
        ..expected(path)
    }
}

fn expected(path: PathBuf) -> SharedMemory {
    SharedMemory {
        file: hearth_types::snapshot::FileFacts {
            path,
            size: 0,
            mtime_ns: 0,
        },
        capability: qemu_snapshot::IGNORE_SHARED.to_owned(),
        restore_backend: cmdline::memory_backend_options(MemoryMapping::CopyOnWrite).to_owned(),
    }
}

async fn wait_exit(process: Option<ProcessRef>) -> Result<(), ControlError> {
    let Some(process) = process else {
        return Ok(());
    };
    let start = Instant::now();
    while hearth_vmm::process::is_alive(process) {
        if start.elapsed() > EXIT_WAIT {
            return Err(ControlError::Invalid(format!(
                "the template's hypervisor (pid {}) did not end within {} s of its destroy, \
                 so its memory file cannot be sealed; take the template again",
                process.pid,
                EXIT_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
