//! The Firecracker backend: spawned with its API socket and configured
//! through its REST API with typed requests, then InstanceStart.
//!
//! Released Firecracker (up to 1.16) loads only an ELF vmlinux on x86; its
//! unreleased source also takes a bzImage. So that every version works, a
//! bzImage is turned into its ELF vmlinux first (once, into the cache).
//! Every file Firecracker writes lives in the VM's run directory:
//! `firecracker.sock` (API), `firecracker.log` (its own log),
//! `firecracker-metrics.json` and `hypervisor.log` (its stderr). The guest's
//! serial console is Firecracker's stdout, captured by [`crate::process`].
//!
//! Firecracker has no virtio-serial: the agent's channel
//! (`VmDescription::channels`, at most one here) rides on its vsock device,
//! whose host side is a Unix socket at the channel's `socket` path; the host
//! reaches the agent through it with [`vsock::connect`] (see
//! docs/firecracker.md).

pub mod api;
pub mod client;
pub mod jail;
pub mod snapshot;
pub mod vsock;

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hearth_types::{error_chain, BackendKind, ProcessRef, VmDescription, VmId};
use tokio::process::Command;

use self::api::{
    ActionType, BootSource, Drive, Endpoint, InstanceAction, LogLevel, Logger, MachineConfig,
    Metrics, NetworkInterface, Vsock,
};
use self::client::{ApiClient, ApiError};
use self::jail::{FcPaths, Jail, JAILER_ENV, JAIL_DIR};
use crate::isolation::{files, Confinement, Isolation, IsolationReport, Request};
use crate::process::{self, ExitHook, ExitInfo, ProcessLogs, RunningVm, VmControl};
use crate::{Hypervisor, Nic, OnSpawn, VmmError};

/// The environment variable naming the firecracker binary to use.
pub const BINARY_ENV: &str = "HEARTH_FIRECRACKER";

const BACKEND: BackendKind = BackendKind::Firecracker;
/// How long Firecracker may take to listen on its API socket.
const SOCKET_WAIT: Duration = Duration::from_secs(10);
/// How long one configuration call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Short, because `RunningVm::stop` asks for the shutdown before its grace
/// period starts.
const SHUTDOWN_CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long to wait for the exit after the API connection broke.
const EXIT_AFTER_BROKEN_CALL: Duration = Duration::from_secs(2);

const FIX_ENV: &str = "HEARTH_FIRECRACKER must name an executable firecracker binary";
const FIX_PATH: &str =
    "install Firecracker on PATH or set HEARTH_FIRECRACKER to a firecracker binary";
const FIX_NEW: &str = "pass the path of an executable firecracker binary";
const FIX_JAILER: &str = "HEARTH_JAILER must name an executable jailer binary (built with Firecracker, of the same version), or be unset";

/// Firecracker's own memory beyond the guest's, for the VM's cgroup
/// limit: Firecracker's docs put its overhead under 5 MiB; the rest is
/// room for its I/O buffers and the disks' page cache it is charged for.
pub const OVERHEAD_MIB: u32 = 64;

/// Starts VMs with one firecracker binary.
#[derive(Debug, Clone)]
pub struct Firecracker {
    binary: PathBuf,
    cache_dir: PathBuf,
    detach: bool,
    /// Firecracker's jailer, when one is configured.
    jailer: Option<PathBuf>,
    isolation: Arc<Isolation>,
}

impl Firecracker {
    /// `cache_dir` receives the ELF kernels extracted from bzImages.
    pub fn new(binary: PathBuf, cache_dir: PathBuf) -> Self {
        Firecracker {
            binary,
            cache_dir,
            detach: false,
            jailer: None,
            isolation: Arc::new(Isolation::off("not asked for")),
        }
    }

    /// Starts Firecracker through `jailer` (when the VM has a user of its
    /// own; see [`jail`]).
    pub fn with_jailer(mut self, jailer: Option<PathBuf>) -> Self {
        self.jailer = jailer;
        self
    }

    /// Hypervisors started from now on are confined as `isolation` allows.
    pub fn isolated(mut self, isolation: Arc<Isolation>) -> Self {
        self.isolation = isolation;
        self
    }

    pub fn jailer(&self) -> Option<&Path> {
        self.jailer.as_deref()
    }

    /// The jailer `$HEARTH_JAILER` names, if set (it must be executable).
    pub fn jailer_from_env() -> Result<Option<PathBuf>, VmmError> {
        jailer_from_env(std::env::var_os(JAILER_ENV))
    }

    /// VMs started from now on outlive hearth and can be adopted.
    pub fn detached(mut self) -> Self {
        self.detach = true;
        self
    }

    /// The binary `$HEARTH_FIRECRACKER` names, else `firecracker` on PATH,
    /// through the jailer `$HEARTH_JAILER` names, if set.
    pub fn from_env(cache_dir: PathBuf) -> Result<Self, VmmError> {
        let binary = locate_binary(std::env::var_os(BINARY_ENV), std::env::var_os("PATH"))?;
        let jailer = jailer_from_env(std::env::var_os(JAILER_ENV))?;
        Ok(Firecracker::new(binary, cache_dir).with_jailer(jailer))
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    fn check_binary(&self) -> Result<(), VmmError> {
        if !is_executable(&self.binary) {
            return Err(not_found(self.binary.clone(), FIX_NEW));
        }
        Ok(())
    }

    /// The kernel as an ELF, extracted off the async threads (a distribution
    /// kernel takes a noticeable moment to decompress).
    async fn kernel_elf(&self, kernel: &Path) -> Result<PathBuf, VmmError> {
        let (kernel, cache_dir) = (kernel.to_owned(), self.cache_dir.clone());
        let task = move || hearth_guestkit::kernel::ensure_elf(&kernel, &cache_dir);
        let result = match tokio::task::spawn_blocking(task).await {
            Ok(result) => result,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        result.map_err(|source| VmmError::Kernel {
            backend: BACKEND,
            source,
        })
    }

    /// Spawns Firecracker (or its jailer) for `vm` inside its confinement;
    /// the running VM and the paths Firecracker sees.
    fn spawn(
        &self,
        vm: &VmDescription,
        kernel: &Path,
        files: &RunFiles,
        vsock: Option<&Vsock>,
        tap: Option<TapHandOver>,
    ) -> Result<(RunningVm, FcPaths), VmmError> {
        let request = Request {
            overhead_mib: OVERHEAD_MIB,
            opens_kvm: self.jailer.is_none(),
            host_paths: self.jailer.is_none(),
        };
        let mut confinement = self.isolation.confine(vm, request)?;
        let namespace = tap.as_ref().map(|t| t.namespace.as_path());
        let launched = self
            .command(vm, kernel, files, vsock, namespace, &mut confinement)
            .and_then(|(mut cmd, paths, as_user, ns)| {
                if let Some(tap) = tap {
                    let owner = confinement.user().map(|u| (u.uid, u.gid));
                    crate::nic::hand_over(tap.fd, owner).map_err(|source| VmmError::Io {
                        path: tap.namespace.clone(),
                        source,
                    })?;
                }
                confinement.apply(&mut cmd, as_user)?;
                // The namespace stays open until the child entered it.
                let _ns = ns;
                let logs = ProcessLogs {
                    console_log: vm.console_log.clone(),
                    stderr_log: files.stderr.clone(),
                    detach: self.detach,
                };
                Ok((
                    process::spawn_watched(cmd, &logs, Some(self.exit_hook(vm)))?,
                    paths,
                ))
            });
        let (spawned, paths) = match launched {
            Ok(launched) => launched,
            Err(e) => {
                confinement.abandon();
                return Err(e);
            }
        };
        let report = confinement.started();
        let control = Control {
            api: ApiClient::new(files.socket.clone(), SHUTDOWN_CALL_TIMEOUT),
        };
        let running = RunningVm::new(spawned, Box::new(control)).with_isolation(Some(report));
        Ok((running, paths))
    }

    /// The command to spawn, the paths Firecracker will see, and whether
    /// the child drops to the VM's user itself (the jailer does it for a
    /// jailed Firecracker, after setting up the jail as root).
    /// `namespace`: the network namespace Firecracker runs in (a NIC's),
    /// whose open file the caller keeps until the spawn returned.
    fn command(
        &self,
        vm: &VmDescription,
        kernel: &Path,
        files: &RunFiles,
        vsock: Option<&Vsock>,
        namespace: Option<&Path>,
        confinement: &mut Confinement,
    ) -> Result<(Command, FcPaths, bool, Option<std::fs::File>), VmmError> {
        let host = files.paths(vm, kernel, vsock);
        let user = confinement.user().cloned();
        if let (Some(jailer), Some(user)) = (&self.jailer, &user) {
            jail::check_static(&self.binary)?;
            let jail = Jail::of(vm, &self.binary);
            let inside = jail.populate(vm, kernel, &host, user)?;
            confinement.close_run_dir()?;
            confinement.report.jailer = true;
            let mut cmd = Command::new(jailer);
            let fc_args = firecracker_args(&inside, None);
            let args = jail::jailer_args(vm, &self.binary, user, &jail, namespace, fc_args);
            cmd.args(args);
            return Ok((cmd, inside, false, None));
        }
        confinement.report.off.push(match &self.jailer {
            Some(_) => {
                "jailer: the VM has no user of its own, so the jailer is not used".to_owned()
            }
            None => format!("jailer: {JAILER_ENV} is not set"),
        });
        let with_elf = VmDescription {
            kernel: kernel.to_owned(),
            ..vm.clone()
        };
        let granted = confinement.grant(&with_elf)?;
        if let Some(user) = &user {
            files::grant_file(&files.log, user.uid, user.gid)?;
            files::grant_file(&files.metrics, user.uid, user.gid)?;
        }
        let paths = FcPaths {
            kernel: granted.kernel,
            initrd: granted.initramfs,
            disks: snapshot::link_drives(vm)?,
            vsock: host.vsock.as_deref().map(|v| relative_to(v, &vm.run_dir)),
            ..host
        };
        let mut cmd = Command::new(&self.binary);
        cmd.args(firecracker_args(&paths, Some(&vm.id)))
            .current_dir(&vm.run_dir);
        // Entered first, before the confinement drops to the VM's user.
        let ns = namespace.map(std::fs::File::open).transpose();
        let ns = ns.map_err(|source| VmmError::Io {
            path: namespace.map(Path::to_owned).unwrap_or_default(),
            source,
        })?;
        if let Some(ns) = &ns {
            crate::nic::enter_namespace(&mut cmd, std::os::fd::AsRawFd::as_raw_fd(ns));
        }
        Ok((cmd, paths, true, ns))
    }

    /// When Firecracker ends: the isolation's release, and the jail goes
    /// (its hard links would keep a removed layer's blocks).
    fn exit_hook(&self, vm: &VmDescription) -> ExitHook {
        let release = self.isolation.exit_hook(vm);
        let jail = vm.run_dir.join(JAIL_DIR);
        Box::new(move || {
            release();
            if jail.exists() {
                let _ = std::fs::remove_dir_all(&jail);
            }
        })
    }
}

/// A NIC's TAP on its way to Firecracker: its descriptor, to hand over,
/// and the namespace it is in.
struct TapHandOver {
    fd: std::os::fd::OwnedFd,
    namespace: PathBuf,
}

/// What Firecracker is given of `nic`: its TAP to hand over, and the
/// network interface that names it. A NIC whose TAP is in no namespace
/// of its own is refused: Firecracker would open it in hearth's.
fn hand_over_plan(nic: Nic) -> Result<(TapHandOver, NetworkInterface), VmmError> {
    let Some(namespace) = nic.namespace else {
        return Err(VmmError::Io {
            path: PathBuf::from("/dev/net/tun"),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a Firecracker NIC needs its TAP in a network namespace of its own",
            ),
        });
    };
    let interface = NetworkInterface {
        iface_id: "eth0".to_owned(),
        guest_mac: nic.mac,
        host_dev_name: nic.tap_name,
    };
    let tap = TapHandOver {
        fd: nic.tap,
        namespace,
    };
    Ok((tap, interface))
}

/// `path` relative to the run directory when it is inside it: the paths a
/// snapshot records then name the restored VM's own files.
fn relative_to(path: &Path, run_dir: &Path) -> PathBuf {
    path.strip_prefix(run_dir).unwrap_or(path).to_owned()
}

/// Firecracker's own arguments: its API socket, its id (the jailer passes
/// it for a jailed one), its logger.
fn firecracker_args(paths: &FcPaths, id: Option<&VmId>) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["--api-sock".into(), paths.api_socket.clone().into()];
    if let Some(id) = id {
        a.push("--id".into());
        a.push(id.as_str().into());
    }
    a.extend(logger(&paths.log).cli_args());
    a
}

impl Firecracker {
    /// A new Firecracker process for `vm`: booted, or, given a snapshot's
    /// `state`, loaded from it (its load request made before anything is
    /// spawned). A process whose setup fails is killed.
    async fn launch(
        &self,
        vm: &VmDescription,
        on_spawn: OnSpawn,
        state: Option<&Path>,
        nic: Option<Nic>,
    ) -> Result<RunningVm, VmmError> {
        vm.validate()?;
        self.check_binary()?;
        let (tap, interface) = match nic {
            Some(nic) => {
                let (tap, interface) = hand_over_plan(nic)?;
                (Some(tap), Some(interface))
            }
            None => (None, None),
        };
        let load = state
            .map(|state| snapshot::load_request(vm, &self.binary, state))
            .transpose()?;
        let vsock = vsock_device(vm)?;
        let kernel = self.kernel_elf(&vm.kernel).await?;
        let files = RunFiles::prepare(&vm.run_dir)?;
        if let Some(vsock) = &vsock {
            remove_stale_socket(&vsock.uds_path)?;
        }
        let spawned_at = Instant::now();
        let (mut running, paths) = self.spawn(vm, &kernel, &files, vsock.as_ref(), tap)?;
        on_spawn(running.process());
        let mut boot = Boot {
            api: ApiClient::new(files.socket.clone(), CALL_TIMEOUT),
            running: &mut running,
            files: &files,
        };
        let set_up = match &load {
            Some(load) => boot.restore(&paths, load).await,
            None => boot.run(vm, &paths, interface.as_ref()).await,
        };
        if let Err(err) = set_up {
            running.kill().await;
            return Err(err);
        }
        let elapsed_ms = spawned_at.elapsed().as_secs_f64() * 1000.0;
        let how = if load.is_some() {
            "restored"
        } else {
            "started"
        };
        tracing::info!(vm = %vm.id, pid = running.pid(), elapsed_ms, "firecracker {how} the guest");
        Ok(running)
    }
}

#[async_trait]
impl Hypervisor for Firecracker {
    fn kind(&self) -> BackendKind {
        BACKEND
    }

    async fn start_reporting(
        &self,
        vm: &VmDescription,
        on_spawn: OnSpawn,
    ) -> Result<RunningVm, VmmError> {
        self.launch(vm, on_spawn, None, None).await
    }

    /// Firecracker opens the TAP by name, so it runs in the TAP's
    /// namespace, and the TAP is handed over to it (`nic::hand_over`).
    async fn start_with_nic(
        &self,
        vm: &VmDescription,
        on_spawn: OnSpawn,
        nic: Nic,
    ) -> Result<RunningVm, VmmError> {
        self.launch(vm, on_spawn, None, Some(nic)).await
    }

    fn build(&self) -> String {
        let version = std::process::Command::new(&self.binary)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .output();
        let line = match &version {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .map(str::to_owned),
            Err(_) => None,
        };
        format!(
            "{} ({})",
            line.unwrap_or_else(|| "firecracker (version unknown)".into()),
            self.binary.display()
        )
    }

    fn machine(&self) -> String {
        let jailed = if self.jailer.is_some() {
            "jailed"
        } else {
            "unjailed"
        };
        format!("firecracker {}, {jailed}", std::env::consts::ARCH)
    }

    async fn save(&self, vm: &VmDescription, state: &Path) -> Result<(), VmmError> {
        snapshot::save(vm, &self.binary, state).await
    }

    async fn resume(&self, vm: &VmDescription) -> Result<(), VmmError> {
        snapshot::resume(vm).await
    }

    async fn restore_reporting(
        &self,
        vm: &VmDescription,
        state: &Path,
        on_spawn: OnSpawn,
    ) -> Result<RunningVm, VmmError> {
        self.launch(vm, on_spawn, Some(state), None).await
    }

    async fn adopt(&self, vm: &VmDescription, process: ProcessRef) -> Result<RunningVm, VmmError> {
        let spawned = process::adopt_watched(process, &vm.console_log, Some(self.exit_hook(vm)))?;
        let socket = RunFiles::socket_of(&vm.run_dir);
        let control = Control {
            api: ApiClient::new(socket, SHUTDOWN_CALL_TIMEOUT),
        };
        let report = IsolationReport::read(&vm.run_dir);
        Ok(RunningVm::new(spawned, Box::new(control)).with_isolation(report))
    }
}

/// Asks the guest to shut down through Firecracker's Ctrl-Alt-Del.
#[derive(Debug)]
struct Control {
    api: ApiClient,
}

#[async_trait]
impl VmControl for Control {
    async fn request_shutdown(&self) -> Result<(), VmmError> {
        let request = InstanceAction {
            action_type: ActionType::SendCtrlAltDel,
        };
        self.api
            .put(&request)
            .await
            .map_err(|err| api_error(&request, &err))
    }
}

/// One configuration run against a freshly spawned Firecracker.
struct Boot<'a> {
    api: ApiClient,
    running: &'a mut RunningVm,
    files: &'a RunFiles,
}

impl Boot<'_> {
    /// Configures the guest with the paths Firecracker sees, and starts it.
    async fn run(
        &mut self,
        vm: &VmDescription,
        paths: &FcPaths,
        interface: Option<&NetworkInterface>,
    ) -> Result<(), VmmError> {
        let spawned_at = Instant::now();
        self.wait_for_socket().await?;
        let since_spawn_ms = spawned_at.elapsed().as_secs_f64() * 1000.0;
        tracing::debug!(since_spawn_ms, "firecracker API socket accepts");
        self.put(&metrics(paths)).await?;
        self.put(&boot_source(vm, paths)).await?;
        for drive in drives(vm, paths) {
            self.put(&drive).await?;
        }
        self.put(&machine_config(vm)).await?;
        if let Some(uds_path) = &paths.vsock {
            let device = Vsock {
                guest_cid: vsock::GUEST_CID,
                uds_path: uds_path.clone(),
            };
            self.put(&device).await?;
        }
        if let Some(interface) = interface {
            self.put(interface).await?;
        }
        self.instance_start().await
    }

    /// Loads a snapshot into this Firecracker, given only its metrics
    /// (Firecracker refuses a load after any other configuration), and
    /// runs the guest.
    async fn restore(&mut self, paths: &FcPaths, load: &api::SnapshotLoad) -> Result<(), VmmError> {
        self.wait_for_socket().await?;
        self.put(&metrics(paths)).await?;
        self.put(load).await
    }

    /// Polls until the API socket accepts; fails at once if Firecracker
    /// exits meanwhile.
    async fn wait_for_socket(&mut self) -> Result<(), VmmError> {
        let deadline = Instant::now() + SOCKET_WAIT;
        loop {
            if let Some(exit) = self.running.exited() {
                return Err(early_exit(exit, self.files));
            }
            if self.api.is_listening().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(VmmError::Timeout {
                    what: format!("firecracker's API socket {}", self.api.socket().display()),
                    secs: SOCKET_WAIT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn put<E: Endpoint>(&mut self, request: &E) -> Result<(), VmmError> {
        match self.api.put(request).await {
            Ok(()) => Ok(()),
            Err(err) => Err(self.explain(request, err).await),
        }
    }

    /// A guest that resets at once can make Firecracker exit before it
    /// answers InstanceStart; a clean exit then means the guest ran.
    async fn instance_start(&mut self) -> Result<(), VmmError> {
        let request = InstanceAction {
            action_type: ActionType::InstanceStart,
        };
        match self.api.put(&request).await {
            Ok(()) => Ok(()),
            Err(err) if err.is_transport() => match self.exit_soon().await {
                Some(exit) if exit.success() => {
                    tracing::debug!("the guest ended before firecracker answered InstanceStart");
                    Ok(())
                }
                Some(exit) => Err(early_exit(exit, self.files)),
                None => Err(api_error(&request, &err)),
            },
            Err(err) => Err(api_error(&request, &err)),
        }
    }

    /// A broken connection usually means Firecracker died: say how.
    async fn explain<E: Endpoint>(&mut self, request: &E, err: ApiError) -> VmmError {
        if err.is_transport() {
            if let Some(exit) = self.exit_soon().await {
                return early_exit(exit, self.files);
            }
        }
        api_error(request, &err)
    }

    async fn exit_soon(&mut self) -> Option<ExitInfo> {
        tokio::time::timeout(EXIT_AFTER_BROKEN_CALL, self.running.wait())
            .await
            .ok()
    }
}

/// Firecracker's files in the VM's run directory.
#[derive(Debug)]
struct RunFiles {
    socket: PathBuf,
    log: PathBuf,
    metrics: PathBuf,
    stderr: PathBuf,
    /// Where this run's stderr starts in the (appended) `hypervisor.log`.
    stderr_start: u64,
}

impl RunFiles {
    fn socket_of(run_dir: &Path) -> PathBuf {
        run_dir.join("firecracker.sock")
    }

    /// The paths of an unjailed Firecracker: these files, `kernel`, and
    /// the description's.
    fn paths(&self, vm: &VmDescription, kernel: &Path, vsock: Option<&Vsock>) -> FcPaths {
        FcPaths {
            api_socket: self.socket.clone(),
            log: self.log.clone(),
            metrics: self.metrics.clone(),
            kernel: kernel.to_owned(),
            initrd: vm.initramfs.clone(),
            disks: vm.disks.iter().map(|d| d.path.clone()).collect(),
            vsock: vsock.map(|v| v.uds_path.clone()),
        }
    }

    /// Creates the run directory, removes a stale socket and empties the
    /// log and metrics files (Firecracker writes them from offset 0 without
    /// truncating, so old text would survive past the new).
    fn prepare(run_dir: &Path) -> Result<Self, VmmError> {
        std::fs::create_dir_all(run_dir).map_err(io_error(run_dir))?;
        let files = RunFiles {
            socket: Self::socket_of(run_dir),
            log: run_dir.join("firecracker.log"),
            metrics: run_dir.join("firecracker-metrics.json"),
            stderr: run_dir.join("hypervisor.log"),
            stderr_start: std::fs::metadata(run_dir.join("hypervisor.log")).map_or(0, |m| m.len()),
        };
        remove_if_present(&files.socket)?;
        std::fs::File::create(&files.log).map_err(io_error(&files.log))?;
        std::fs::File::create(&files.metrics).map_err(io_error(&files.metrics))?;
        Ok(files)
    }
}

/// A socket left by an earlier run at the vsock path would make
/// Firecracker's bind fail; anything else there is left alone (Firecracker
/// then refuses `PUT /vsock` and says why).
fn remove_stale_socket(path: &Path) -> Result<(), VmmError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => remove_if_present(path),
        _ => Ok(()),
    }
}

fn remove_if_present(path: &Path) -> Result<(), VmmError> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(io_error(path)(err)),
        _ => Ok(()),
    }
}

fn logger(log: &Path) -> Logger {
    Logger {
        log_path: log.to_owned(),
        level: LogLevel::Info,
        show_level: true,
        show_log_origin: true,
    }
}

fn metrics(paths: &FcPaths) -> Metrics {
    Metrics {
        metrics_path: paths.metrics.clone(),
    }
}

/// Guests power off by resetting; Firecracker exits when the guest resets
/// through its emulated i8042, which `reboot=k` selects.
fn boot_source(vm: &VmDescription, paths: &FcPaths) -> BootSource {
    BootSource {
        kernel_image_path: paths.kernel.clone(),
        initrd_path: paths.initrd.clone(),
        boot_args: format!("{} reboot=k", vm.cmdline),
    }
}

/// `disk0`, `disk1`, ... in the description's order, at the paths
/// Firecracker sees; none is the root device because hearth's initramfs
/// mounts the root itself.
fn drives(vm: &VmDescription, paths: &FcPaths) -> Vec<Drive> {
    let drive = |(i, (disk, path)): (usize, (&hearth_types::Disk, &PathBuf))| Drive {
        drive_id: format!("disk{i}"),
        path_on_host: path.clone(),
        is_root_device: false,
        is_read_only: disk.read_only,
    };
    vm.disks
        .iter()
        .zip(&paths.disks)
        .enumerate()
        .map(drive)
        .collect()
}

fn machine_config(vm: &VmDescription) -> MachineConfig {
    MachineConfig {
        vcpu_count: vm.vcpus,
        mem_size_mib: vm.memory_mib,
    }
}

/// The agent's channel as Firecracker's one vsock device: the channel's
/// socket is its `uds_path`; the agent listens on
/// [`vsock::AGENT_VSOCK_PORT`]. One device carries one channel here.
fn vsock_device(vm: &VmDescription) -> Result<Option<Vsock>, VmmError> {
    match vm.channels.as_slice() {
        [] => Ok(None),
        [channel] => Ok(Some(Vsock {
            guest_cid: vsock::GUEST_CID,
            uds_path: channel.socket.clone(),
        })),
        more => Err(VmmError::Api {
            backend: BACKEND,
            call: "PUT /vsock".to_owned(),
            detail: format!(
                "the description has {} channels; Firecracker's one vsock device carries one \
                 (the agent's): give the VM a single channel",
                more.len()
            ),
        }),
    }
}

fn api_error<E: Endpoint>(request: &E, err: &ApiError) -> VmmError {
    let detail = match err {
        ApiError::Status { fault, .. } => fault.clone(),
        other => error_chain(other),
    };
    VmmError::Api {
        backend: BACKEND,
        call: format!("{} {}", request.method(), request.path()),
        detail,
    }
}

/// The exit status with the last words of this run's stderr and log.
fn early_exit(exit: ExitInfo, files: &RunFiles) -> VmmError {
    let mut detail = exit.to_string();
    for (name, path, start) in [
        ("stderr", &files.stderr, files.stderr_start),
        ("firecracker.log", &files.log, 0),
    ] {
        let tail = tail_lines(path, start, 5);
        if !tail.is_empty() {
            detail.push_str(&format!("; {name}: {tail}"));
        }
    }
    VmmError::EarlyExit {
        backend: BACKEND,
        detail,
    }
}

/// The last `n` non-empty lines of `path` after byte `start`, one line.
fn tail_lines(path: &Path, start: u64, n: usize) -> String {
    const MAX_TAIL: u64 = 8 * 1024;
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let from = start.max(len.saturating_sub(MAX_TAIL));
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

fn locate_binary(env: Option<OsString>, path: Option<OsString>) -> Result<PathBuf, VmmError> {
    if let Some(explicit) = env.filter(|v| !v.is_empty()).map(PathBuf::from) {
        if !is_executable(&explicit) {
            return Err(not_found(explicit, FIX_ENV));
        }
        return Ok(explicit);
    }
    path.iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("firecracker"))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| not_found(PathBuf::from("$PATH"), FIX_PATH))
}

/// `$HEARTH_JAILER`, when set: it must be executable.
fn jailer_from_env(env: Option<OsString>) -> Result<Option<PathBuf>, VmmError> {
    match env.filter(|v| !v.is_empty()).map(PathBuf::from) {
        Some(jailer) if !is_executable(&jailer) => Err(VmmError::NotFound {
            what: "jailer binary",
            path: jailer,
            fix: FIX_JAILER,
        }),
        jailer => Ok(jailer),
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn not_found(path: PathBuf, fix: &'static str) -> VmmError {
    VmmError::NotFound {
        what: "firecracker binary",
        path,
        fix,
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> VmmError + '_ {
    move |source| VmmError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use hearth_types::{Disk, VmId};

    use super::*;

    fn description(dir: &Path) -> VmDescription {
        VmDescription {
            id: "vm-test".parse::<VmId>().unwrap(),
            kernel: dir.join("vmlinux"),
            initramfs: Some(dir.join("initrd")),
            disks: vec![
                Disk {
                    path: dir.join("root.ext4"),
                    read_only: true,
                    key: None,
                },
                Disk {
                    path: dir.join("overlay.ext4"),
                    read_only: false,
                    key: None,
                },
            ],
            vcpus: 2,
            memory_mib: 256,
            cmdline: "console=ttyS0 quiet".into(),
            run_dir: dir.join("run"),
            console_log: dir.join("console.log"),
            channels: Vec::new(),
            memory: None,
        }
    }

    fn host_paths(vm: &VmDescription) -> FcPaths {
        let files = RunFiles {
            socket: vm.run_dir.join("firecracker.sock"),
            log: vm.run_dir.join("firecracker.log"),
            metrics: vm.run_dir.join("firecracker-metrics.json"),
            stderr: vm.run_dir.join("hypervisor.log"),
            stderr_start: 0,
        };
        files.paths(vm, Path::new("/cache/vmlinux.elf"), None)
    }

    #[test]
    fn disks_become_numbered_non_root_drives_in_order() {
        let vm = description(Path::new("/d"));
        let drives = drives(&vm, &host_paths(&vm));
        assert_eq!(drives.len(), 2);
        assert_eq!(drives[0].drive_id, "disk0");
        assert_eq!(drives[0].path_on_host, Path::new("/d/root.ext4"));
        assert!(drives[0].is_read_only && !drives[0].is_root_device);
        assert_eq!(drives[1].path(), "/drives/disk1");
        assert!(!drives[1].is_read_only && !drives[1].is_root_device);
    }

    #[test]
    fn boot_source_and_machine_come_from_the_description() {
        let vm = description(Path::new("/d"));
        let boot = boot_source(&vm, &host_paths(&vm));
        assert_eq!(boot.kernel_image_path, Path::new("/cache/vmlinux.elf"));
        assert_eq!(boot.initrd_path.as_deref(), Some(Path::new("/d/initrd")));
        assert_eq!(boot.boot_args, "console=ttyS0 quiet reboot=k");
        let machine = machine_config(&vm);
        assert_eq!((machine.vcpu_count, machine.mem_size_mib), (2, 256));
    }

    #[test]
    fn prepare_empties_old_logs_and_removes_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::write(run.join("firecracker.log"), "old").unwrap();
        std::fs::write(run.join("firecracker.sock"), "").unwrap();
        std::fs::write(run.join("hypervisor.log"), "previous run\n").unwrap();
        let files = RunFiles::prepare(&run).unwrap();
        assert_eq!(std::fs::read(&files.log).unwrap(), b"");
        assert_eq!(std::fs::read(&files.metrics).unwrap(), b"");
        assert!(!files.socket.exists());
        assert_eq!(files.stderr_start, 13);
    }

    #[test]
    fn early_exit_quotes_only_this_runs_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let files = RunFiles::prepare(dir.path()).unwrap();
        std::fs::write(&files.log, "a\nb\n\nc\nd\ne\nf\n").unwrap();
        let exit = ExitInfo {
            code: Some(1),
            signal: None,
        };
        let err = early_exit(exit, &files).to_string();
        assert!(
            err.contains("exit status 1; firecracker.log: b | c | d | e | f"),
            "{err}"
        );
        assert!(!err.contains("stderr"), "{err}");
    }

    #[test]
    fn binary_comes_from_the_variable_else_path() {
        let dir = tempfile::tempdir().unwrap();
        let fc = dir.path().join("firecracker");
        std::fs::write(&fc, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&fc, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = Some(OsString::from(format!(
            "/nonexistent:{}",
            dir.path().display()
        )));
        assert_eq!(locate_binary(None, path.clone()).unwrap(), fc);
        assert_eq!(locate_binary(Some("".into()), path).unwrap(), fc);
        let err = locate_binary(Some("/no/fc".into()), None).unwrap_err();
        assert!(
            matches!(err, VmmError::NotFound { fix: FIX_ENV, .. }),
            "{err}"
        );
        let err = locate_binary(None, Some("/nonexistent".into())).unwrap_err();
        assert!(err.to_string().contains("HEARTH_FIRECRACKER"), "{err}");
    }

    #[test]
    fn a_jailed_firecracker_is_given_the_jails_paths_and_no_id() {
        let vm = description(Path::new("/d"));
        let inside = Jail::inside(&vm);
        assert_eq!(drives(&vm, &inside)[1].path_on_host, Path::new("/disk1"));
        let boot = boot_source(&vm, &inside);
        assert_eq!(boot.kernel_image_path, Path::new("/vmlinux"));
        assert_eq!(boot.initrd_path.as_deref(), Some(Path::new("/initrd")));
        let args: Vec<String> = firecracker_args(&inside, None)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args.join(" "),
            "--api-sock /firecracker.sock --log-path /firecracker.log --level Info --show-level \
             --show-log-origin"
        );
        let unjailed = firecracker_args(&host_paths(&vm), Some(&vm.id));
        assert_eq!(unjailed[2..4], ["--id".into(), OsString::from("vm-test")]);
    }

    #[test]
    fn a_jailer_that_is_set_must_be_executable() {
        assert_eq!(jailer_from_env(None).unwrap(), None);
        assert_eq!(jailer_from_env(Some("".into())).unwrap(), None);
        let err = jailer_from_env(Some("/no/jailer".into()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/no/jailer") && err.contains("HEARTH_JAILER"),
            "{err}"
        );
    }

    #[test]
    fn the_agent_channel_becomes_the_vsock_device() {
        let mut vm = description(Path::new("/d"));
        assert_eq!(vsock_device(&vm).unwrap(), None, "no channel, no device");
        let channel = |name: &str| hearth_types::Channel {
            name: name.into(),
            socket: Path::new("/d/run").join(format!("{name}.sock")),
        };
        vm.channels.push(channel("hearth.agent"));
        let device = vsock_device(&vm).unwrap().unwrap();
        assert_eq!(device.guest_cid, 3);
        assert_eq!(device.uds_path, Path::new("/d/run/hearth.agent.sock"));
        vm.channels.push(channel("other"));
        let err = vsock_device(&vm).unwrap_err().to_string();
        assert!(
            err.contains("PUT /vsock") && err.contains("2 channels"),
            "{err}"
        );
    }

    #[test]
    fn only_a_stale_socket_is_removed_from_the_vsock_path() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        remove_stale_socket(&sock).unwrap();
        assert!(!sock.exists());
        remove_stale_socket(&sock).unwrap();
        let file = dir.path().join("notes");
        std::fs::write(&file, "keep").unwrap();
        remove_stale_socket(&file).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
    }

    #[test]
    fn refusals_carry_the_call_and_fault_message() {
        let err = ApiError::Status {
            status: 400,
            fault: "vcpu_count must be 1 or even".into(),
        };
        let err = api_error(&machine_config(&description(Path::new("/d"))), &err);
        assert_eq!(
            err.to_string(),
            "firecracker API call PUT /machine-config failed: vcpu_count must be 1 or even"
        );
    }
}
