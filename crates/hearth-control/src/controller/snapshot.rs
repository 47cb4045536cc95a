//! Snapshots of running VMs: the guest paused, its memory and device
//! state written by the hypervisor, its writable layer frozen beside
//! them, a manifest of what a restore must match, and the guest run on.
//! A template is the same taken of a VM booted from an image for the
//! purpose, before any VM's configuration reached it, and then destroyed.
//! The row comes first and goes last, so a name is never taken twice and
//! a failure leaves no files.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_guestkit::layer;
use hearth_store::{SnapshotRecord, SnapshotRole};
use hearth_types::api::{CreateVm, Vm};
use hearth_types::snapshot::{CreateSnapshot, FileFacts, Snapshot};
use hearth_types::{
    error_chain, SnapshotManifest, SnapshotName, Timestamp, VmDescription, VmId, VmState,
};

use super::{shared_memory, ControlError, Controller, Scope};

/// The files of one snapshot.
pub(crate) struct SnapshotFiles {
    pub dir: PathBuf,
    /// Memory and device state, as the hypervisor wrote it.
    pub state: PathBuf,
    /// The VM's writable layer as it was when the guest paused.
    pub layer: PathBuf,
}

impl SnapshotFiles {
    pub fn of(ctl: &Controller, name: &SnapshotName) -> Self {
        let dir = ctl.config.data.snapshots().join(name.as_str());
        SnapshotFiles {
            state: dir.join("state"),
            layer: dir.join("layer.ext4"),
            dir,
        }
    }
}

/// Where a VM's description is kept while it runs (what a snapshot of it
/// must record).
pub(crate) fn description_path(dir: &Path) -> PathBuf {
    dir.join("description.json")
}

/// Keeps `vm`'s description in its directory.
pub(crate) fn keep_description(vm: &VmDescription) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(vm).map_err(std::io::Error::other)?;
    std::fs::write(description_path(&vm.run_dir), json)
}

/// How long a template VM has to get ready (a browser image under TCG
/// with the other core busy: minutes).
const TEMPLATE_AGENT_WAIT: Duration = Duration::from_secs(600);

pub(super) async fn create(
    ctl: &Arc<Controller>,
    scope: &Scope,
    req: CreateSnapshot,
) -> Result<Snapshot, ControlError> {
    let record = SnapshotRecord {
        name: req.name.clone(),
        tenant: scope.tenant.clone(),
        manifest: None,
        created_at: Timestamp::now(),
    };
    match (&req.vm, &req.image) {
        (Some(vm), None) => {
            let vm = ctl.record(scope, vm).await?.vm;
            ctl.store.insert_snapshot(&record).await?;
            finish(ctl, &record, of_vm(ctl, &vm, &req.name).await).await
        }
        (None, Some(image)) => {
            ctl.store.insert_snapshot(&record).await?;
            let taken = template(ctl, scope, image, &req.name).await;
            finish(ctl, &record, taken).await
        }
        _ => Err(ControlError::Invalid(
            "give either `vm` (a running VM to snapshot) or `image` (to make a template), not both or neither"
                .into(),
        )),
    }
}

/// Stores the manifest, or undoes the row and files on failure.
async fn finish(
    ctl: &Controller,
    record: &SnapshotRecord,
    taken: Result<SnapshotManifest, ControlError>,
) -> Result<Snapshot, ControlError> {
    match taken {
        Ok(manifest) => {
            ctl.store.finish_snapshot(&record.name, &manifest).await?;
            let mut done = record.clone();
            done.manifest = Some(manifest);
            shown(ctl, done).ok_or_else(|| ControlError::SnapshotNotFound(record.name.clone()))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(SnapshotFiles::of(ctl, &record.name).dir);
            ctl.store.delete_snapshot(&record.name).await?;
            Err(e)
        }
    }
}

/// A snapshot of a running VM, which runs on.
async fn of_vm(
    ctl: &Controller,
    vm: &Vm,
    name: &SnapshotName,
) -> Result<SnapshotManifest, ControlError> {
    if !matches!(vm.state, VmState::Ready | VmState::Booting) {
        return Err(ControlError::Invalid(format!(
            "VM {} is {}: only a running VM can be snapshotted",
            vm.id, vm.state
        )));
    }
    let template = matches!(
        ctl.store.snapshot_role(&vm.id).await?,
        Some((_, SnapshotRole::Template))
    );
    let (manifest, _) = take(ctl, vm, name, Taker::OfVm { template }).await?;
    Ok(manifest)
}

/// Who takes a snapshot: a user, of a running VM that runs on (itself a
/// template VM or not), or [`template`], which destroys the VM after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Taker {
    OfVm { template: bool },
    Template,
}

/// Boots `image` as a template VM (its link sends it an empty
/// configuration: the image's own services run, no VM's settings or
/// secrets exist in it), waits until it is ready, snapshots it and
/// destroys it. On QEMU its RAM is a file that becomes the template's
/// shared memory once its hypervisor is gone ([`shared_memory`]).
async fn template(
    ctl: &Arc<Controller>,
    scope: &Scope,
    image: &str,
    name: &SnapshotName,
) -> Result<SnapshotManifest, ControlError> {
    let req = CreateVm {
        image: image.to_owned(),
        readiness_timeout_secs: Some(TEMPLATE_AGENT_WAIT.as_secs()),
        ..CreateVm::default()
    };
    let vm = super::create::create_with_role(ctl, scope, req, Some((name, SnapshotRole::Template)))
        .await?;
    let taken = match wait_for_agent(ctl, &vm.id).await {
        Ok(vm) => take(ctl, &vm, name, Taker::Template).await,
        Err(e) => Err(e),
    };
    let record = ctl.record(scope, &vm.id).await.ok();
    let process = record.as_ref().and_then(|r| r.process);
    if let Some(record) = record {
        let _ = super::cleanup::destroy_now(ctl, record).await;
    }
    let (mut manifest, shared) = taken?;
    if shared {
        let files = SnapshotFiles::of(ctl, name);
        manifest.shared_memory = Some(shared_memory::seal(process, &files).await?);
    }
    Ok(manifest)
}

/// The template VM once it is ready (every service of its image ready).
async fn wait_for_agent(ctl: &Controller, id: &VmId) -> Result<Vm, ControlError> {
    let start = Instant::now();
    loop {
        let vm = ctl
            .store
            .vm(id)
            .await?
            .ok_or_else(|| ControlError::NotFound(id.clone()))?;
        if vm.vm.state == VmState::Ready {
            return Ok(vm.vm);
        }
        if !vm.vm.state.is_active() || start.elapsed() > TEMPLATE_AGENT_WAIT {
            return Err(ControlError::Invalid(format!(
                "the template VM {id} of this snapshot is {} and never got ready: \
                 see `hearth vm diagnose {id}`",
                vm.vm.state
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pauses the VM, saves its state, freezes its layer, resumes it; the
/// manifest of what it was, and whether its RAM was a file, now in the
/// snapshot: then the VM stays paused (a running guest would change the
/// file the state was saved against) for [`template`] to destroy.
async fn take(
    ctl: &Controller,
    vm: &Vm,
    name: &SnapshotName,
    taker: Taker,
) -> Result<(SnapshotManifest, bool), ControlError> {
    let io = |what: String| move |source| ControlError::Io { what, source };
    let run_dir = ctl.config.data.vm(&vm.id);
    let json = std::fs::read(description_path(&run_dir)).map_err(io(format!(
        "the description of VM {} (one started by an older hearth cannot be snapshotted)",
        vm.id
    )))?;
    let desc: VmDescription = serde_json::from_slice(&json)
        .map_err(|e| ControlError::Invalid(format!("VM {}'s description: {e}", vm.id)))?;
    let encrypted = std::ffi::OsStr::new(crate::prepare::ENCRYPTED_DISK);
    if desc
        .disks
        .iter()
        .any(|d| d.path.file_name() == Some(encrypted))
    {
        return Err(ControlError::Invalid(format!(
            "VM {}'s disk is encrypted (a persistent VM): snapshots of it are not supported; \
             snapshot a VM that is not persistent",
            vm.id
        )));
    }
    if desc
        .disks
        .iter()
        .any(|d| d.path.extension().is_some_and(|e| e == "qcow2"))
    {
        return Err(ControlError::Invalid(format!(
            "VM {} was restored from a snapshot: snapshots of restored VMs are not supported yet; \
             snapshot a booted VM or make a template (`--image`)",
            vm.id
        )));
    }
    if desc.memory.is_some() && taker != Taker::Template {
        return Err(ControlError::Invalid(format!(
            "VM {} is the template VM of a snapshot being made (its RAM is that template's \
             memory file): it cannot be snapshotted on its own; make templates with `--image`",
            vm.id
        )));
    }
    if has_nic(ctl, &vm.id).await? {
        return Err(ControlError::Invalid(format!(
            "VM {} has a NIC: snapshots of VMs with a network are not supported yet",
            vm.id
        )));
    }
    let backend = ctl.backend(vm.backend)?;
    let files = SnapshotFiles::of(ctl, name);
    std::fs::create_dir_all(&files.dir).map_err(io(format!("{}", files.dir.display())))?;
    let _ = std::fs::set_permissions(&files.dir, std::fs::Permissions::from_mode(0o755));
    let saving = run_dir.join("snapshot.state");
    remove_state(&saving);
    let saved = backend.save(&desc, &saving).await;
    let frozen = match &saved {
        Ok(()) => freeze(&desc, &saving, &files).and_then(|()| match &desc.memory {
            Some(memory) => shared_memory::move_into(memory, &files),
            None => Ok(()),
        }),
        Err(_) => Ok(()),
    };
    let resumed = match desc.memory {
        Some(_) => Ok(()),
        None => backend.resume(&desc).await,
    };
    remove_state(&saving);
    saved
        .map_err(|e| ControlError::Invalid(format!("saving VM {}: {}", vm.id, error_chain(&e))))?;
    frozen?;
    if let Err(e) = resumed {
        tracing::warn!(vm = %vm.id, error = %error_chain(&e), "the VM did not resume after its snapshot");
    }
    let mut manifest = manifest_of(backend.as_ref(), vm, &desc)?;
    manifest.template = taker != Taker::OfVm { template: false };
    Ok((manifest, desc.memory.is_some()))
}

/// Moves the saved state into the snapshot and copies the layer, both
/// made read-only for everyone (restored VMs' hypervisors read them).
fn freeze(desc: &VmDescription, saving: &Path, files: &SnapshotFiles) -> Result<(), ControlError> {
    let layer = desc
        .disks
        .iter()
        .find(|d| !d.read_only)
        .ok_or_else(|| ControlError::Invalid("the VM has no writable layer".into()))?;
    layer::freeze_layer(&layer.path, &files.layer)
        .map_err(|e| ControlError::Invalid(format!("freezing the layer: {}", error_chain(&e))))?;
    let io = |source| ControlError::Io {
        what: format!("the saved state {}", files.state.display()),
        source,
    };
    std::fs::rename(saving, &files.state).map_err(io)?;
    let inside = match std::fs::read_dir(&files.state) {
        Ok(entries) => entries.map(|e| e.map(|e| e.path())).collect(),
        Err(_) => Ok(Vec::new()),
    };
    for file in inside.map_err(io)? {
        read_only_for_all(&file, 0o444).map_err(io)?;
    }
    let mode = if files.state.is_dir() { 0o555 } else { 0o444 };
    read_only_for_all(&files.state, mode).map_err(io)
}

/// Owned by root with `mode`: hypervisors read it, nothing changes it.
fn read_only_for_all(path: &Path, mode: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(0), Some(0))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// A saved state left behind: one file (QEMU) or a directory of files
/// (Firecracker).
fn remove_state(path: &Path) {
    if std::fs::remove_file(path).is_err() {
        let _ = std::fs::remove_dir_all(path);
    }
}

async fn has_nic(ctl: &Controller, id: &VmId) -> Result<bool, ControlError> {
    Ok(ctl.store.net_slots().await?.iter().any(|s| &s.vm == id))
}

/// What a restore of `desc` on `backend` must match.
pub(super) fn manifest_of(
    backend: &dyn hearth_vmm::Hypervisor,
    vm: &Vm,
    desc: &VmDescription,
) -> Result<SnapshotManifest, ControlError> {
    let image = desc
        .disks
        .iter()
        .find(|d| d.read_only)
        .ok_or_else(|| ControlError::Invalid("the VM has no image disk".into()))?;
    let mut devices: Vec<String> = desc
        .disks
        .iter()
        .map(|d| format!("virtio-blk:{}", if d.read_only { "ro" } else { "rw" }))
        .collect();
    devices.extend(
        desc.channels
            .iter()
            .map(|c| format!("virtserialport:{}", c.name)),
    );
    Ok(SnapshotManifest {
        source_vm: vm.id.clone(),
        template: false,
        backend: vm.backend,
        hypervisor: backend.build(),
        machine: backend.machine(),
        vcpus: desc.vcpus,
        memory_mib: desc.memory_mib,
        kernel: file_facts(&desc.kernel)?,
        initramfs: desc.initramfs.as_deref().map(file_facts).transpose()?,
        image: vm.image.clone(),
        image_file: file_facts(&image.path)?,
        cmdline: desc.cmdline.clone(),
        devices,
        shared_memory: None,
    })
}

pub(super) fn file_facts(path: &Path) -> Result<FileFacts, ControlError> {
    let meta = std::fs::metadata(path).map_err(|source| ControlError::Io {
        what: path.display().to_string(),
        source,
    })?;
    Ok(FileFacts {
        path: path.to_owned(),
        size: meta.len(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
    })
}

pub(super) async fn list(ctl: &Controller, scope: &Scope) -> Result<Vec<Snapshot>, ControlError> {
    Ok(ctl
        .store
        .list_snapshots()
        .await?
        .into_iter()
        .filter(|r| scope.admin || r.tenant == scope.tenant)
        .filter_map(|r| shown(ctl, r))
        .collect())
}

pub(super) async fn show(
    ctl: &Controller,
    scope: &Scope,
    name: &SnapshotName,
) -> Result<Snapshot, ControlError> {
    let record = visible(ctl, scope, name).await?;
    shown(ctl, record).ok_or_else(|| ControlError::SnapshotNotFound(name.clone()))
}

/// The snapshot's row if `scope` may see it and its files are complete.
pub(super) async fn visible(
    ctl: &Controller,
    scope: &Scope,
    name: &SnapshotName,
) -> Result<SnapshotRecord, ControlError> {
    match ctl.store.snapshot(name).await? {
        Some(r) if (scope.admin || r.tenant == scope.tenant) && r.manifest.is_some() => Ok(r),
        _ => Err(ControlError::SnapshotNotFound(name.clone())),
    }
}

/// Removes a snapshot no VM uses any more: its files, then its row.
pub(super) async fn remove(
    ctl: &Controller,
    scope: &Scope,
    name: &SnapshotName,
) -> Result<Snapshot, ControlError> {
    let record = visible(ctl, scope, name).await?;
    let was = shown(ctl, record).ok_or_else(|| ControlError::SnapshotNotFound(name.clone()))?;
    if let Some(pool) = ctl
        .store
        .pools()
        .await?
        .into_iter()
        .find(|p| p.settings.template.as_ref() == Some(name))
    {
        return Err(ControlError::Invalid(format!(
            "snapshot {name} is the template of the pool of {:?}: set the pool without it \
             (`hearth pool set {} --size N`) or remove the pool first",
            pool.image, pool.image
        )));
    }
    let users = ctl.store.snapshot_users(name).await?;
    if !users.is_empty() {
        let ids: Vec<&str> = users.iter().map(VmId::as_str).collect();
        return Err(ControlError::SnapshotInUse(name.clone(), ids.join(", ")));
    }
    let dir = SnapshotFiles::of(ctl, name).dir;
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ControlError::Io {
                what: dir.display().to_string(),
                source,
            })
        }
    }
    ctl.store.delete_snapshot(name).await?;
    Ok(was)
}

fn shown(ctl: &Controller, r: SnapshotRecord) -> Option<Snapshot> {
    let dir = SnapshotFiles::of(ctl, &r.name).dir;
    Some(Snapshot {
        disk_bytes: disk_bytes(&dir),
        name: r.name,
        tenant: r.tenant,
        created_at: r.created_at,
        manifest: r.manifest?,
    })
}

/// Bytes the files of `dir` take on disk (their allocated blocks).
fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}
