//! Creating a VM from a snapshot: the request is held against the
//! snapshot's manifest and this host (a mismatch is refused before
//! anything exists, naming what differs), then a new hypervisor loads the
//! saved state over a writable layer of the VM's own, a qcow2 overlay on
//! the frozen one; a shared template's RAM is its memory file, mapped
//! copy-on-write (`shared_memory`). Its agent link greets the agent as restored (entropy,
//! identity) before it sends the VM's own configuration.

use std::sync::Arc;

use hearth_guestkit::layer;
use hearth_store::{SnapshotRole, VmRecord};
use hearth_types::api::{CreateVm, Vm};
use hearth_types::{error_chain, SnapshotManifest, SnapshotName, Timestamp, VmDescription, VmId};
use hearth_types::{BackendKind, TenantId, VmState};
use hearth_vmm::RunningVm;

use super::create::{self, step, Start, StepFailure};
use super::shared_memory;
use super::snapshot::{self, SnapshotFiles};
use super::{ControlError, Controller, Scope};
use crate::lifecycle::Transition;
use crate::prepare::{BootAssets, VmFiles};

pub(super) async fn create(
    ctl: &Arc<Controller>,
    scope: &Scope,
    req: CreateVm,
) -> Result<Vm, ControlError> {
    let Some(name) = req.from_snapshot.clone() else {
        return Err(ControlError::Invalid("no snapshot named".into()));
    };
    let snap = snapshot::visible(ctl, scope, &name).await?;
    let manifest = snap
        .manifest
        .ok_or_else(|| ControlError::SnapshotNotFound(name.clone()))?;
    let req = matched(ctl, &name, &manifest, req).await?;
    let timeout = create::check_request(ctl, &req)?;
    let now = Timestamp::now();
    let record = VmRecord::requested(
        VmId::generate(),
        scope.tenant.clone(),
        &req,
        now,
        now.plus(timeout),
    );
    ctl.store.insert_vm(&record).await?;
    ctl.store
        .set_snapshot_role(&record.vm.id, &name, SnapshotRole::Restored)
        .await?;
    if req.config != Default::default() {
        ctl.store
            .set_guest_config(&record.vm.id, &req.config)
            .await?;
    }
    tracing::info!(vm = %record.vm.id, tenant = %scope.tenant, snapshot = %name, "VM requested from a snapshot");
    let vm = record.vm.clone();
    tokio::spawn(boot(Arc::clone(ctl), record, name, manifest));
    Ok(vm)
}

/// A VM for a pool filled from template `name`: restored like any VM of
/// the snapshot (a mismatch with this host refused, naming it), but the
/// pool tenant's, with no configuration (its link holds it back until the
/// hand-out) and its pool row, before it starts; readiness deadline past
/// the pool's time to live (`keep`).
pub(super) async fn create_pooled(
    ctl: &Arc<Controller>,
    name: &SnapshotName,
    assets: String,
    keep: std::time::Duration,
) -> Result<VmId, ControlError> {
    let manifest = ctl
        .store
        .snapshot(name)
        .await?
        .and_then(|s| s.manifest)
        .ok_or_else(|| ControlError::SnapshotNotFound(name.clone()))?;
    let req = CreateVm {
        image: manifest.image.clone(),
        from_snapshot: Some(name.clone()),
        ..CreateVm::default()
    };
    let req = matched(ctl, name, &manifest, req).await?;
    let now = Timestamp::now();
    let deadline = now.plus(keep + ctl.config.readiness_timeout);
    let id = VmId::generate();
    let record = VmRecord::requested(id.clone(), TenantId::pool(), &req, now, deadline);
    ctl.store.insert_vm(&record).await?;
    ctl.store
        .set_snapshot_role(&id, name, SnapshotRole::Restored)
        .await?;
    super::pool::add_to_pool(ctl, &record, assets).await?;
    tokio::spawn(boot(Arc::clone(ctl), record, name.clone(), manifest));
    Ok(id)
}

/// The request as the snapshot makes it (its image and size), or the
/// refusal naming every difference between the snapshot and what this
/// restore would use.
async fn matched(
    ctl: &Controller,
    name: &SnapshotName,
    manifest: &SnapshotManifest,
    mut req: CreateVm,
) -> Result<CreateVm, ControlError> {
    if req.network.is_some() {
        return Err(ControlError::Invalid(
            "network: a VM restored from a snapshot cannot have a NIC yet; create it without `network`"
                .into(),
        ));
    }
    let backend = ctl.backend(req.backend)?;
    let image = if req.image == CreateVm::default().image {
        manifest.image.clone()
    } else {
        req.image.clone()
    };
    let assets = current_assets(ctl, &image).await?;
    let now = SnapshotManifest {
        backend: req.backend,
        hypervisor: backend.build(),
        machine: backend.machine(),
        vcpus: req.vcpus.unwrap_or(manifest.vcpus),
        memory_mib: req.memory_mib.unwrap_or(manifest.memory_mib),
        kernel: snapshot::file_facts(&assets.kernel)?,
        initramfs: assets
            .initramfs
            .as_deref()
            .map(snapshot::file_facts)
            .transpose()?,
        image,
        image_file: snapshot::file_facts(&assets.image)?,
        shared_memory: manifest.shared_memory.as_ref().map(shared_memory::current),
        ..manifest.clone()
    };
    let differences = manifest.differences(&now);
    if !differences.is_empty() {
        return Err(ControlError::Invalid(format!(
            "snapshot {name} cannot be restored here: {}; restore it as it was taken, or take a new snapshot",
            differences.join("; ")
        )));
    }
    req.image = manifest.image.clone();
    req.vcpus = Some(manifest.vcpus);
    req.memory_mib = Some(manifest.memory_mib);
    Ok(req)
}

/// The kernel, initramfs and image a VM of `image` boots from here today.
async fn current_assets(ctl: &Controller, image: &str) -> Result<BootAssets, ControlError> {
    let (data, cache, image) = (
        ctl.config.data.clone(),
        Arc::clone(&ctl.assets),
        image.to_owned(),
    );
    tokio::task::spawn_blocking(move || cache.get(&data, &image))
        .await
        .map_err(|e| ControlError::Invalid(e.to_string()))?
        .map_err(|e| ControlError::Invalid(format!("the snapshot's image: {}", error_chain(&e))))
}

async fn boot(
    ctl: Arc<Controller>,
    record: VmRecord,
    name: SnapshotName,
    manifest: SnapshotManifest,
) {
    let result = steps(&ctl, &record, &name, &manifest).await;
    create::started(ctl, &record, result).await
}

async fn steps(
    ctl: &Arc<Controller>,
    record: &VmRecord,
    name: &SnapshotName,
    manifest: &SnapshotManifest,
) -> Result<(RunningVm, bool), StepFailure> {
    let id = &record.vm.id;
    let message = format!("preparing a writable layer over snapshot {name}");
    create::move_to(ctl, id, VmState::Requested, Transition::Prepare, &message).await?;
    let snap = SnapshotFiles::of(ctl, name);
    let files = VmFiles::for_vm(&ctl.config.data, id);
    let description = describe(&files, id, manifest);
    let prepared = std::fs::create_dir_all(&files.dir)
        .map_err(|e| step("layer", &e))
        .and_then(|()| {
            own_layer(manifest.backend, &snap.layer, &description.disks[1].path)
                .map_err(|e| step("layer", &error_chain(&e)))
        })
        .and_then(|()| snapshot::keep_description(&description).map_err(|e| step("layer", &e)));
    if let Err(failure) = prepared {
        files.remove_all();
        return Err(failure);
    }
    let started =
        create::start_recorded(ctl, record, &description, Start::Restore(&snap.state)).await;
    let running = create::booted(ctl, record, &files, started).await?;
    let _ = ctl
        .store
        .add_event(
            id,
            Timestamp::now(),
            &format!("restored from snapshot {name}"),
        )
        .await;
    Ok((running, super::agent::ready_from_agent(ctl, &record.vm)))
}

/// The snapshot's VM, in this VM's directory, over its own overlay.
fn describe(files: &VmFiles, id: &VmId, manifest: &SnapshotManifest) -> VmDescription {
    let assets = BootAssets {
        kernel: manifest.kernel.path.clone(),
        kernel_release: None,
        initramfs: manifest.initramfs.as_ref().map(|f| f.path.clone()),
        image: manifest.image_file.path.clone(),
    };
    let mut vm = files.describe(
        id,
        &assets,
        manifest.vcpus,
        manifest.memory_mib,
        manifest.cmdline.clone(),
    );
    vm.disks[1].path = files.dir.join(match manifest.backend {
        BackendKind::Firecracker => RAW_COPY,
        BackendKind::Qemu => OVERLAY,
    });
    vm.memory = shared_memory::for_restore(manifest);
    vm
}

/// The VM's writable layer over the frozen one: a qcow2 overlay for QEMU
/// (nothing copied); Firecracker takes raw disks only, so a sparse copy.
fn own_layer(
    backend: BackendKind,
    frozen: &std::path::Path,
    dest: &std::path::Path,
) -> Result<(), layer::LayerError> {
    match backend {
        BackendKind::Firecracker => layer::copy_layer(frozen, dest),
        BackendKind::Qemu => layer::create_overlay(frozen, dest),
    }
}

/// A restored VM's writable layer, in its directory.
pub const OVERLAY: &str = "layer.qcow2";
/// A restored Firecracker VM's writable layer: a copy of the frozen one.
pub const RAW_COPY: &str = "layer.ext4";
