//! The QEMU microvm backend: the command line is built from the VM
//! description ([`cmdline`]), the guest console is QEMU's stdout, and QMP on
//! a Unix socket confirms the start and asks the guest to power down.

pub mod cmdline;
pub mod nic;
pub mod qmp;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use hearth_types::{Accel, BackendKind, ProcessRef, VmDescription};
use tokio::sync::Mutex;

use self::cmdline::QemuHost;
use self::qmp::Qmp;
use crate::accel::HostProbe;
use crate::process::{self, ProcessLogs};
use crate::{Hypervisor, OnSpawn, RunningVm, VmControl, VmmError};

/// Where Debian puts qboot.
pub const QBOOT: &str = "/usr/share/qemu/qboot.rom";
/// The full x86 emulator (Debian's slim `-microvm` binary has no TCG).
pub const QEMU: &str = "qemu-system-x86_64";

/// Boots VMs with `qemu-system-x86_64 -M microvm`.
#[derive(Debug, Clone)]
pub struct Qemu {
    binary: PathBuf,
    host: QemuHost,
    detach: bool,
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
            },
            detach: false,
        }
    }

    /// VMs started from now on outlive hearth and can be adopted.
    pub fn detached(mut self) -> Self {
        self.detach = true;
        self
    }

    pub fn with_binary(mut self, binary: PathBuf) -> Self {
        self.binary = binary;
        self
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
        vm.validate()?;
        self.check_files(vm)?;
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.args(cmdline::args(vm, &self.host));
        let logs = ProcessLogs {
            console_log: vm.console_log.clone(),
            stderr_log: vm.run_dir.join("hypervisor.log"),
            detach: self.detach,
        };
        let mut spawned = process::spawn(cmd, &logs)?;
        on_spawn(spawned.process);
        let qmp = match connect_qmp(vm).await {
            Ok(qmp) => qmp,
            Err(detail) => return Err(early_exit(&mut spawned, &logs, detail).await),
        };
        Ok(running(spawned, qmp))
    }

    async fn adopt(&self, vm: &VmDescription, process: ProcessRef) -> Result<RunningVm, VmmError> {
        let spawned = process::adopt(process, &vm.console_log)?;
        let qmp = connect_qmp(vm).await.map_err(|detail| VmmError::Api {
            backend: BackendKind::Qemu,
            call: "QMP reconnect".into(),
            detail,
        })?;
        Ok(running(spawned, qmp))
    }
}

fn running(spawned: process::Spawned, qmp: Qmp) -> RunningVm {
    let control = QemuControl {
        qmp: Mutex::new(qmp),
    };
    RunningVm::new(spawned, Box::new(control))
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
