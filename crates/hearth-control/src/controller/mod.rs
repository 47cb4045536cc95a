//! The controller behind `hearth serve`: creates VMs as a list of steps
//! with undo, watches each running VM (readiness, failures, the hypervisor's
//! exit), and runs the reconcilers that converge the store and the host:
//! readiness deadlines, cleanup jobs, adoption after a restart, orphans and
//! log retention.
//!
//! Every state change goes through [`crate::lifecycle::next`] and the
//! store's compare-and-set, so a watcher and a reconciler racing on one VM
//! cannot both win.

mod agent;
mod assets;
mod cleanup;
mod confinement;
mod console;
mod create;
mod diagnose;
mod exec;
mod exec_attach;
mod files;
mod guest_services;
mod health;
mod idle;
pub(crate) mod network;
mod persist;
pub mod pool;
mod ports;
mod reconcile;
mod restore;
mod shared_memory;
mod snapshot;
mod tenant_network;
mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hearth_guestkit::DataDir;
use hearth_store::{Store, StoreError, VmFilter, VmRecord};
use hearth_types::api::{ConsoleTail, CreateVm, Diagnosis, ExecRequest, ExecResult, Vm, VmEvent};
use hearth_types::histogram::Histogram;
use hearth_types::{Accel, BackendKind, TenantId, VmId};
use hearth_vmm::isolation::Isolation;
use hearth_vmm::Hypervisor;

pub use self::console::{ConsoleFollow, LogName, MAX_LINES};
pub use self::exec::{ExecError, ExecStream};
pub use self::exec_attach::{AttachedExec, ExecTarget};
pub use self::files::FileError;
pub use self::health::MAX_TAIL;
pub use self::idle::InUse;
pub use self::network::NetworkConfig;
pub use self::ports::PortForwardError;
use crate::lifecycle::InvalidTransition;

/// Tunables of `hearth serve`.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub data: DataDir,
    /// A VM not ready by then fails with `boot_timeout`.
    pub readiness_timeout: Duration,
    /// How long a stopped or failed VM is kept for inspection.
    pub grace: Duration,
    /// Files and processes no record accounts for are removed after this.
    pub orphan_grace: Duration,
    /// Archived logs older than this are pruned.
    pub retention_age: Duration,
    /// Archived logs beyond this total are pruned, oldest first.
    pub retention_bytes: u64,
    /// How often the reconcilers run.
    pub tick: Duration,
    pub accel: Option<Accel>,
    pub firecracker: Option<std::path::PathBuf>,
    /// The largest file `hearth vm cp` moves in either direction.
    pub max_file_bytes: u64,
    /// For images that carry the agent: the guest waits for the host's
    /// configuration (`hearth.config=host` on the kernel command line) and
    /// the VM is ready when the agent says so, not at the console marker.
    pub agent_readiness: bool,
    /// Where the NICs of VMs that ask for one are made.
    pub network: NetworkConfig,
    /// The waits between restarts of persistent VMs by their policy.
    pub restart_backoff: crate::restart::Backoff,
    /// Warm pools: the most pooled VMs booting at once (docs/pools.md).
    pub pool_boots: usize,
    /// The keys of persistent VMs' encrypted disks (the vault's, in
    /// `hearth serve`). `None`: persistent VMs keep raw disks.
    pub disk_keys: Option<Arc<dyn crate::disk_keys::DiskKeys>>,
}

impl ControllerConfig {
    pub fn new(data: DataDir) -> Self {
        ControllerConfig {
            data,
            readiness_timeout: Duration::from_secs(120),
            grace: Duration::from_secs(15 * 60),
            orphan_grace: Duration::from_secs(10 * 60),
            retention_age: Duration::from_secs(7 * 24 * 3600),
            retention_bytes: 1 << 30,
            tick: Duration::from_millis(500),
            accel: None,
            firecracker: None,
            max_file_bytes: 64 << 20,
            agent_readiness: AGENT_READINESS,
            network: NetworkConfig::default(),
            restart_backoff: Default::default(),
            pool_boots: 1,
            disk_keys: None,
        }
    }
}

/// Whether [`ControllerConfig::agent_readiness`] is on by default.
pub const AGENT_READINESS: bool = true;

/// Who is asking: a tenant sees only its own VMs; an admin sees all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub tenant: TenantId,
    pub admin: bool,
}

impl Scope {
    fn may_see(&self, vm: &Vm) -> bool {
        self.admin || vm.tenant == self.tenant
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Also what another tenant's VM answers, so ids cannot be probed.
    #[error("no VM {0}")]
    NotFound(VmId),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error(transparent)]
    State(#[from] InvalidTransition),
    #[error("VM {0} is held: release it first (`hearth vm release {0}`)")]
    Held(VmId),
    #[error("the {0} backend is not available on this host: {1}")]
    Backend(BackendKind, String),
    #[error("no snapshot {0}")]
    SnapshotNotFound(hearth_types::SnapshotName),
    #[error("snapshot {0} is in use by {1}: destroy those VMs first")]
    SnapshotInUse(hearth_types::SnapshotName, String),
    #[error("the store failed")]
    Store(#[from] StoreError),
    #[error("the VM's network could not be removed")]
    Network(#[source] hearth_net::NetError),
    #[error("no pool for image {0:?}: make one with `hearth pool set {0} --size N`")]
    NoPool(String),
    #[error("could not read {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Upper bounds of the boot time buckets, seconds (TCG guests take 5-10 s).
pub const BOOT_BUCKETS: &[f64] = &[0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0];

/// Counters the server exports as metrics. Constant in size however long
/// the controller runs.
#[derive(Debug)]
pub struct Counters {
    /// Seconds from create to ready of the VMs that got ready.
    pub boot_seconds: Mutex<Histogram>,
    pub created: std::sync::atomic::AtomicU64,
    pub cleaned: std::sync::atomic::AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            boot_seconds: Mutex::new(Histogram::new(BOOT_BUCKETS)),
            created: Default::default(),
            cleaned: Default::default(),
        }
    }
}

/// The controller. Cheap to share: hold it in an `Arc`.
#[derive(Debug)]
pub struct Controller {
    store: Arc<dyn Store>,
    config: ControllerConfig,
    backends: HashMap<BackendKind, Arc<dyn Hypervisor>>,
    /// How hypervisors are confined here (their users and cgroups).
    isolation: Arc<Isolation>,
    /// Per running VM: the console stream of its watcher.
    live: Mutex<HashMap<VmId, watch::LiveVm>>,
    counters: Counters,
    /// Kernel, initramfs and image per image name, checked per create.
    assets: Arc<assets::AssetCache>,
    /// Reconciler ticks so far (slow sweeps run every few).
    ticks: std::sync::atomic::AtomicU64,
    /// Per running QEMU VM: the persistent link to its guest agent.
    links: crate::agent_link::Links,
    notice_tx: tokio::sync::mpsc::UnboundedSender<crate::agent_link::Notice>,
    /// Taken by [`Controller::start`].
    notices: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<crate::agent_link::Notice>>>,
    /// The NICs of VMs that ask for one.
    networks: network::Networks,
    /// When each running VM was last used (its idle policy).
    activity: idle::Activity,
    /// Warm pools' counters, refill clocks and VM source.
    pools: pool::Pools,
}

impl Controller {
    /// A controller over `store`, with the backends this host offers.
    pub fn new(store: Arc<dyn Store>, config: ControllerConfig) -> Arc<Self> {
        let isolation = crate::isolation::for_host(&config.data);
        let backends = create::backends(&config, &isolation);
        let (notice_tx, notices) = agent::notice_channel();
        let networks = network::Networks::new(&config.network, Arc::clone(&store));
        Arc::new(Controller {
            store,
            config,
            backends,
            isolation,
            live: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            assets: Default::default(),
            ticks: Default::default(),
            links: Default::default(),
            notice_tx,
            notices,
            networks,
            activity: Default::default(),
            pools: Default::default(),
        })
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// What isolation this host gives the VMs' hypervisors.
    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Adopts or fails the VMs an earlier controller left, then runs the
    /// reconcilers every tick until the returned task is aborted.
    pub async fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        agent::handle_notices(self);
        reconcile::adopt_all(self).await;
        reconcile::once(self).await;
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.config.tick);
            loop {
                tick.tick().await;
                reconcile::once(&me).await;
            }
        })
    }

    /// Records a new VM and starts creating it in the background.
    pub async fn create_vm(
        self: &Arc<Self>,
        scope: &Scope,
        req: CreateVm,
    ) -> Result<Vm, ControlError> {
        create::create(self, scope, req).await
    }

    pub async fn vm(&self, scope: &Scope, id: &VmId) -> Result<Vm, ControlError> {
        Ok(self.record(scope, id).await?.vm)
    }

    pub async fn list_vms(&self, scope: &Scope) -> Result<Vec<Vm>, ControlError> {
        let filter = VmFilter {
            tenant: (!scope.admin).then(|| scope.tenant.clone()),
            states: Vec::new(),
        };
        Ok(self
            .store
            .list_vms(&filter)
            .await?
            .into_iter()
            .map(|r| r.vm)
            .collect())
    }

    pub async fn events(&self, scope: &Scope, id: &VmId) -> Result<Vec<VmEvent>, ControlError> {
        self.record(scope, id).await?;
        Ok(self.store.events(id).await?)
    }

    /// The last `lines` lines of a VM's log, live or archived.
    pub async fn log_tail(
        &self,
        scope: &Scope,
        id: &VmId,
        log: LogName,
        lines: usize,
    ) -> Result<ConsoleTail, ControlError> {
        let record = self.record(scope, id).await?;
        console::tail(self, &record, log, lines).await
    }

    /// The log so far plus, while the VM runs, a stream of what follows.
    pub async fn log_follow(
        &self,
        scope: &Scope,
        id: &VmId,
        log: LogName,
        lines: usize,
    ) -> Result<ConsoleFollow, ControlError> {
        let record = self.record(scope, id).await?;
        console::follow(self, &record, log, lines).await
    }

    /// What the VM's logs and failure say went wrong, live or archived.
    pub async fn diagnosis(&self, scope: &Scope, id: &VmId) -> Result<Diagnosis, ControlError> {
        let record = self.record(scope, id).await?;
        diagnose::diagnosis(self, &record).await
    }

    /// Runs a command in a ready VM through its guest agent.
    pub async fn exec(
        &self,
        scope: &Scope,
        id: &VmId,
        req: ExecRequest,
    ) -> Result<ExecResult, ExecError> {
        exec::start(self, scope, id, req, false)
            .await?
            .collect()
            .await
    }

    /// Starts a command in a ready VM; its output comes as it is printed.
    pub async fn exec_stream(
        &self,
        scope: &Scope,
        id: &VmId,
        req: ExecRequest,
        tty: bool,
    ) -> Result<ExecStream, ExecError> {
        exec::start(self, scope, id, req, tty).await
    }

    /// Checks VM `id` for an interactive exec (see [`ExecTarget::start`]).
    pub async fn exec_target(&self, scope: &Scope, id: &VmId) -> Result<ExecTarget, ExecError> {
        exec_attach::target(self, scope, id).await
    }

    /// A TCP stream to `port` on VM `id`'s loopback, through its agent.
    pub async fn open_port(
        &self,
        scope: &Scope,
        id: &VmId,
        port: u16,
    ) -> Result<crate::agent_link::PortStream, PortForwardError> {
        ports::open(self, scope, id, port).await
    }

    /// What the VM's agent last said about itself and its services.
    pub async fn health(
        &self,
        scope: &Scope,
        id: &VmId,
    ) -> Result<hearth_types::api::VmHealth, ControlError> {
        let record = self.record(scope, id).await?;
        health::health(self, &record).await
    }

    /// The last `tail` lines of a service's output.
    pub async fn service_logs(
        &self,
        scope: &Scope,
        id: &VmId,
        service: &str,
        tail: usize,
    ) -> Result<hearth_types::api::ServiceLogs, ControlError> {
        let record = self.record(scope, id).await?;
        health::service_logs(self, &record, service, tail).await
    }

    /// The latest boot report the agent sent, if any.
    pub async fn boot_report(
        &self,
        scope: &Scope,
        id: &VmId,
    ) -> Result<Option<hearth_types::api::VmBootReport>, ControlError> {
        let record = self.record(scope, id).await?;
        health::boot_report(self, &record).await
    }

    /// Writes `data` to `path` in a ready VM (at most `max_file_bytes`).
    pub async fn write_file(
        &self,
        scope: &Scope,
        id: &VmId,
        path: String,
        data: Vec<u8>,
    ) -> Result<hearth_types::api::FileWritten, FileError> {
        files::write(self, scope, id, path, data).await
    }

    /// The file at `path` in a ready VM and its SHA-256.
    pub async fn read_file(
        &self,
        scope: &Scope,
        id: &VmId,
        path: String,
    ) -> Result<(Vec<u8>, String), FileError> {
        files::read(self, scope, id, path).await
    }

    /// The persistent link to a running VM's agent (for benchmarks and
    /// tools that speak to the agent without the API's checks).
    pub fn agent_link(&self, id: &VmId) -> Option<crate::agent_link::LinkHandle> {
        self.links.get(id)
    }

    /// Holds a VM (never cleaned up) or releases it; a released VM that is
    /// past its grace is cleaned up at once.
    pub async fn hold(&self, scope: &Scope, id: &VmId, held: bool) -> Result<Vm, ControlError> {
        self.record(scope, id).await?;
        let now = hearth_types::Timestamp::now();
        let vm = self.store.set_held(id, held, now).await?.vm;
        if let (false, Some(after)) = (held, vm.cleanup_after) {
            cleanup::schedule_destroy(self, id, after.max(now)).await;
        }
        Ok(vm)
    }

    /// Stops the VM if it runs and destroys it now (logs archived first).
    pub async fn destroy(self: &Arc<Self>, scope: &Scope, id: &VmId) -> Result<Vm, ControlError> {
        let record = self.record(scope, id).await?;
        cleanup::destroy_now(self, record).await
    }

    /// Stops a running VM (its guest is asked to shut down, then its
    /// hypervisor ends). A persistent VM keeps its disk and stays stopped
    /// until started; another is cleaned up after its grace. A stopped or
    /// failed VM is left so, its planned restart cancelled.
    pub async fn stop_vm(self: &Arc<Self>, scope: &Scope, id: &VmId) -> Result<Vm, ControlError> {
        persist::stop(self, scope, id).await
    }

    /// Boots a stopped or failed persistent VM again from its disk; a
    /// running one is answered as it is. `Invalid` for a VM that is not
    /// persistent.
    pub async fn start_vm(self: &Arc<Self>, scope: &Scope, id: &VmId) -> Result<Vm, ControlError> {
        persist::start(self, scope, id).await
    }

    // Snapshots (docs/snapshots.md).

    /// Snapshots a running VM, or boots an image as a template and
    /// snapshots it.
    pub async fn create_snapshot(
        self: &Arc<Self>,
        scope: &Scope,
        req: hearth_types::snapshot::CreateSnapshot,
    ) -> Result<hearth_types::snapshot::Snapshot, ControlError> {
        snapshot::create(self, scope, req).await
    }

    pub async fn list_snapshots(
        &self,
        scope: &Scope,
    ) -> Result<Vec<hearth_types::snapshot::Snapshot>, ControlError> {
        snapshot::list(self, scope).await
    }

    pub async fn snapshot(
        &self,
        scope: &Scope,
        name: &hearth_types::SnapshotName,
    ) -> Result<hearth_types::snapshot::Snapshot, ControlError> {
        snapshot::show(self, scope, name).await
    }

    /// Removes a snapshot no live VM was restored from.
    pub async fn remove_snapshot(
        &self,
        scope: &Scope,
        name: &hearth_types::SnapshotName,
    ) -> Result<hearth_types::snapshot::Snapshot, ControlError> {
        snapshot::remove(self, scope, name).await
    }

    fn backend(&self, kind: BackendKind) -> Result<Arc<dyn Hypervisor>, ControlError> {
        self.backends.get(&kind).cloned().ok_or_else(|| {
            ControlError::Backend(kind, "set HEARTH_FIRECRACKER before `hearth serve`".into())
        })
    }

    /// The record, if `scope` may see it; NotFound otherwise.
    async fn record(&self, scope: &Scope, id: &VmId) -> Result<VmRecord, ControlError> {
        match self.store.vm(id).await? {
            Some(r) if scope.may_see(&r.vm) => Ok(r),
            _ => Err(ControlError::NotFound(id.clone())),
        }
    }
}

/// Where a VM's files are (its writable layer as a VM that is not kept
/// has it, so releasing these never removes a persistent VM's disk).
fn prepare_files(ctl: &Controller, id: &VmId) -> crate::prepare::VmFiles {
    crate::prepare::VmFiles::for_vm(&ctl.config.data, id)
}

/// Where VM `vm`'s files are, its kept disk as its layer if it is
/// persistent.
fn vm_files(ctl: &Controller, vm: &Vm) -> crate::prepare::VmFiles {
    let files = prepare_files(ctl, &vm.id);
    if vm.persistent {
        // Firecracker takes only raw disks; QEMU decrypts a LUKS qcow2.
        let encrypt = vm.backend == BackendKind::Qemu && ctl.config.disk_keys.is_some();
        files.with_kept_disk_for(encrypt)
    } else {
        files
    }
}
