//! The QEMU microvm backend: the command line is built from the VM
//! description ([`cmdline`]), the guest console is QEMU's stdout, and QMP on
//! a Unix socket confirms the start and asks the guest to power down.

pub mod cmdline;
pub mod nic;
pub mod qmp;
pub mod snapshot;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hearth_types::{Accel, BackendKind, ProcessRef, VmDescription};
use tokio::sync::Mutex;

use self::cmdline::QemuHost;
use self::qmp::Qmp;
use crate::accel::HostProbe;
use crate::isolation::{Confinement, Isolation, IsolationReport, Request};
use crate::process::{self, ProcessLogs};
use crate::{Hypervisor, Nic, OnSpawn, RunningVm, VmControl, VmmError};

/// Where Debian puts qboot.
pub const QBOOT: &str = "/usr/share/qemu/qboot.rom";
/// The full x86 emulator (Debian's slim `-microvm` binary has no TCG).
pub const QEMU: &str = "qemu-system-x86_64";

/// QEMU's own memory beyond the guest's, for the VM's cgroup limit: its
/// code, device state and I/O buffers. Measured: a 256 MiB guest's QEMU
/// peaked at 260 MiB in all under TCG booting the minimal image.
pub const OVERHEAD_MIB: u32 = 256;
/// Under TCG, QEMU's translation cache on top: it grows up to its default
/// size of 1 GiB on a host with the memory (a browser guest gets there).
pub const TCG_CACHE_MIB: u32 = 1024;

/// Boots VMs with `qemu-system-x86_64 -M microvm`.
#[derive(Debug, Clone)]
pub struct Qemu {
    binary: PathBuf,
    host: QemuHost,
    detach: bool,
    isolation: Arc<Isolation>,
    /// Whether this QEMU has its seccomp sandbox, or why not.
    sandbox: Result<(), String>,
}

impl Qemu {
    /// A backend for this host: acceleration detected unless `accel` forces
    /// it, qboot from Debian's location.
    pub fn for_host(accel: Option<Accel>) -> Self {
        let accel = accel.unwrap_or_else(|| HostProbe::default().detect().accel);
        Qemu {
            binary: PathBuf::from(QEMU),
            host: QemuHost {
                accel,
                bios: PathBuf::from(QBOOT),
                tsc_khz: cmdline::host_tsc_khz(),
                sandbox: false,
            },
            detach: false,
            isolation: Arc::new(Isolation::off("not asked for")),
            sandbox: Err("not asked for".to_owned()),
        }
    }

    /// Hypervisors started from now on are confined as `isolation` allows,
    /// with QEMU's seccomp sandbox when this QEMU has it.
    pub fn isolated(mut self, isolation: Arc<Isolation>) -> Self {
        self.sandbox = sandbox_support(&self.binary);
        self.host.sandbox = self.sandbox.is_ok();
        self.isolation = isolation;
        self
    }

    /// VMs started from now on outlive hearth and can be adopted.
    pub fn detached(mut self) -> Self {
        self.detach = true;
        self
    }

    /// Another QEMU binary (call before [`Qemu::isolated`], which checks
    /// the binary's sandbox).
    pub fn with_binary(mut self, binary: PathBuf) -> Self {
        self.binary = binary;
        self
    }

    /// What the VM's cgroup allows QEMU beyond the guest's memory.
    pub fn overhead_mib(&self) -> u32 {
        match self.host.accel {
            Accel::Tcg => OVERHEAD_MIB + TCG_CACHE_MIB,
            Accel::Kvm => OVERHEAD_MIB,
        }
    }

    fn confine(&self, vm: &VmDescription) -> Result<(Confinement, VmDescription), VmmError> {
        let request = Request {
            overhead_mib: self.overhead_mib(),
            opens_kvm: self.host.accel == Accel::Kvm,
            host_paths: true,
        };
        let mut confinement = self.isolation.confine(vm, request)?;
        match &self.sandbox {
            Ok(()) => confinement.report.seccomp = true,
            Err(why) => confinement.report.off.push(format!("seccomp: {why}")),
        }
        match confinement.grant(vm) {
            Ok(granted) => Ok((confinement, granted)),
            Err(e) => {
                confinement.abandon();
                Err(e)
            }
        }
    }

    /// Spawns QEMU for `vm` (already granted) inside its confinement.
    /// With `nic`, QEMU inherits its TAP (a copy above the standard
    /// descriptors, closed here once QEMU has its own).
    fn spawn(
        &self,
        vm: &VmDescription,
        confinement: Confinement,
        logs: &ProcessLogs,
        nic: Option<&Nic>,
        incoming: bool,
    ) -> Result<(process::Spawned, IsolationReport), VmmError> {
        let mut cmd = tokio::process::Command::new(&self.binary);
        let keys = match key_pipes(vm) {
            Ok(keys) => keys,
            Err(source) => {
                confinement.abandon();
                return Err(VmmError::Isolation {
                    step: "passing a disk key to QEMU",
                    source,
                });
            }
        };
        let key_fds: Vec<(usize, i32)> = keys.iter().map(|(i, fd)| (*i, fd.as_raw_fd())).collect();
        for (_, fd) in &key_fds {
            crate::nic::inherit(&mut cmd, *fd);
        }
        cmd.args(cmdline::args_with_keys(vm, &self.host, &key_fds));
        if incoming {
            cmd.args(snapshot::INCOMING);
        }
        let tap = match nic.map(|n| crate::nic::above_stdio(&n.tap)).transpose() {
            Ok(tap) => tap,
            Err(source) => {
                confinement.abandon();
                return Err(VmmError::Isolation {
                    step: "passing the TAP to QEMU",
                    source,
                });
            }
        };
        if let (Some(tap), Some(nic)) = (&tap, nic) {
            cmd.args(nic::nic_args(tap.as_raw_fd(), &nic.mac));
            crate::nic::inherit(&mut cmd, tap.as_raw_fd());
        }
        let hook = Some(self.isolation.exit_hook(vm));
        match confinement
            .apply(&mut cmd, true)
            .and_then(|()| process::spawn_watched(cmd, logs, hook))
        {
            Ok(spawned) => Ok((spawned, confinement.started())),
            Err(e) => {
                confinement.abandon();
                Err(e)
            }
        }
    }

    pub fn accel(&self) -> Accel {
        self.host.accel
    }

    fn check_files(&self, vm: &VmDescription) -> Result<(), VmmError> {
        let must_exist = [
            (
                "qboot firmware",
                &self.host.bios,
                "install QEMU from bookworm-backports (package qemu-system-x86)",
            ),
            (
                "kernel",
                &vm.kernel,
                "run `hearth kernel fetch` or pass --kernel",
            ),
        ];
        for (what, path, fix) in must_exist {
            if !path.exists() {
                return Err(VmmError::NotFound {
                    what,
                    path: path.clone(),
                    fix,
                });
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Hypervisor for Qemu {
    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    async fn start_reporting(
        &self,
        vm: &VmDescription,
        on_spawn: OnSpawn,
    ) -> Result<RunningVm, VmmError> {
        self.start_qemu(vm, on_spawn, None).await
    }

    async fn start_with_nic(
        &self,
        vm: &VmDescription,
        on_spawn: OnSpawn,
        nic: Nic,
    ) -> Result<RunningVm, VmmError> {
        self.start_qemu(vm, on_spawn, Some(nic)).await
    }

    fn build(&self) -> String {
        build_of(&self.binary)
    }

    fn machine(&self) -> String {
        let line = cmdline::args(&probe_vm(), &self.host);
        let words: Vec<String> = line
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        let at = |flag: &str| {
            words
                .iter()
                .position(|w| w == flag)
                .and_then(|i| words.get(i + 1))
                .cloned()
                .unwrap_or_default()
        };
        format!(
            "-M {} -accel {} -cpu {}",
            at("-M"),
            at("-accel"),
            at("-cpu")
        )
    }

    async fn save(&self, vm: &VmDescription, state: &Path) -> Result<(), VmmError> {
        snapshot::save(vm, state).await
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
        vm.validate()?;
        self.check_files(vm)?;
        let logs = ProcessLogs {
            console_log: vm.console_log.clone(),
            stderr_log: vm.run_dir.join("hypervisor.log"),
            detach: self.detach,
        };
        let (confinement, vm) = self.confine(vm)?;
        let (mut spawned, report) = self.spawn(&vm, confinement, &logs, None, true)?;
        on_spawn(spawned.process);
        let loaded = async {
            let mut qmp = Qmp::connect(&cmdline::qmp_socket(&vm), Duration::from_secs(10))
                .await
                .map_err(|e| e.to_string())?;
            snapshot::load(&mut qmp, &vm, state)
                .await
                .map_err(|e| hearth_types::error_chain(&e))?;
            Ok::<_, String>(qmp)
        };
        match loaded.await {
            Ok(qmp) => Ok(running(spawned, qmp, Some(report))),
            Err(detail) => Err(early_exit(&mut spawned, &logs, detail).await),
        }
    }

    async fn adopt(&self, vm: &VmDescription, process: ProcessRef) -> Result<RunningVm, VmmError> {
        let hook = self.isolation.exit_hook(vm);
        let spawned = process::adopt_watched(process, &vm.console_log, Some(hook))?;
        let qmp = connect_qmp(vm).await.map_err(|detail| VmmError::Api {
            backend: BackendKind::Qemu,
            call: "QMP reconnect".into(),
            detail,
        })?;
        Ok(running(spawned, qmp, IsolationReport::read(&vm.run_dir)))
    }
}

impl Qemu {
    /// Spawns, records, and waits for QMP to say the guest runs. The NIC's
    /// TAP is closed here once QEMU holds it, so it goes with QEMU.
    async fn start_qemu(
        &self,
        vm: &VmDescription,
        on_spawn: OnSpawn,
        nic: Option<Nic>,
    ) -> Result<RunningVm, VmmError> {
        vm.validate()?;
        self.check_files(vm)?;
        let logs = ProcessLogs {
            console_log: vm.console_log.clone(),
            stderr_log: vm.run_dir.join("hypervisor.log"),
            detach: self.detach,
        };
        let (confinement, vm) = self.confine(vm)?;
        let (mut spawned, report) = self.spawn(&vm, confinement, &logs, nic.as_ref(), false)?;
        drop(nic);
        on_spawn(spawned.process);
        let qmp = match connect_qmp(&vm).await {
            Ok(qmp) => qmp,
            Err(detail) => return Err(early_exit(&mut spawned, &logs, detail).await),
        };
        Ok(running(spawned, qmp, Some(report)))
    }
}

/// For each disk with a key, a memfd holding it (above the standard
/// descriptors, close-on-exec until [`crate::nic::inherit`] clears it in
/// the child): QEMU's `secret` object reads `/dev/fd/N`. Not a pipe: QEMU
/// opens that path anew, which a pipe refuses to the VM's user (it is
/// root's, mode 0600); a memfd is in memory only and sealed read-only.
/// The key never touches a file on disk or an argument.
fn key_pipes(vm: &VmDescription) -> std::io::Result<Vec<(usize, std::os::fd::OwnedFd)>> {
    let mut pipes = Vec::new();
    for (i, disk) in vm.disks.iter().enumerate() {
        if let Some(key) = &disk.key {
            let read = crate::nic::above_stdio(&key_memfd(key.passphrase())?)?;
            pipes.push((i, read));
        }
    }
    Ok(pipes)
}

/// A sealed memfd holding `bytes`.
fn key_memfd(bytes: &[u8]) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create(2) with a NUL-terminated name and flags.
    let fd = unsafe { libc::memfd_create(c"hearth-disk-key".as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just made by memfd_create and is owned here alone.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(bytes)?;
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: fcntl(2) F_ADD_SEALS on a descriptor we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file.into())
}

/// `BINARY (first line of --version)`, asked once per binary.
fn build_of(binary: &Path) -> String {
    static ASKED: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());
    let mut asked = ASKED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, known)) = asked.iter().find(|(b, _)| b == binary) {
        return known.clone();
    }
    let version = std::process::Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "version unknown".to_owned());
    let build = format!("{} ({})", binary.display(), version.trim());
    asked.push((binary.to_owned(), build.clone()));
    build
}

/// A description only for reading the machine arguments off the line.
fn probe_vm() -> VmDescription {
    VmDescription {
        id: "vm-probe".parse().expect("a valid id"),
        kernel: PathBuf::new(),
        initramfs: None,
        disks: Vec::new(),
        vcpus: 1,
        memory_mib: 256,
        cmdline: String::new(),
        run_dir: PathBuf::new(),
        console_log: PathBuf::new(),
        channels: Vec::new(),
        memory: None,
    }
}

/// Whether `binary` has QEMU's seccomp sandbox: it is given the sandbox
/// and a device that does not exist, and must refuse the device (so it
/// accepted the sandbox) rather than the sandbox. About 0.2 s the first
/// time for a binary; the answer is kept for the process's life.
pub fn sandbox_support(binary: &Path) -> Result<(), String> {
    static PROBED: std::sync::Mutex<Vec<(PathBuf, Result<(), String>)>> =
        std::sync::Mutex::new(Vec::new());
    let mut probed = PROBED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, known)) = probed.iter().find(|(b, _)| b == binary) {
        return known.clone();
    }
    let answer = probe_sandbox(binary);
    probed.push((binary.to_owned(), answer.clone()));
    answer
}

fn probe_sandbox(binary: &Path) -> Result<(), String> {
    const PROBE_DEVICE: &str = "hearth-probe-device";
    let out = std::process::Command::new(binary)
        .args(["-sandbox", cmdline::SANDBOX, "-M", "none", "-nodefaults"])
        .args(["-display", "none", "-device", PROBE_DEVICE])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or("").trim();
    if first.contains(PROBE_DEVICE) && !first.contains("-sandbox") {
        Ok(())
    } else {
        Err(format!(
            "{} has no seccomp sandbox ({first}): install Debian's qemu-system-x86, which is \
             built with libseccomp",
            binary.display()
        ))
    }
}

fn running(spawned: process::Spawned, qmp: Qmp, report: Option<IsolationReport>) -> RunningVm {
    let control = QemuControl {
        qmp: Mutex::new(qmp),
    };
    RunningVm::new(spawned, Box::new(control)).with_isolation(report)
}

async fn connect_qmp(vm: &VmDescription) -> Result<Qmp, String> {
    let mut qmp = Qmp::connect(&cmdline::qmp_socket(vm), Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    match qmp.status().await {
        Ok(status) if status == "running" => Ok(qmp),
        Ok(status) => Err(format!("QEMU reports the guest {status}, not running")),
        Err(e) => Err(e.to_string()),
    }
}

/// Kills what was spawned and explains the failure with QEMU's own words.
async fn early_exit(
    spawned: &mut process::Spawned,
    logs: &ProcessLogs,
    detail: String,
) -> VmmError {
    // SAFETY: kill(2) on the pid we just spawned; it is reaped by the exit watcher.
    unsafe {
        libc::kill(spawned.process.pid as libc::pid_t, libc::SIGKILL);
    }
    spawned.wait().await;
    let stderr = std::fs::read_to_string(&logs.stderr_log).unwrap_or_default();
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(&detail);
    VmmError::EarlyExit {
        backend: BackendKind::Qemu,
        detail: last.to_owned(),
    }
}

/// Stops the guest through QMP.
#[derive(Debug)]
struct QemuControl {
    qmp: Mutex<Qmp>,
}

#[async_trait]
impl VmControl for QemuControl {
    async fn request_shutdown(&self) -> Result<(), VmmError> {
        let mut qmp = self.qmp.lock().await;
        qmp.execute("system_powerdown")
            .await
            .map(|_| ())
            .map_err(|e| VmmError::Api {
                backend: BackendKind::Qemu,
                call: "system_powerdown".into(),
                detail: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_hosts_qemu_has_the_sandbox_and_a_missing_binary_is_named() {
        if let Err(why) = sandbox_support(Path::new(QEMU)) {
            assert!(
                why.contains("cannot run") || why.contains("no seccomp sandbox"),
                "{why}"
            );
        }
        let err = sandbox_support(Path::new("/no/qemu")).unwrap_err();
        assert!(err.contains("cannot run /no/qemu"), "{err}");
    }
}
