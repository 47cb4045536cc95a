//! A soak of `hearth serve`: many create/destroy cycles through the API,
//! and what the host looks like before and after. Shared by the suite's
//! short soak (`tests/serve_soak.rs`) and the long one
//! (`benches/soak.rs`), so both count the same things.
//!
//! Each cycle creates a `minimal` VM and destroys it: every `boot_every`th
//! once it is `ready` (a real boot to the agent), every other one once its
//! hypervisor runs, the rest at once; `in_flight` loops run side by side.
//! After the last VM is destroyed the server's descriptors, threads and
//! memory, the hypervisor processes, the entries under `<data>/vms/`, the
//! writable layers, hearth's cgroups below the server's own and the active
//! store rows are compared with the same counts after the warm-up cycles.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_types::api::{Vm, VmEvent};
use hearth_types::VmState;

use super::serve::{open_fds, rss_kib, Api, Host};

/// How a soak runs.
#[derive(Debug, Clone, Copy)]
pub struct Soak {
    pub cycles: usize,
    pub in_flight: usize,
    /// Every this many cycles a VM is destroyed only once ready.
    pub boot_every: usize,
    /// How long a booting VM has to become ready (TCG, shared cores).
    pub boot_within: Duration,
}

/// What one count of the host was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub fds: usize,
    pub threads: usize,
    pub rss_kib: u64,
    pub hypervisors: usize,
    pub vm_entries: usize,
    pub layers: usize,
    pub cgroups: usize,
    pub active_rows: usize,
}

/// A soak's outcome.
#[derive(Debug)]
pub struct Report {
    pub before: Snapshot,
    pub after: Snapshot,
    /// From the first create to the last VM destroyed.
    pub elapsed: Duration,
    /// VMs that reached `ready` before they were destroyed.
    pub booted: usize,
    /// Of the VMs asked to boot, those that did not get ready in time.
    pub not_ready: Vec<String>,
    /// VMs whose hypervisor had started when they were destroyed.
    pub spawned: usize,
    /// The server's RSS in KiB every [`SAMPLE_EVERY`] while the cycles
    /// ran: a leak climbs all along, a cache that fills flattens out.
    pub rss_samples: Vec<u64>,
}

/// How often [`Report::rss_samples`] are taken.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(15);

impl Report {
    pub fn print(&self, soak: &Soak) {
        let rate = soak.cycles as f64 / self.elapsed.as_secs_f64();
        eprintln!(
            "soak: {} cycles ({} in flight) in {:.1} s, {rate:.1} cycles/s; {} booted to ready, {} not ready in time, {} had their hypervisor started",
            soak.cycles,
            soak.in_flight,
            self.elapsed.as_secs_f64(),
            self.booted,
            self.not_ready.len(),
            self.spawned
        );
        eprintln!("soak: before {:?}", self.before);
        eprintln!("soak: after  {:?}", self.after);
        eprintln!(
            "soak: serve RSS every {} s (KiB): {:?}",
            SAMPLE_EVERY.as_secs(),
            self.rss_samples
        );
    }
}

/// Counts what a soak must not leave behind.
pub fn snapshot(host: &mut Host) -> Snapshot {
    let pid = host.serve_pid();
    let vms: Vec<Vm> = host.api().json("GET", "/v1/vms", None, 200);
    Snapshot {
        fds: open_fds(pid),
        threads: threads(pid),
        rss_kib: rss_kib(pid),
        hypervisors: host.hypervisors().len(),
        vm_entries: host.vm_dirs().len(),
        layers: host.layers().len(),
        cgroups: cgroups_below(pid),
        active_rows: vms.iter().filter(|vm| vm.state.is_active()).count(),
    }
}

/// Runs the soak on a started host.
pub fn run(host: &mut Host, soak: Soak) -> Report {
    let api = host.api();
    // One cycle of each kind first, so what is opened once (the store's
    // WAL, caches, the first boot's threads) is in the baseline.
    let warm = [
        cycle(&api, Kind::Boot, soak.boot_within).0,
        cycle(&api, Kind::Spawned, soak.boot_within).0,
    ];
    wait_all_destroyed(host, &warm, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let before = snapshot(host);

    let started = Instant::now();
    let serve = host.serve_pid();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let sampler = std::thread::spawn(move || {
        let mut samples = vec![rss_kib(serve)];
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            stopped.recv_timeout(SAMPLE_EVERY)
        {
            samples.push(rss_kib(serve));
        }
        samples
    });
    let per_loop = soak.cycles / soak.in_flight;
    let workers: Vec<_> = (0..soak.in_flight)
        .map(|w| {
            let api = api.clone();
            std::thread::spawn(move || {
                (0..per_loop)
                    .map(|n| {
                        let k = w + n * soak.in_flight;
                        let kind = match k {
                            k if k % soak.boot_every == 0 => Kind::Boot,
                            k if k % 2 == 1 => Kind::Spawned,
                            _ => Kind::AtOnce,
                        };
                        cycle(&api, kind, soak.boot_within)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let done: Vec<(String, Option<bool>)> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("a soak loop"))
        .collect();
    let ids: Vec<String> = done.iter().map(|(id, _)| id.clone()).collect();
    wait_all_destroyed(host, &ids, Duration::from_secs(120 + soak.cycles as u64));
    let elapsed = started.elapsed();
    drop(stop);
    let rss_samples = sampler.join().expect("the RSS sampler");
    std::thread::sleep(Duration::from_millis(500));
    let after = snapshot(host);

    let booted = done.iter().filter(|(_, r)| *r == Some(true)).count();
    let not_ready = done
        .iter()
        .filter(|(_, r)| *r == Some(false))
        .map(|(id, _)| id.clone())
        .collect();
    let spawned = ids
        .iter()
        .filter(|id| {
            let events: Vec<VmEvent> = api.json("GET", &format!("/v1/vms/{id}/events"), None, 200);
            events.iter().any(|e| e.state == VmState::Booting)
        })
        .count();
    Report {
        before,
        after,
        elapsed,
        booted,
        not_ready,
        spawned,
        rss_samples,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    AtOnce,
    Spawned,
    Boot,
}

/// Creates a VM and destroys it when `kind` says; its id, and for `Boot`
/// whether it got ready in time (it is destroyed either way). A removal
/// racing the VM's own next step gets `409 conflict` and is asked again,
/// as the API says to.
fn cycle(api: &Api, kind: Kind, boot_within: Duration) -> (String, Option<bool>) {
    let vm: Vm = api.json("POST", "/v1/vms", Some(r#"{"image":"minimal"}"#), 201);
    let path = format!("/v1/vms/{}", vm.id);
    let waiting = |done: &dyn Fn(VmState) -> bool, within: Duration| {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let now: Vm = api.json("GET", &path, None, 200);
            if done(now.state) {
                return Some(now.state);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    };
    let ready = match kind {
        Kind::AtOnce => None,
        Kind::Spawned => {
            let started = |s| s != VmState::Requested && s != VmState::Preparing;
            waiting(&started, Duration::from_secs(60));
            None
        }
        Kind::Boot => {
            let settled = |s: VmState| s == VmState::Ready || !s.is_active();
            Some(waiting(&settled, boot_within) == Some(VmState::Ready))
        }
    };
    for _ in 0..10 {
        match api.call("DELETE", &path, None) {
            (202, _) => return (vm.id.to_string(), ready),
            (409, body) if body.contains("\"conflict\"") => {
                std::thread::sleep(Duration::from_millis(50));
            }
            (status, body) => panic!("DELETE {path}: {status} {body}"),
        }
    }
    panic!("DELETE {path}: still conflicting after 10 tries");
}

/// Waits until every VM in `ids` is destroyed; panics after `within`.
pub fn wait_all_destroyed(host: &mut Host, ids: &[String], within: Duration) {
    let api = host.api();
    let started = Instant::now();
    loop {
        let vms: Vec<Vm> = api.json("GET", "/v1/vms", None, 200);
        let pending: Vec<&Vm> = vms
            .iter()
            .filter(|vm| ids.contains(&vm.id.to_string()) && vm.state != VmState::Destroyed)
            .collect();
        if pending.is_empty() {
            return;
        }
        if started.elapsed() > within {
            let states: Vec<String> = pending
                .iter()
                .map(|vm| format!("{} {} {:?}", vm.id, vm.state, vm.failure))
                .collect();
            panic!(
                "{} VMs not destroyed after {within:?}: {states:#?}\n--- serve\n{}",
                pending.len(),
                host.serve_logs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Cgroups below the server's own (cgroup v2, at `/sys/fs/cgroup` or, on a
/// hybrid host, `/sys/fs/cgroup/unified`) whose name says hearth or a VM
/// (`hearth`, `vm-`): hearth makes none, and neither must anything it
/// starts (a `systemd-run` scope, say). Only those are counted: when the
/// server sits in the root cgroup, everything else on the host is below it
/// too, and other work there comes and goes.
fn cgroups_below(pid: u32) -> usize {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
        return 0;
    };
    let root = Path::new("/sys/fs/cgroup");
    let unified = if root.join("cgroup.controllers").exists() {
        root.to_owned()
    } else {
        root.join("unified")
    };
    let mut dirs = Vec::new();
    walk_dirs(&unified.join(path.trim_start_matches('/')), &mut dirs);
    dirs.iter()
        .filter(|d| {
            let name = d
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            name.contains("hearth") || name.contains("vm-")
        })
        .count()
}

fn walk_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    out.push(dir.to_owned());
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk_dirs(&entry.path(), out);
        }
    }
}
