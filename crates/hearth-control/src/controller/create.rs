//! Creating a VM: a record first, then steps (assets, files and layer,
//! network, hypervisor), each undone when a later one fails; the failed
//! step and its reason end up in the VM's failure.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hearth_net::NicPolicy;
use hearth_store::{StateChange, StoreError, VmRecord};
use hearth_types::api::{CreateVm, NetworkMode, Vm, DEFAULT_MEMORY_MIB, DEFAULT_VCPUS};
use hearth_types::error_chain;
use hearth_types::{
    BackendKind, DiskKey, FailureCode, TenantId, Timestamp, VmDescription, VmId, VmState,
};
use hearth_vmm::firecracker::Firecracker;
use hearth_vmm::isolation::Isolation;
use hearth_vmm::qemu::Qemu;
use hearth_vmm::{Hypervisor, Nic, OnSpawn, RunningVm, VmmError};

use super::{watch, ControlError, Controller, ControllerConfig, Scope};
use crate::lifecycle::{next, Transition};
use crate::prepare::{self, VmFiles};
use crate::restart::Ending;

/// The longest readiness deadline a request may ask for.
const MAX_READINESS_SECS: u64 = CreateVm::MAX_READINESS_TIMEOUT_SECS;

/// The hypervisors this host offers; VMs they start outlive the controller.
pub(super) fn backends(
    config: &ControllerConfig,
    isolation: &Arc<Isolation>,
) -> HashMap<BackendKind, Arc<dyn Hypervisor>> {
    let mut map: HashMap<BackendKind, Arc<dyn Hypervisor>> = HashMap::new();
    let qemu = Qemu::for_host(config.accel)
        .detached()
        .isolated(Arc::clone(isolation));
    map.insert(BackendKind::Qemu, Arc::new(qemu));
    let cache = config.data.cache();
    let fc = match &config.firecracker {
        Some(binary) => Firecracker::jailer_from_env()
            .map(|jailer| Firecracker::new(binary.clone(), cache).with_jailer(jailer)),
        None => Firecracker::from_env(cache),
    };
    match fc {
        Ok(fc) => {
            let fc = fc.detached().isolated(Arc::clone(isolation));
            map.insert(BackendKind::Firecracker, Arc::new(fc));
        }
        Err(e) if config.firecracker.is_some() => {
            tracing::warn!(error = %hearth_types::error_chain(&e), "the Firecracker backend is off");
        }
        Err(_) => {}
    }
    map
}

pub(super) async fn create(
    ctl: &Arc<Controller>,
    scope: &Scope,
    mut req: CreateVm,
) -> Result<Vm, ControlError> {
    if req.from_snapshot.is_some() {
        // A restored VM gets no NIC by default (it cannot have one yet).
        req.network = NetworkMode::resolve(req.network, None);
        return super::restore::create(ctl, scope, req).await;
    }
    req.network = NetworkMode::resolve(req.network, ctl.config.network.default);
    create_with_role(ctl, scope, req, None).await
}

/// [`create`] of a VM booted for a snapshot (a template), whose role is
/// stored before its agent link can greet it.
pub(super) async fn create_with_role(
    ctl: &Arc<Controller>,
    scope: &Scope,
    req: CreateVm,
    role: Option<(&hearth_types::SnapshotName, hearth_store::SnapshotRole)>,
) -> Result<Vm, ControlError> {
    let mut req = with_size(ctl, req);
    let timeout = check_request(ctl, &req)?;
    let nic = nic_request(ctl, &scope.tenant, &mut req).await?;
    // A template boots a VM of its own: on QEMU its RAM is the template's
    // memory file from the start (see `shared_memory`).
    if role.is_none() {
        if let Some(vm) = super::pool::hand_out(ctl, scope, &req, nic.as_ref(), timeout).await? {
            return Ok(vm);
        }
    }
    let now = Timestamp::now();
    let record = VmRecord::requested(
        VmId::generate(),
        scope.tenant.clone(),
        &req,
        now,
        now.plus(timeout),
    );
    ctl.store.insert_vm(&record).await?;
    if let Some((snapshot, role)) = role {
        ctl.store
            .set_snapshot_role(&record.vm.id, snapshot, role)
            .await?;
    }
    if req.config != Default::default() {
        ctl.store
            .set_guest_config(&record.vm.id, &req.config)
            .await?;
    }
    ctl.counters.created.fetch_add(1, Ordering::Relaxed);
    tracing::info!(vm = %record.vm.id, tenant = %scope.tenant, image = %req.image, "VM requested");
    let vm = record.vm.clone();
    tokio::spawn(boot(Arc::clone(ctl), record, nic, true));
    Ok(vm)
}

/// A VM for `image`'s pool, booted cold: the image's size, no
/// configuration, the pool tenant's, recorded in its pool before it boots,
/// with a readiness deadline past the pool's time to live (`keep`).
/// `nic`: with a closed NIC (`pool::nic`).
pub(super) async fn create_pooled(
    ctl: &Arc<Controller>,
    image: &str,
    assets: String,
    keep: Duration,
    nic: Option<NicPolicy>,
) -> Result<VmId, ControlError> {
    let req = with_size(
        ctl,
        CreateVm {
            image: image.to_owned(),
            network: nic.as_ref().map(|_| NetworkMode::Nat),
            network_policy: nic.as_ref().map(NicPolicy::to_request),
            ..CreateVm::default()
        },
    );
    let now = Timestamp::now();
    let deadline = now.plus(keep + ctl.config.readiness_timeout);
    let id = VmId::generate();
    let record = VmRecord::requested(id.clone(), TenantId::pool(), &req, now, deadline);
    ctl.store.insert_vm(&record).await?;
    super::pool::add_to_pool(ctl, &record, assets).await?;
    tokio::spawn(boot(Arc::clone(ctl), record, nic, true));
    Ok(id)
}

/// The request with its size filled in where it gave none: the image
/// recipe's (`vm` in the recipe, kept in the image's manifest), else the
/// API's defaults.
pub(super) fn with_size(ctl: &Controller, mut req: CreateVm) -> CreateVm {
    let image = hearth_guestkit::image::image_vm_size(&ctl.config.data, &req.image);
    let vcpus = req.vcpus.or(image.map(|s| s.vcpus));
    let memory = req.memory_mib.or(image.map(|s| s.memory_mib));
    req.vcpus = Some(vcpus.unwrap_or(DEFAULT_VCPUS));
    req.memory_mib = Some(memory.unwrap_or(DEFAULT_MEMORY_MIB));
    req
}

/// Everything about a request that can be refused before anything exists.
pub(super) fn check_request(ctl: &Controller, req: &CreateVm) -> Result<Duration, ControlError> {
    let invalid = |e: &dyn std::fmt::Display| ControlError::Invalid(e.to_string());
    let (vcpus, memory) = (
        req.vcpus.unwrap_or(DEFAULT_VCPUS),
        req.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB),
    );
    VmDescription::validate_resources(vcpus, memory).map_err(|e| invalid(&e))?;
    prepare::cmdline(&req.command).map_err(|e| invalid(&error_chain(&e)))?;
    req.config
        .check()
        .map_err(|e| ControlError::Invalid(format!("config: {e}")))?;
    req.check_persistence().map_err(ControlError::Invalid)?;
    check_network(ctl, req)?;
    if !ctl.backends.contains_key(&req.backend) {
        let why = "set HEARTH_FIRECRACKER to a firecracker binary before `hearth serve`";
        return Err(ControlError::Backend(req.backend, why.into()));
    }
    hearth_guestkit::image::find_image(&ctl.config.data, &req.image).map_err(|e| invalid(&e))?;
    let secs = req
        .readiness_timeout_secs
        .unwrap_or(ctl.config.readiness_timeout.as_secs());
    if secs == 0 || secs > MAX_READINESS_SECS {
        return Err(ControlError::Invalid(format!(
            "readiness_timeout_secs is {secs}; give between 1 and {MAX_READINESS_SECS}"
        )));
    }
    Ok(Duration::from_secs(secs))
}

/// A NIC only where one can be given; the guest's network only as the
/// server made it.
fn check_network(ctl: &Controller, req: &CreateVm) -> Result<(), ControlError> {
    if req.config.network.is_some() {
        return Err(ControlError::Invalid(
            "config.network is set by the server: ask for a NIC with `network` (\"nat\") instead"
                .into(),
        ));
    }
    if req.network.is_none() {
        if req.network_policy.is_some() {
            return Err(ControlError::Invalid(
                "network_policy needs a NIC: add `network` (\"nat\"), or drop `\"network\": \"none\"`"
                    .into(),
            ));
        }
        return Ok(());
    }
    if !(ctl.config.agent_readiness && super::agent::image_has_agent(ctl, &req.image)) {
        return Err(ControlError::Invalid(format!(
            "network: the guest agent configures the NIC, and image {:?} has none (or this server \
             runs without agent readiness); build the image with the agent, or ask for \"network\": \"none\"",
            req.image
        )));
    }
    ctl.networks.check_available()
}

/// The NAT NIC a request asks for, with its checked policy merged into
/// its tenant's (which the request then carries, for the VM's record).
async fn nic_request(
    ctl: &Controller,
    tenant: &TenantId,
    req: &mut CreateVm,
) -> Result<Option<NicPolicy>, ControlError> {
    let Some(NetworkMode::Nat) = req.network else {
        return Ok(None);
    };
    let policy = req.network_policy.clone().unwrap_or_default();
    let own = NicPolicy::from_request(&policy).map_err(ControlError::Invalid)?;
    let nic = super::tenant_network::merged(ctl, tenant, own).await?;
    super::guest_services::egress_policy(&nic).map_err(ControlError::Invalid)?;
    req.network_policy = Some(nic.to_request());
    Ok(Some(nic))
}

/// A create step that failed.
pub(super) struct StepFailure {
    step: &'static str,
    reason: String,
}

/// Runs the create steps of `record` in the background: from `requested`
/// for a new VM (`fresh`), from `preparing` for a kept VM that boots again.
/// `network`: a NAT NIC with this policy.
pub(super) async fn boot(
    ctl: Arc<Controller>,
    record: VmRecord,
    network: Option<NicPolicy>,
    fresh: bool,
) {
    let id = record.vm.id.clone();
    let networked = network.is_some();
    let result = steps(&ctl, &record, network, fresh).await;
    if result.is_err() && networked {
        super::network::undo(&ctl, &id).await;
    }
    started(ctl, &record, result).await
}

/// The end of a create: the running VM gets its agent link and watcher,
/// a failed one its failure.
pub(super) async fn started(
    ctl: Arc<Controller>,
    record: &VmRecord,
    result: Result<(RunningVm, bool), StepFailure>,
) {
    let id = record.vm.id.clone();
    match result {
        Ok((running, agent_ready)) => {
            super::agent::start_link(&ctl, &id, record.vm.backend);
            watch::start(ctl, id, running, agent_ready)
        }
        Err(_) if stopping(&ctl, &id).await => {
            let message = "stopped before it finished starting";
            let ending = Ending::StopRequested;
            let (from, t) = (VmState::Stopping, Transition::Exited);
            super::cleanup::finish(&ctl, &id, from, t, message, ending).await;
        }
        Err(StepFailure { step, reason }) => {
            let message = format!("create step `{step}` failed: {reason}");
            super::cleanup::fail(&ctl, &id, FailureCode::StartFailed, message).await;
        }
    }
}

/// Whether someone asked the VM to stop while it was being created (its
/// steps then fail on the state change, which is no failure of the VM).
pub(super) async fn stopping(ctl: &Controller, id: &VmId) -> bool {
    matches!(ctl.store.vm(id).await, Ok(Some(r)) if r.vm.state == VmState::Stopping)
}

/// The steps; the VM runs, and whether its agent says when it is ready.
async fn steps(
    ctl: &Arc<Controller>,
    record: &VmRecord,
    network: Option<NicPolicy>,
    fresh: bool,
) -> Result<(RunningVm, bool), StepFailure> {
    let id = &record.vm.id;
    let data = ctl.config.data.clone();
    if fresh {
        let message = "preparing files and writable layer";
        move_to(ctl, id, VmState::Requested, Transition::Prepare, message).await?;
    }
    let image = record.vm.image.clone();
    let cache = Arc::clone(&ctl.assets);
    let assets = tokio::task::spawn_blocking(move || cache.get(&data, &image))
        .await
        .map_err(|e| step("assets", &e))?
        .map_err(|e| step("assets", &error_chain(&e)))?;
    let files = writable_files(ctl, record).await?;
    let mut cmdline =
        prepare::cmdline(&record.vm.command).map_err(|e| step("command", &error_chain(&e)))?;
    let agent_ready = super::agent::ready_from_agent(ctl, &record.vm);
    if agent_ready {
        cmdline.push(' ');
        cmdline.push_str(super::agent::CONFIG_FROM_HOST);
    }
    let mut description =
        files.describe(id, &assets, record.vm.vcpus, record.vm.memory_mib, cmdline);
    description.memory = super::shared_memory::of_new_vm(ctl, record, &files.dir)
        .await
        .map_err(|e| step("layer", &error_chain(&e)))?;
    super::snapshot::keep_description(&description).map_err(|e| step("layer", &e))?;
    let nic = network_step(ctl, id, network.as_ref(), &files).await?;
    let running = start_recorded(ctl, record, &description, Start::Boot(nic)).await;
    let running = booted(ctl, record, &files, running).await?;
    Ok((running, agent_ready))
}

/// The hypervisor started (or not): the VM moves on to `booting`.
pub(super) async fn booted(
    ctl: &Controller,
    record: &VmRecord,
    files: &VmFiles,
    started: (Result<RunningVm, VmmError>, Result<(), StoreError>),
) -> Result<RunningVm, StepFailure> {
    let id = &record.vm.id;
    let (mut running, recorded) = match started {
        (Ok(running), recorded) => (running, recorded),
        (Err(e), _) => {
            files.release_runtime();
            return Err(step("hypervisor", &error_chain(&e)));
        }
    };
    let mut booted = format!("booting: {} pid {}", record.vm.backend, running.pid());
    if let Some(report) = running.isolation() {
        booted.push_str(&format!("; {}", report.summary()));
    }
    // The event carries the moment the hypervisor process started; QEMU's
    // own start-up (until it answers QMP) comes after and is not ours.
    let moved = move_to_at(
        ctl,
        id,
        VmState::Preparing,
        Transition::Boot,
        &booted,
        running.started_at(),
    )
    .await;
    if let Err(failure) = recorded.map_err(|e| step("record process", &e)).and(moved) {
        running.kill().await;
        files.release_runtime();
        return Err(failure);
    }
    Ok(running)
}

/// The VM's directory and writable layer: a new layer per boot, or a
/// persistent VM's kept disk (made at its first boot, reused after).
async fn writable_files(ctl: &Controller, record: &VmRecord) -> Result<VmFiles, StepFailure> {
    let mut files = super::vm_files(ctl, &record.vm);
    if files.encrypted() {
        files.layer_key = Some(disk_key(ctl, &record.vm, !files.layer.exists()).await?);
    }
    let data = ctl.config.data.clone();
    let Some(mib) = record.vm.disk_mib.filter(|_| record.vm.persistent) else {
        files
            .create(&data)
            .map_err(|e| step("layer", &error_chain(&e)))?;
        return Ok(files);
    };
    let kept = files.clone();
    let made = tokio::task::spawn_blocking(move || kept.ensure_kept_disk(&data, mib))
        .await
        .map_err(|e| step("disk", &e))?
        .map_err(|e| step("disk", &error_chain(&e)))?;
    if made {
        let note = format!("made its persistent disk ({mib} MiB)");
        let _ = ctl
            .store
            .add_event(&record.vm.id, Timestamp::now(), &note)
            .await;
    }
    Ok(files)
}

/// The key of the VM's encrypted disk, from the vault at every boot (made
/// and sealed there with the disk at its first).
async fn disk_key(ctl: &Controller, vm: &Vm, make: bool) -> Result<DiskKey, StepFailure> {
    let Some(keys) = &ctl.config.disk_keys else {
        let why = "the VM's disk is encrypted and this controller has no vault to open its key: run it under `hearth serve`";
        return Err(step("disk key", &why));
    };
    keys.key(vm, make)
        .await
        .map_err(|why| step("disk key", &why))
}

/// The VM's NIC when it asked for one (see `network::attach`).
async fn network_step(
    ctl: &Controller,
    id: &VmId,
    network: Option<&NicPolicy>,
    files: &VmFiles,
) -> Result<Option<Nic>, StepFailure> {
    let Some(policy) = network else {
        return Ok(None);
    };
    match super::network::attach(ctl, id, policy).await {
        Ok(nic) => Ok(Some(nic)),
        Err(why) => {
            files.release_runtime();
            Err(step("network", &why))
        }
    }
}

/// Starts the hypervisor and records its process (pid and start time) the
/// moment it is spawned, while the hypervisor still sets the guest up: a
/// controller that dies from then on leaves a row with the process, which
/// the next one adopts (`reconcile::adopt_all`) instead of killing it as
/// an orphan.
/// How the hypervisor starts: booting the guest, or loading a snapshot's
/// saved state.
pub(super) enum Start<'a> {
    Boot(Option<Nic>),
    Restore(&'a std::path::Path),
}

pub(super) async fn start_recorded(
    ctl: &Controller,
    record: &VmRecord,
    description: &VmDescription,
    how: Start<'_>,
) -> (Result<RunningVm, VmmError>, Result<(), StoreError>) {
    let backend = Arc::clone(&ctl.backends[&record.vm.backend]);
    let (spawned_tx, spawned_rx) = tokio::sync::oneshot::channel();
    let on_spawn: OnSpawn = Box::new(move |process| {
        let _ = spawned_tx.send(process);
    });
    let record_it = async {
        match spawned_rx.await {
            Ok(process) => ctl.store.set_process(&record.vm.id, Some(process)).await,
            // Never spawned: nothing to record.
            Err(_) => Ok(()),
        }
    };
    let start = async {
        match how {
            Start::Boot(Some(nic)) => backend.start_with_nic(description, on_spawn, nic).await,
            Start::Boot(None) => backend.start_reporting(description, on_spawn).await,
            Start::Restore(state) => {
                backend
                    .restore_reporting(description, state, on_spawn)
                    .await
            }
        }
    };
    tokio::join!(start, record_it)
}

pub(super) fn step(step: &'static str, reason: &dyn std::fmt::Display) -> StepFailure {
    StepFailure {
        step,
        reason: reason.to_string(),
    }
}

/// One lifecycle transition through the store's compare-and-set.
pub(super) async fn move_to(
    ctl: &Controller,
    id: &VmId,
    from: VmState,
    t: Transition,
    message: &str,
) -> Result<(), StepFailure> {
    move_to_at(ctl, id, from, t, message, Timestamp::now()).await
}

pub(super) async fn move_to_at(
    ctl: &Controller,
    id: &VmId,
    from: VmState,
    t: Transition,
    message: &str,
    at: Timestamp,
) -> Result<(), StepFailure> {
    let to = next(from, t).map_err(|e| step("state", &e))?;
    let change = StateChange::to(to, at, message);
    ctl.store
        .transition(id, from, &change)
        .await
        .map_err(|e| step("state", &e))?;
    Ok(())
}
