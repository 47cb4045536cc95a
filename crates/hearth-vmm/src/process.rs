//! The hypervisor process, shared by every backend: spawn it (or adopt one
//! a previous controller started), capture its console, notice its exit at
//! once, and stop it with a deadline.
//!
//! The hypervisor writes the guest console straight into the VM's console
//! log (its stdout is that file), so the log survives hearth restarting and
//! nothing is lost while no one reads. A follower tails the file into a live
//! broadcast stream.

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hearth_types::{ProcessRef, Timestamp};
use tokio::io::unix::AsyncFd;
use tokio::process::Command;
use tokio::sync::{broadcast, watch};

use crate::isolation::IsolationReport;
use crate::VmmError;

/// Console chunks a slow live follower may fall behind by before it skips
/// ahead (the log file still has every byte). Kept small: it is memory
/// every running VM holds.
const CONSOLE_CHUNKS: usize = 256;

/// How often the console follower looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(20);

/// How the hypervisor process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitInfo {
    /// An exit whose status cannot be known (an adopted process is not our
    /// child, so only its end is seen).
    pub const UNKNOWN: ExitInfo = ExitInfo {
        code: None,
        signal: None,
    };

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit status {code}"),
            (None, Some(sig)) => write!(f, "killed by signal {sig}"),
            (None, None) => f.write_str("exit status unknown"),
        }
    }
}

/// Backend-specific control of a running guest.
#[async_trait]
pub trait VmControl: Send + Sync + fmt::Debug {
    /// Asks the guest to shut itself down (ACPI power button, Ctrl-Alt-Del).
    async fn request_shutdown(&self) -> Result<(), VmmError>;
}

/// Where a hypervisor process's outputs go, and whether it may outlive us.
#[derive(Debug, Clone)]
pub struct ProcessLogs {
    /// The guest serial console (the hypervisor's stdout).
    pub console_log: PathBuf,
    /// The hypervisor's own stderr.
    pub stderr_log: PathBuf,
    /// Detached hypervisors get their own session and survive hearth (a
    /// controller restart adopts them); attached ones die with hearth.
    pub detach: bool,
}

/// A hypervisor process being watched.
#[derive(Debug)]
pub struct Spawned {
    pub process: ProcessRef,
    /// When the process was started (or adopted).
    pub started_at: Timestamp,
    console: broadcast::Receiver<Bytes>,
    exit: watch::Receiver<Option<ExitInfo>>,
}

type ExitFuture = Pin<Box<dyn Future<Output = ExitInfo> + Send>>;

/// Work to do when the process has ended, before its exit is published
/// (so a waiter sees its effects): the isolation's release (cgroup
/// counters, cgroup removal, files back to root). It runs on a blocking
/// thread.
pub type ExitHook = Box<dyn FnOnce() + Send>;

/// Spawns `cmd` with stdout appended to the console log and stderr to the
/// hypervisor log.
pub fn spawn(cmd: Command, logs: &ProcessLogs) -> Result<Spawned, VmmError> {
    spawn_watched(cmd, logs, None)
}

/// [`spawn`], running `on_exit` once the process has ended.
pub fn spawn_watched(
    mut cmd: Command,
    logs: &ProcessLogs,
    on_exit: Option<ExitHook>,
) -> Result<Spawned, VmmError> {
    let program = PathBuf::from(cmd.as_std().get_program());
    let console = open_append(&logs.console_log)?;
    let offset = console.metadata().map(|m| m.len()).unwrap_or(0);
    cmd.stdin(Stdio::null())
        .stdout(console)
        .stderr(open_append(&logs.stderr_log)?);
    if logs.detach {
        new_session(&mut cmd);
    } else {
        die_with_parent(&mut cmd);
        cmd.kill_on_drop(true);
    }
    let mut child = cmd
        .spawn()
        .map_err(|source| VmmError::Spawn { program, source })?;
    let pid = child.id().unwrap_or(0);
    let process = ProcessRef {
        pid,
        start_ticks: start_ticks(pid).unwrap_or(0),
    };
    let exit: ExitFuture = Box::pin(async move {
        use std::os::unix::process::ExitStatusExt;
        match child.wait().await {
            Ok(status) => ExitInfo {
                code: status.code(),
                signal: status.signal(),
            },
            Err(_) => ExitInfo::UNKNOWN,
        }
    });
    Ok(watch_process(
        process,
        exit,
        &logs.console_log,
        offset,
        on_exit,
    ))
}

/// Watches a hypervisor that an earlier hearth started. Fails when that
/// process is gone (or its pid now belongs to another process).
pub fn adopt(process: ProcessRef, console_log: &Path) -> Result<Spawned, VmmError> {
    adopt_watched(process, console_log, None)
}

/// [`adopt`], running `on_exit` once the process has ended.
pub fn adopt_watched(
    process: ProcessRef,
    console_log: &Path,
    on_exit: Option<ExitHook>,
) -> Result<Spawned, VmmError> {
    let gone = || VmmError::Gone { pid: process.pid };
    if start_ticks(process.pid) != Some(process.start_ticks) {
        return Err(gone());
    }
    let pidfd = pidfd_open(process.pid).map_err(|_| gone())?;
    let offset = std::fs::metadata(console_log).map(|m| m.len()).unwrap_or(0);
    let exit: ExitFuture = Box::pin(async move {
        // SAFETY: the pidfd is owned by the AsyncFd and nothing else closes
        // or reuses it while registered.
        if let Ok(fd) = unsafe { AsyncFd::register(pidfd) } {
            let _ = fd.readable().await;
        }
        ExitInfo::UNKNOWN
    });
    Ok(watch_process(process, exit, console_log, offset, on_exit))
}

fn watch_process(
    process: ProcessRef,
    exit: ExitFuture,
    console_log: &Path,
    offset: u64,
    on_exit: Option<ExitHook>,
) -> Spawned {
    let (tx, console) = broadcast::channel(CONSOLE_CHUNKS);
    let (exit_tx, exit_rx) = watch::channel(None);
    let follower = open_at(console_log, offset);
    tokio::spawn(follow(exit, follower, tx, exit_tx, on_exit));
    Spawned {
        process,
        started_at: Timestamp::now(),
        console,
        exit: exit_rx,
    }
}

/// Tails the console log into the stream until the process ends, then
/// reads the rest (and runs the exit hook) and only then publishes the
/// exit, so a waiter always has the guest's last words.
async fn follow(
    exit: ExitFuture,
    mut file: Option<File>,
    tx: broadcast::Sender<Bytes>,
    exit_tx: watch::Sender<Option<ExitInfo>>,
    on_exit: Option<ExitHook>,
) {
    tokio::pin!(exit);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            info = &mut exit => {
                drain(&mut file, &tx, &mut buf);
                if let Some(hook) = on_exit {
                    let _ = tokio::task::spawn_blocking(hook).await;
                }
                let _ = exit_tx.send(Some(info));
                return;
            }
            _ = tokio::time::sleep(FOLLOW_POLL) => drain(&mut file, &tx, &mut buf),
        }
    }
}

fn drain(file: &mut Option<File>, tx: &broadcast::Sender<Bytes>, buf: &mut [u8]) {
    let Some(f) = file else { return };
    while let Ok(n) = f.read(buf) {
        if n == 0 {
            break;
        }
        let _ = tx.send(Bytes::copy_from_slice(&buf[..n]));
    }
}

fn open_at(path: &Path, offset: u64) -> Option<File> {
    let mut f = File::open(path).ok()?;
    f.seek(SeekFrom::Start(offset)).ok()?;
    Some(f)
}

fn open_append(path: &Path) -> Result<File, VmmError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| VmmError::Io {
            path: path.to_owned(),
            source,
        })
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

/// A detached hypervisor leaves hearth's session, so a Ctrl-C or SIGTERM to
/// the controller's process group does not reach it.
fn new_session(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls
    // setsid(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The start time of a process in clock ticks since boot (field 22 of
/// /proc/PID/stat), or None when there is no such process.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; it ends at the last ')'.
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process is still the one we know (same pid, same start).
pub fn is_alive(process: ProcessRef) -> bool {
    start_ticks(process.pid) == Some(process.start_ticks) && !is_zombie(process.pid)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(false)
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl Spawned {
    /// Waits for the process to end (used when a start fails half-way).
    pub async fn wait(&mut self) -> ExitInfo {
        wait_exit(&mut self.exit).await
    }
}

async fn wait_exit(exit: &mut watch::Receiver<Option<ExitInfo>>) -> ExitInfo {
    loop {
        if let Some(info) = *exit.borrow_and_update() {
            return info;
        }
        if exit.changed().await.is_err() {
            return exit.borrow().unwrap_or(ExitInfo::UNKNOWN);
        }
    }
}

/// A started (or adopted) hypervisor with its guest.
#[derive(Debug)]
pub struct RunningVm {
    process: ProcessRef,
    started_at: Timestamp,
    console: broadcast::Receiver<Bytes>,
    exit: watch::Receiver<Option<ExitInfo>>,
    control: Box<dyn VmControl>,
    isolation: Option<IsolationReport>,
}

impl RunningVm {
    pub fn new(spawned: Spawned, control: Box<dyn VmControl>) -> Self {
        RunningVm {
            process: spawned.process,
            started_at: spawned.started_at,
            console: spawned.console,
            exit: spawned.exit,
            control,
            isolation: None,
        }
    }

    /// The VM with what isolation its hypervisor got.
    pub fn with_isolation(mut self, report: Option<IsolationReport>) -> Self {
        self.isolation = report;
        self
    }

    /// What isolation the hypervisor got (its user, cgroup and limits,
    /// sandbox, and what was off), when the backend knows.
    pub fn isolation(&self) -> Option<&IsolationReport> {
        self.isolation.as_ref()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid
    }

    pub fn process(&self) -> ProcessRef {
        self.process
    }

    /// When the hypervisor process was started (or adopted).
    pub fn started_at(&self) -> Timestamp {
        self.started_at
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

    /// A receiver that yields the exit once it happens.
    pub fn exit_watch(&self) -> watch::Receiver<Option<ExitInfo>> {
        self.exit.clone()
    }

    /// Waits for the hypervisor to end.
    pub async fn wait(&mut self) -> ExitInfo {
        wait_exit(&mut self.exit).await
    }

    /// Asks the guest to shut down, and kills the hypervisor if it has not
    /// ended within `grace`.
    pub async fn stop(&mut self, grace: Duration) -> ExitInfo {
        if self.exited().is_none() {
            let ask = self.control.request_shutdown();
            if let Ok(Err(err)) = tokio::time::timeout(grace, ask).await {
                tracing::debug!(error = %err, "graceful shutdown request failed");
            }
        }
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(info) => info,
            Err(_) => self.kill().await,
        }
    }

    /// Kills the hypervisor now and waits for it to end.
    pub async fn kill(&mut self) -> ExitInfo {
        if self.exited().is_none() && is_alive(self.process) {
            // SAFETY: kill(2) on a pid whose start time we just checked is ours.
            unsafe {
                libc::kill(self.process.pid as libc::pid_t, libc::SIGKILL);
            }
        }
        self.wait().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs(dir: &Path, detach: bool) -> ProcessLogs {
        ProcessLogs {
            console_log: dir.join("console.log"),
            stderr_log: dir.join("err.log"),
            detach,
        }
    }

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(script);
        c
    }

    #[tokio::test]
    async fn console_reaches_the_log_and_the_stream_before_the_exit() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spawn(
            sh("echo one; sleep 0.1; echo two; exit 3"),
            &logs(dir.path(), false),
        )
        .unwrap();
        let mut rx = s.console.resubscribe();
        assert_eq!(s.wait().await.code, Some(3));
        let mut got = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, b"one\ntwo\n");
        assert_eq!(
            std::fs::read(dir.path().join("console.log")).unwrap(),
            b"one\ntwo\n"
        );
    }

    #[tokio::test]
    async fn the_stream_starts_at_this_runs_output() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("console.log"), b"earlier run\n").unwrap();
        let mut s = spawn(sh("echo now"), &logs(dir.path(), false)).unwrap();
        let mut rx = s.console.resubscribe();
        s.wait().await;
        assert_eq!(&rx.try_recv().unwrap()[..], b"now\n");
    }

    #[tokio::test]
    async fn a_detached_process_can_be_adopted_and_its_end_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let first = spawn(sh("sleep 0.3; echo late"), &logs(dir.path(), true)).unwrap();
        assert!(is_alive(first.process));
        let mut adopted = adopt(first.process, &dir.path().join("console.log")).unwrap();
        let mut rx = adopted.console.resubscribe();
        let exit = tokio::time::timeout(Duration::from_secs(5), adopted.wait())
            .await
            .unwrap();
        assert_eq!(exit, ExitInfo::UNKNOWN);
        assert_eq!(&rx.try_recv().unwrap()[..], b"late\n");
    }

    #[test]
    fn a_reused_or_missing_pid_is_not_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let me = ProcessRef {
            pid: std::process::id(),
            start_ticks: 1,
        };
        assert!(matches!(adopt(me, dir.path()), Err(VmmError::Gone { .. })));
        assert!(start_ticks(std::process::id()).is_some());
        assert_eq!(start_ticks(u32::MAX), None);
    }
}
