//! The hypervisor process, shared by every backend: spawn it with its stdout
//! (the guest's serial console) pumped into the console log and a live
//! stream, notice its exit at once, and stop it with a deadline.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::process::{Child, Command};
use tokio::sync::{broadcast, watch};

use crate::console;
use crate::VmmError;

/// How the hypervisor process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitInfo {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit status {code}"),
            (None, Some(sig)) => write!(f, "killed by signal {sig}"),
            (None, None) => f.write_str("unknown exit"),
        }
    }
}

/// Backend-specific control of a running guest.
#[async_trait]
pub trait VmControl: Send + Sync + fmt::Debug {
    /// Asks the guest to shut itself down (ACPI power button, Ctrl-Alt-Del).
    async fn request_shutdown(&self) -> Result<(), VmmError>;
}

/// A started hypervisor with its guest.
#[derive(Debug)]
pub struct RunningVm {
    pid: u32,
    console: broadcast::Receiver<Bytes>,
    exit: watch::Receiver<Option<ExitInfo>>,
    control: Box<dyn VmControl>,
}

/// What [`spawn`] hands a backend before it wraps it into a [`RunningVm`].
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    console: broadcast::Receiver<Bytes>,
    exit: watch::Receiver<Option<ExitInfo>>,
}

/// Where a hypervisor process's outputs go.
#[derive(Debug, Clone)]
pub struct ProcessLogs {
    /// The guest serial console (the hypervisor's stdout).
    pub console_log: PathBuf,
    /// The hypervisor's own stderr.
    pub stderr_log: PathBuf,
}

/// Spawns `cmd` with stdout pumped to the console log and stream and stderr
/// appended to the hypervisor log. The process is killed if hearth dies.
pub fn spawn(mut cmd: Command, logs: &ProcessLogs) -> Result<Spawned, VmmError> {
    let program = PathBuf::from(cmd.as_std().get_program());
    let stderr = open_append(&logs.stderr_log)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true);
    die_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|source| VmmError::Spawn { program, source })?;
    let pid = child.id().unwrap_or(0);
    let stdout = child.stdout.take().expect("stdout was piped");
    let log = open_append(&logs.console_log)?;
    let (tx, console) = broadcast::channel(4096);
    let pump = tokio::spawn(console::pump(stdout, log, tx));
    let (exit_tx, exit) = watch::channel(None);
    tokio::spawn(watch_exit(child, pump, exit_tx));
    Ok(Spawned { pid, console, exit })
}

impl Spawned {
    /// Waits for the process to end (used when a start fails half-way).
    pub async fn wait(&mut self) -> Option<ExitInfo> {
        loop {
            if let Some(info) = *self.exit.borrow_and_update() {
                return Some(info);
            }
            if self.exit.changed().await.is_err() {
                return *self.exit.borrow();
            }
        }
    }
}

/// The hypervisor must not outlive a foreground `hearth` that was killed.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls
    // prctl(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn open_append(path: &Path) -> Result<std::fs::File, VmmError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| VmmError::Io {
            path: path.to_owned(),
            source,
        })
}

/// Publishes the exit only after the console pump drained stdout, so a
/// waiter always sees the guest's last words before the exit.
async fn watch_exit(
    mut child: Child,
    pump: tokio::task::JoinHandle<()>,
    exit_tx: watch::Sender<Option<ExitInfo>>,
) {
    use std::os::unix::process::ExitStatusExt;
    let info = match child.wait().await {
        Ok(status) => ExitInfo {
            code: status.code(),
            signal: status.signal(),
        },
        Err(_) => ExitInfo {
            code: None,
            signal: None,
        },
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
    let _ = exit_tx.send(Some(info));
}

impl RunningVm {
    pub fn new(spawned: Spawned, control: Box<dyn VmControl>) -> Self {
        RunningVm {
            pid: spawned.pid,
            console: spawned.console,
            exit: spawned.exit,
            control,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A live stream of console bytes from now on. The first call after
    /// start gets everything since the process was spawned.
    pub fn console(&mut self) -> broadcast::Receiver<Bytes> {
        let fresh = self.console.resubscribe();
        std::mem::replace(&mut self.console, fresh)
    }

    /// The exit, if the hypervisor has already ended.
    pub fn exited(&self) -> Option<ExitInfo> {
        *self.exit.borrow()
    }

    /// Waits for the hypervisor to end.
    pub async fn wait(&mut self) -> ExitInfo {
        loop {
            if let Some(info) = *self.exit.borrow_and_update() {
                return info;
            }
            if self.exit.changed().await.is_err() {
                return self.exited().unwrap_or(ExitInfo {
                    code: None,
                    signal: None,
                });
            }
        }
    }

    /// Asks the guest to shut down, and kills the hypervisor if it has not
    /// ended within `grace`.
    pub async fn stop(&mut self, grace: Duration) -> ExitInfo {
        if self.exited().is_none() {
            if let Err(err) = self.control.request_shutdown().await {
                tracing::debug!(error = %err, "graceful shutdown request failed");
            }
        }
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(info) => info,
            Err(_) => self.kill().await,
        }
    }

    /// Kills the hypervisor now and waits for it to be reaped.
    pub async fn kill(&mut self) -> ExitInfo {
        if self.exited().is_none() {
            // SAFETY: kill(2) with a pid we spawned and have not yet seen reaped.
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGKILL);
            }
        }
        self.wait().await
    }
}
