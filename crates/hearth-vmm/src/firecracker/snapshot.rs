//! Snapshots on Firecracker: the guest paused (`PATCH /vm`), a full
//! snapshot written (`PUT /snapshot/create`: device state and every page
//! of memory, two files), and a new Firecracker that was given nothing but
//! its logger and metrics loading them (`PUT /snapshot/load`, memory from
//! the file, resumed at once).
//!
//! A snapshot's state is a directory holding [`VMSTATE`] and [`MEMORY`].
//! Firecracker records each drive's path in the device state and reopens
//! it on load; there is no override for drives. So hearth gives it paths
//! that name the VM's own disks in every VM alike: relative ones
//! (`drives/diskN`, links in the run directory, which is Firecracker's
//! working directory) when unjailed, and the jail's `/diskN` when jailed.
//! A restored VM then opens its own writable layer, never the source's.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use hearth_types::VmDescription;

use super::api::{MemBackend, MemBackendType, RunState, SnapshotCreate, SnapshotType, VmRun};
use super::client::ApiClient;
use super::jail::Jail;
use super::{api_error, io_error, RunFiles, CALL_TIMEOUT};
use crate::isolation::files::own;
use crate::VmmError;

/// The device state file in a snapshot's state directory.
pub const VMSTATE: &str = "vmstate";
/// The guest memory file in a snapshot's state directory.
pub const MEMORY: &str = "memory";
/// Where a jailed Firecracker writes and reads the two files, inside its jail.
const JAILED_VMSTATE: &str = "/snapshot.vmstate";
const JAILED_MEMORY: &str = "/snapshot.memory";
/// The links to the VM's disks that an unjailed Firecracker is given,
/// relative to the run directory.
pub const DRIVES_DIR: &str = "drives";

/// Where Firecracker reads or writes the two files of one snapshot, as it
/// sees them, and where they are on the host.
struct StateFiles {
    seen: (PathBuf, PathBuf),
    host: (PathBuf, PathBuf),
}

impl StateFiles {
    /// `state` is the snapshot's directory; a jailed Firecracker works on
    /// files at the top of its jail instead.
    fn of(vm: &VmDescription, binary: &Path, state: &Path) -> Self {
        let in_state = (state.join(VMSTATE), state.join(MEMORY));
        let jail = Jail::of(vm, binary);
        if !jail.root.exists() {
            return StateFiles {
                seen: in_state.clone(),
                host: in_state,
            };
        }
        let seen = (PathBuf::from(JAILED_VMSTATE), PathBuf::from(JAILED_MEMORY));
        StateFiles {
            host: (jail.host(&seen.0), jail.host(&seen.1)),
            seen,
        }
    }

    fn jailed(&self) -> bool {
        self.seen.0 != self.host.0
    }
}

/// Pauses `vm`'s guest and writes a full snapshot into the new directory
/// `state`; the guest stays paused until [`resume`].
pub async fn save(vm: &VmDescription, binary: &Path, state: &Path) -> Result<(), VmmError> {
    std::fs::create_dir(state).map_err(io_error(state))?;
    let files = StateFiles::of(vm, binary, state);
    writable_for_firecracker(vm, &files)?;
    let api = ApiClient::new(RunFiles::socket_of(&vm.run_dir), CALL_TIMEOUT);
    put(&api, &run_state(RunState::Paused)).await?;
    let create = SnapshotCreate {
        snapshot_type: SnapshotType::Full,
        snapshot_path: files.seen.0.clone(),
        mem_file_path: files.seen.1.clone(),
    };
    // A big guest's memory takes a while to write.
    let slow = ApiClient::new(api.socket().to_owned(), SAVE_TIMEOUT);
    put(&slow, &create).await?;
    if files.jailed() {
        move_file(&files.host.0, &state.join(VMSTATE))?;
        move_file(&files.host.1, &state.join(MEMORY))?;
    }
    Ok(())
}

/// How long writing the snapshot may take (memory goes at disk speed).
const SAVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs a guest paused by [`save`] again.
pub async fn resume(vm: &VmDescription) -> Result<(), VmmError> {
    let api = ApiClient::new(RunFiles::socket_of(&vm.run_dir), CALL_TIMEOUT);
    put(&api, &run_state(RunState::Resumed)).await
}

/// The load request for a Firecracker about to restore `state`; a jailed
/// one finds the files linked at the top of its jail.
pub fn load_request(
    vm: &VmDescription,
    binary: &Path,
    state: &Path,
) -> Result<super::api::SnapshotLoad, VmmError> {
    let files = StateFiles::of(vm, binary, state);
    if files.jailed() {
        link_file(&state.join(VMSTATE), &files.host.0)?;
        link_file(&state.join(MEMORY), &files.host.1)?;
    }
    Ok(super::api::SnapshotLoad {
        snapshot_path: files.seen.0,
        mem_backend: MemBackend {
            backend_type: MemBackendType::File,
            backend_path: files.seen.1,
        },
        resume_vm: true,
    })
}

/// The links `drives/diskN` in the run directory to the VM's disks, made
/// anew; the relative paths an unjailed Firecracker is given.
pub fn link_drives(vm: &VmDescription) -> Result<Vec<PathBuf>, VmmError> {
    let dir = vm.run_dir.join(DRIVES_DIR);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let link = |(i, disk): (usize, &hearth_types::Disk)| {
        let name = format!("disk{i}");
        let at = dir.join(&name);
        std::os::unix::fs::symlink(&disk.path, &at).map_err(io_error(&at))?;
        Ok(Path::new(DRIVES_DIR).join(name))
    };
    vm.disks.iter().enumerate().map(link).collect()
}

/// Firecracker may run as the VM's own user: the files it writes are made
/// first and given to the owner of its log (which is that user's).
fn writable_for_firecracker(vm: &VmDescription, files: &StateFiles) -> Result<(), VmmError> {
    let log = match (files.jailed(), files.host.0.parent()) {
        (true, Some(jail_root)) => jail_root.join("firecracker.log"),
        _ => vm.run_dir.join("firecracker.log"),
    };
    let owner = std::fs::metadata(&log).map_err(io_error(&log))?;
    for path in [&files.host.0, &files.host.1] {
        std::fs::File::create(path)
            .and_then(|_| own(path, owner.uid(), owner.gid(), 0o600))
            .map_err(io_error(path))?;
    }
    Ok(())
}

fn move_file(from: &Path, to: &Path) -> Result<(), VmmError> {
    std::fs::rename(from, to).map_err(io_error(to))
}

/// A hard link when the jail is on the snapshot's filesystem, else a copy.
fn link_file(from: &Path, to: &Path) -> Result<(), VmmError> {
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to).map(drop).map_err(io_error(to))
}

fn run_state(state: RunState) -> VmRun {
    VmRun { state }
}

async fn put<E: super::api::Endpoint>(api: &ApiClient, request: &E) -> Result<(), VmmError> {
    api.put(request)
        .await
        .map_err(|err| api_error(request, &err))
}

#[cfg(test)]
mod tests {
    use hearth_types::{Disk, VmId};

    use super::*;

    fn vm(dir: &Path) -> VmDescription {
        VmDescription {
            id: "vm-test".parse::<VmId>().unwrap(),
            kernel: dir.join("vmlinux"),
            initramfs: None,
            disks: vec![
                Disk {
                    path: dir.join("image.ext4"),
                    read_only: true,
                    key: None,
                },
                Disk {
                    path: dir.join("vm/layer.ext4"),
                    read_only: false,
                    key: None,
                },
            ],
            vcpus: 1,
            memory_mib: 128,
            cmdline: "console=ttyS0".into(),
            run_dir: dir.join("vm"),
            console_log: dir.join("vm/console.log"),
            channels: Vec::new(),
            memory: None,
        }
    }

    #[test]
    fn drives_are_relative_links_to_the_vms_own_disks() {
        let dir = tempfile::tempdir().unwrap();
        let vm = vm(dir.path());
        std::fs::create_dir_all(&vm.run_dir).unwrap();
        let paths = link_drives(&vm).unwrap();
        assert_eq!(
            paths,
            [Path::new("drives/disk0"), Path::new("drives/disk1")]
        );
        let target = std::fs::read_link(vm.run_dir.join(&paths[1])).unwrap();
        assert_eq!(target, vm.disks[1].path);
        link_drives(&vm).unwrap();
    }

    #[test]
    fn an_unjailed_load_reads_the_snapshots_own_files() {
        let dir = tempfile::tempdir().unwrap();
        let vm = vm(dir.path());
        let state = dir.path().join("snap/state");
        let load = load_request(&vm, Path::new("/fc/firecracker"), &state).unwrap();
        assert_eq!(load.snapshot_path, state.join("vmstate"));
        assert_eq!(load.mem_backend.backend_path, state.join("memory"));
        assert!(load.resume_vm);
    }

    #[test]
    fn a_jailed_load_reads_links_at_the_top_of_the_jail() {
        let dir = tempfile::tempdir().unwrap();
        let vm = vm(dir.path());
        let jail = Jail::of(&vm, Path::new("/fc/firecracker"));
        std::fs::create_dir_all(&jail.root).unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::write(state.join(VMSTATE), "devices").unwrap();
        std::fs::write(state.join(MEMORY), "pages").unwrap();
        let load = load_request(&vm, Path::new("/fc/firecracker"), &state).unwrap();
        assert_eq!(load.snapshot_path, Path::new("/snapshot.vmstate"));
        let linked = std::fs::read_to_string(jail.root.join("snapshot.memory")).unwrap();
        assert_eq!(linked, "pages");
    }
}
