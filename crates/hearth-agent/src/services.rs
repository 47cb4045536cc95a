//! Supervising the services: each runs on a thread of its own that spawns
//! it (argv directly, no shell), turns its output into `service_log`
//! records line by line, polls its readiness check, waits for it through
//! the reaper, records how it ended and starts it again per its restart
//! policy with backoff.

use std::collections::{HashMap, HashSet};
use std::io::BufReader;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hearth_agent_proto::{Record, Stream};
use hearth_types::guest::{ExitStatus, RestartPolicy, ServiceSpec};

use crate::backoff::Backoff;
use crate::lines::{read_line, MAX_LINE};
use crate::outbox::Outbox;
use crate::reaper::reaper;
use crate::{not_started, readiness, uptime_ms, user};

/// How often a readiness check is tried.
const READY_POLL: Duration = Duration::from_millis(200);
/// How long the last output lines may trail a service's end.
const DRAIN_WAIT: Duration = Duration::from_millis(500);

/// Told when a service's readiness check passed.
pub type OnReady = Arc<dyn Fn(&str) + Send + Sync>;

pub struct Supervisor {
    outbox: Arc<Outbox>,
    on_ready: OnReady,
    running: Mutex<HashMap<String, Running>>,
    ready: Arc<ReadySet>,
}

/// The services whose readiness passed (once is enough), for those that
/// start only `after` them.
#[derive(Debug, Default)]
struct ReadySet {
    names: Mutex<HashSet<String>>,
    changed: Condvar,
}

impl ReadySet {
    fn mark(&self, name: &str) {
        self.lock().insert(name.to_owned());
        self.changed.notify_all();
    }

    /// Waits until every one of `names` is ready; false when `control`
    /// was stopped first.
    fn wait_for(&self, names: &[String], control: &Control) -> bool {
        let mut ready = self.lock();
        loop {
            if control.stopping() {
                return false;
            }
            if names.iter().all(|n| ready.contains(n)) {
                return true;
            }
            ready = self
                .changed
                .wait_timeout(ready, READY_POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Supervisor")
    }
}

struct Running {
    spec: ServiceSpec,
    control: Arc<Control>,
    thread: JoinHandle<()>,
}

/// Shared by a service's thread and whoever stops it.
#[derive(Debug, Default)]
struct Control {
    stopping: AtomicBool,
    pid: Mutex<Option<u32>>,
    wake: Condvar,
}

impl Control {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Sleeps `d` unless stopped first; true when stopped.
    fn sleep(&self, d: Duration) -> bool {
        let pid = self.pid.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self
            .wake
            .wait_timeout_while(pid, d, |_| !self.stopping())
            .unwrap_or_else(|p| p.into_inner());
        self.stopping()
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(pid) = *self.pid.lock().unwrap_or_else(|p| p.into_inner()) {
            // SAFETY: kill(2) of the service's own process group (it was
            // spawned with process_group(0) and its status is unclaimed).
            unsafe { libc::kill(-(pid as libc::pid_t), sig) };
        }
    }
}

impl Supervisor {
    pub fn new(outbox: Arc<Outbox>, on_ready: OnReady) -> Self {
        Supervisor {
            outbox,
            on_ready,
            running: Mutex::new(HashMap::new()),
            ready: Arc::default(),
        }
    }

    /// Makes `wanted` the services that run: the ones not in it, or whose
    /// spec changed, are stopped; new ones started with `env` under theirs.
    pub fn converge(&self, wanted: &[ServiceSpec], env: &[(String, String)]) {
        let stale: Vec<String> = {
            let running = self.lock();
            running
                .iter()
                .filter(|(name, r)| !wanted.iter().any(|w| &w.name == *name && *w == r.spec))
                .map(|(name, _)| name.clone())
                .collect()
        };
        for name in stale {
            self.stop(&name, Duration::from_secs(2));
        }
        for spec in wanted {
            if !self.lock().contains_key(&spec.name) {
                self.start(spec.clone(), env.to_vec());
            }
        }
    }

    /// Stops every service: SIGTERM, then SIGKILL after `grace`.
    pub fn stop_all(&self, grace: Duration) {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        let controls: Vec<Arc<Control>> = {
            let running = self.lock();
            running.values().map(|r| r.control.clone()).collect()
        };
        for c in &controls {
            c.stopping.store(true, Ordering::SeqCst);
            c.wake.notify_all();
            c.signal(libc::SIGTERM);
        }
        for name in names {
            self.stop(&name, grace);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(&self, spec: ServiceSpec, env: Vec<(String, String)>) {
        let control = Arc::new(Control::default());
        let run = Run {
            outbox: self.outbox.clone(),
            on_ready: self.on_ready.clone(),
            ready: self.ready.clone(),
            control: control.clone(),
            env: merged_env(&env, &spec),
            spec: spec.clone(),
        };
        let thread = std::thread::spawn(move || run.supervise());
        self.lock().insert(
            spec.name.clone(),
            Running {
                spec,
                control,
                thread,
            },
        );
    }

    /// Stops one service: SIGTERM to its group, SIGKILL after `grace`.
    fn stop(&self, name: &str, grace: Duration) {
        let Some(r) = self.lock().remove(name) else {
            return;
        };
        r.control.stopping.store(true, Ordering::SeqCst);
        r.control.wake.notify_all();
        r.control.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while !r.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !r.thread.is_finished() {
            r.control.signal(libc::SIGKILL);
        }
        let _ = r.thread.join();
    }
}

/// The guest's variables, then the service's own on top.
fn merged_env(env: &[(String, String)], spec: &ServiceSpec) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| !spec.env.iter().any(|v| &v.name == k))
        .cloned()
        .collect();
    all.extend(spec.env.iter().map(|v| (v.name.clone(), v.value.clone())));
    all
}

/// One service's supervision, on its own thread.
struct Run {
    outbox: Arc<Outbox>,
    on_ready: OnReady,
    ready: Arc<ReadySet>,
    control: Arc<Control>,
    spec: ServiceSpec,
    env: Vec<(String, String)>,
}

impl Run {
    fn name(&self) -> String {
        self.spec.name.clone()
    }

    fn supervise(self) {
        // Started only once what it comes `after` is ready.
        if !self.ready.wait_for(&self.spec.after, &self.control) {
            return;
        }
        let mut backoff = Backoff::new(self.spec.crash_loop);
        let mut restarts = 0u32;
        while !self.control.stopping() {
            let Some((status, ran_for)) = self.run_once(restarts + 1) else {
                return;
            };
            let again = !self.control.stopping() && wants_restart(self.spec.restart, &status);
            let restart = again.then(|| backoff.restart(ran_for, Instant::now()));
            self.outbox.record(Record::ServiceExited {
                uptime_ms: uptime_ms(),
                service: self.name(),
                status,
                restarts,
                restart_in_ms: restart.as_ref().map(|r| r.delay.as_millis() as u64),
            });
            let Some(restart) = restart else {
                return;
            };
            if restart.crash_loop_began {
                self.outbox.record(Record::CrashLoop {
                    uptime_ms: uptime_ms(),
                    service: self.name(),
                    restarts: self.spec.crash_loop.restarts,
                    window_secs: self.spec.crash_loop.window_secs,
                });
            }
            if self.control.sleep(restart.delay) {
                return;
            }
            restarts += 1;
        }
    }

    /// Starts the service once and waits for its end: its status and how
    /// long it ran; `None` when it could not be started.
    fn run_once(&self, attempt: u32) -> Option<(ExitStatus, Duration)> {
        let mut child = match self.spawn() {
            Ok(child) => child,
            Err(message) => {
                self.outbox.record(Record::ServiceSpawnFailed {
                    uptime_ms: uptime_ms(),
                    service: self.name(),
                    message,
                });
                return None;
            }
        };
        let started = Instant::now();
        let pid = child.id();
        *self.control.pid.lock().unwrap_or_else(|p| p.into_inner()) = Some(pid);
        self.outbox.record(Record::ServiceStarted {
            uptime_ms: uptime_ms(),
            service: self.name(),
            pid,
            attempt,
        });
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        for (pipe, stream) in [
            (child.stdout.take().map(Pipe::Out), Stream::Stdout),
            (child.stderr.take().map(Pipe::Err), Stream::Stderr),
        ] {
            let (outbox, name, done) = (self.outbox.clone(), self.name(), done_tx.clone());
            std::thread::spawn(move || {
                if let Some(pipe) = pipe {
                    pump_lines(pipe, stream, &name, &outbox);
                }
                let _ = done.send(());
            });
        }
        let ended = Arc::new(AtomicBool::new(false));
        self.watch_readiness(ended.clone());
        let status = reaper().wait(pid, None).map(exit_status);
        ended.store(true, Ordering::SeqCst);
        *self.control.pid.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let ran_for = started.elapsed();
        // The last lines come before the exit, unless a grandchild keeps
        // the pipes open.
        let deadline = Instant::now() + DRAIN_WAIT;
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = done_rx.recv_timeout(left);
        }
        Some((
            status.unwrap_or(ExitStatus {
                code: None,
                signal: None,
            }),
            ran_for,
        ))
    }

    fn spawn(&self) -> Result<std::process::Child, String> {
        let (program, args) = self
            .spec
            .argv
            .split_first()
            .ok_or_else(|| "argv is empty".to_string())?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(user) = &self.spec.user {
            let ids = user::lookup(user, Path::new(user::PASSWD))?;
            if let Some(home) = &ids.home {
                cmd.env("HOME", home);
            }
            let (uid, gid) = (ids.uid, ids.gid);
            // SAFETY: the closure runs in the child between fork and exec
            // and only makes async-signal-safe system calls.
            unsafe {
                cmd.pre_exec(move || drop_privileges(uid, gid));
            }
        }
        reaper()
            .spawn(&mut cmd)
            .map_err(|e| not_started::message(program, &self.env, &e))
    }

    /// Polls the readiness check every `READY_POLL` until it passes or this
    /// run ends; a service without a check is ready once started.
    fn watch_readiness(&self, ended: Arc<AtomicBool>) {
        let (check, env) = (self.spec.readiness.clone(), self.env.clone());
        let (outbox, on_ready, name) = (self.outbox.clone(), self.on_ready.clone(), self.name());
        let ready = self.ready.clone();
        std::thread::spawn(move || {
            if let Some(check) = check {
                loop {
                    if ended.load(Ordering::SeqCst) {
                        return;
                    }
                    if readiness::passes(&check, &env) {
                        break;
                    }
                    std::thread::sleep(READY_POLL);
                }
            }
            if ended.load(Ordering::SeqCst) {
                return;
            }
            outbox.record(Record::ServiceReady {
                uptime_ms: uptime_ms(),
                service: name.clone(),
            });
            ready.mark(&name);
            on_ready(&name);
        });
    }
}

/// setgroups, setgid, setuid, in that order (after setuid the others
/// would be refused).
fn drop_privileges(uid: u32, gid: u32) -> std::io::Result<()> {
    let groups = [gid];
    // SAFETY: plain system calls; `groups` outlives the setgroups call.
    unsafe {
        if libc::setgroups(1, groups.as_ptr()) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn wants_restart(policy: RestartPolicy, status: &ExitStatus) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => status.code != Some(0),
        RestartPolicy::Never => false,
    }
}

fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    ExitStatus {
        code: status.code(),
        signal: status.signal(),
    }
}

enum Pipe {
    Out(std::process::ChildStdout),
    Err(std::process::ChildStderr),
}

impl std::io::Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Pipe::Out(p) => p.read(buf),
            Pipe::Err(p) => p.read(buf),
        }
    }
}

/// Records each line of `pipe` until it closes; never waits for the host.
fn pump_lines(pipe: Pipe, stream: Stream, service: &str, outbox: &Outbox) {
    let mut r = BufReader::new(pipe);
    while let Ok(Some(line)) = read_line(&mut r, MAX_LINE) {
        outbox.record(Record::ServiceLog {
            uptime_ms: uptime_ms(),
            service: service.to_owned(),
            stream,
            line,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_decides_on_restarts() {
        let ok = ExitStatus {
            code: Some(0),
            signal: None,
        };
        let killed = ExitStatus {
            code: None,
            signal: Some(9),
        };
        assert!(wants_restart(RestartPolicy::Always, &ok));
        assert!(!wants_restart(RestartPolicy::OnFailure, &ok));
        assert!(wants_restart(RestartPolicy::OnFailure, &killed));
        assert!(!wants_restart(RestartPolicy::Never, &killed));
    }

    #[test]
    fn a_service_env_overrides_the_guest_env() {
        let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
            "name": "s", "argv": ["x"], "env": [{"name": "A", "value": "svc"}]
        }))
        .unwrap();
        let env = [("A".into(), "guest".into()), ("B".into(), "b".into())];
        let merged = merged_env(&env, &spec);
        assert_eq!(
            merged,
            [("B".into(), "b".into()), ("A".into(), "svc".into())]
        );
    }
}
