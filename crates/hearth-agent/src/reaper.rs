//! The one place children are waited for. A single thread reaps every
//! child that ends (`waitpid(-1)`), so that when the agent is PID 1 the
//! orphans the kernel hands it are reaped too, and keeps each status until
//! whoever spawned that pid claims it (a status can arrive before its claim).
//!
//! The standard library waits for a child itself when its exec fails; the
//! reaper must not take that status first. So spawning holds a read lock,
//! and the reaper only reaps under the write lock: it first waits without
//! reaping (`waitid(WNOWAIT)`) until some child has ended.
//!
//! A pid is free for the kernel to hand out again once it is reaped, so a
//! signal to a child goes through [`Reaper::signal_group`], which checks
//! under the reaping lock that the child was not reaped yet.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Condvar, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// Unclaimed statuses older than this belonged to orphans: forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// With no children at all, how often to look for new orphans.
const IDLE_NAP: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct Reaper {
    spawning: RwLock<()>,
    ended: Mutex<HashMap<u32, (ExitStatus, Instant)>>,
    changed: Condvar,
    /// Children spawned here and not reaped yet: their pids (and group
    /// ids) still name them.
    alive: Mutex<HashSet<u32>>,
    /// Wakes the idle reaper when a child was spawned.
    spawned: (Mutex<u64>, Condvar),
}

/// The agent's reaper, started on first use.
pub fn reaper() -> &'static Reaper {
    static REAPER: OnceLock<&'static Reaper> = OnceLock::new();
    REAPER.get_or_init(|| {
        let r: &'static Reaper = Box::leak(Box::new(Reaper {
            spawning: RwLock::new(()),
            ended: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
            alive: Mutex::new(HashSet::new()),
            spawned: (Mutex::new(0), Condvar::new()),
        }));
        std::thread::spawn(move || r.reap_loop());
        r
    })
}

impl Reaper {
    /// Spawns `cmd`; its status must be claimed with [`Reaper::wait`], never
    /// with `Child::wait`.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<Child> {
        let child = {
            let _guard = self.spawning.read().unwrap_or_else(|p| p.into_inner());
            let child = cmd.spawn()?;
            // Under the spawning lock: the reaper cannot have reaped it yet.
            self.alive_set().insert(child.id());
            child
        };
        let (count, wake) = &self.spawned;
        *count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        wake.notify_all();
        Ok(child)
    }

    /// Waits for `pid` to end, at most until `deadline`; `None` at the
    /// deadline (the child still runs).
    pub fn wait(&self, pid: u32, deadline: Option<Instant>) -> Option<ExitStatus> {
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some((status, _)) = ended.remove(&pid) {
                return Some(status);
            }
            ended = match deadline {
                None => self.changed.wait(ended).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.checked_duration_since(Instant::now())?;
                    self.changed
                        .wait_timeout(ended, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// Sends `signal` to the process group led by `pid` (a child spawned
    /// here as the leader of its own group), unless the child was reaped:
    /// its pid may then name another process already. A zombie leader
    /// still holds its pid, so its group is signalled. False when nothing
    /// was sent.
    pub fn signal_group(&self, pid: u32, signal: i32) -> bool {
        let alive = self.alive_set();
        let Ok(pgid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        if !alive.contains(&pid) {
            return false;
        }
        // SAFETY: kill(2) has no memory-safety preconditions; the group's
        // leader is not reaped (checked under the lock reaping takes), so
        // the group id is still its own.
        unsafe { libc::kill(-pgid, signal) == 0 }
    }

    fn alive_set(&self) -> std::sync::MutexGuard<'_, HashSet<u32>> {
        self.alive.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reap_loop(&self) {
        loop {
            if !wait_for_an_ended_child() {
                self.nap();
                continue;
            }
            let _guard = self.spawning.write().unwrap_or_else(|p| p.into_inner());
            let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
            let mut alive = self.alive_set();
            while let Some((pid, status)) = reap_one() {
                alive.remove(&pid);
                ended.insert(pid, (status, Instant::now()));
            }
            drop(alive);
            ended.retain(|_, (_, at)| at.elapsed() < FORGET_AFTER);
            self.changed.notify_all();
        }
    }

    /// Sleeps until a spawn or `IDLE_NAP` (orphans arrive unannounced).
    fn nap(&self) {
        let (count, wake) = &self.spawned;
        let seen = count.lock().unwrap_or_else(|p| p.into_inner());
        let start = *seen;
        let _ = wake
            .wait_timeout_while(seen, IDLE_NAP, |c| *c == start)
            .unwrap_or_else(|p| p.into_inner());
    }
}

/// Blocks until some child has ended, without reaping it; false when there
/// are no children.
fn wait_for_an_ended_child() -> bool {
    loop {
        // SAFETY: an all-zero siginfo_t is valid; waitid writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is valid and writable for the call.
        let r = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if r == 0 {
            return true;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return false;
        }
    }
}

/// Reaps one ended child, if any.
fn reap_one() -> Option<(u32, ExitStatus)> {
    let mut status = 0;
    // SAFETY: `status` is valid and writable for the call.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    let pid = u32::try_from(pid).ok().filter(|p| *p > 0)?;
    Some((pid, ExitStatus::from_raw(status)))
}

#[cfg(test)]
#[allow(clippy::zombie_processes)] // the reaper waits, not `Child::wait`
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;

    use super::*;

    #[test]
    fn a_status_is_kept_until_claimed_and_a_deadline_ends_a_wait() {
        let r = reaper();
        let quick = r.spawn(Command::new("sh").args(["-c", "exit 7"])).unwrap();
        let slow = r.spawn(Command::new("sleep").arg("5")).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let status = r.wait(quick.id(), None).unwrap();
        assert_eq!(status.code(), Some(7));
        let soon = Instant::now() + Duration::from_millis(100);
        assert_eq!(r.wait(slow.id(), Some(soon)), None);
        // SAFETY: kill(2) on our own child, not reaped yet.
        unsafe { libc::kill(slow.id() as i32, libc::SIGKILL) };
        let status = r.wait(slow.id(), None).unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    /// A file that is no program is an exec format error at the spawn,
    /// which the diagnosis names. (Spawning through fork and execvp, as
    /// the standard library does once a `pre_exec` hook is set, would
    /// run it with /bin/sh instead, and hide the error.)
    #[test]
    fn a_file_that_is_no_program_is_an_exec_format_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-program");
        std::fs::write(&path, b"\x00\x01 neither ELF nor #!\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = reaper().spawn(&mut Command::new(&path)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOEXEC), "{err}");
    }

    #[test]
    fn a_reaped_child_is_never_signalled() {
        let r = reaper();
        let mut cmd = Command::new("sleep");
        cmd.arg("5").process_group(0);
        let child = r.spawn(&mut cmd).unwrap();
        assert!(r.signal_group(child.id(), libc::SIGTERM));
        let status = r.wait(child.id(), None).unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        assert!(!r.signal_group(child.id(), libc::SIGTERM), "reaped");
        assert!(!r.signal_group(1, libc::SIGTERM), "not ours");
    }

    #[test]
    fn a_failed_exec_is_an_error_not_a_panic() {
        let r = reaper();
        for _ in 0..50 {
            let err = r
                .spawn(Command::new("/nonexistent/x").stdout(Stdio::null()))
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
        }
    }
}
