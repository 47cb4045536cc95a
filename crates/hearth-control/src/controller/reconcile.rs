//! Reconcilers: each reads the store and the host and converges them. They
//! run at start and on every tick, and are safe to repeat.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hearth_store::{StateChange, VmFilter, VmRecord};
use hearth_types::{FailureCode, ProcessRef, Timestamp, VmDescription, VmId, VmState};

use super::{cleanup, watch, Controller};
use crate::lifecycle::{next, Transition};
use crate::restart::Ending;

/// Retention and orphan sweeps run every this many ticks.
const SLOW_EVERY: u64 = 20;

/// One pass of every reconciler. The active VMs are read once: each
/// change goes through the store's compare-and-set, so a record that
/// changed since is simply not changed again.
pub(super) async fn once(ctl: &Arc<Controller>) {
    let active = active(ctl).await;
    readiness_deadlines(ctl, &active).await;
    lost_processes(ctl, &active).await;
    super::idle::stop_idle(ctl, &active).await;
    super::persist::restart_due(ctl).await;
    cleanup::run_due_jobs(ctl).await;
    super::pool::reconcile(ctl).await;
    if ctl
        .ticks
        .fetch_add(1, Ordering::Relaxed)
        .is_multiple_of(SLOW_EVERY)
    {
        if let Err(e) = cleanup::apply_retention(ctl).await {
            tracing::error!(error = %e, "log retention failed");
        }
        orphans(ctl, &active).await;
        super::network::reconcile(ctl).await;
    }
}

async fn active(ctl: &Controller) -> Vec<VmRecord> {
    let filter = VmFilter {
        tenant: None,
        states: vec![
            VmState::Requested,
            VmState::Preparing,
            VmState::Booting,
            VmState::Ready,
            VmState::Stopping,
        ],
    };
    ctl.store.list_vms(&filter).await.unwrap_or_default()
}

/// VMs not ready by their deadline fail with `boot_timeout` and are stopped.
async fn readiness_deadlines(ctl: &Arc<Controller>, active: &[VmRecord]) {
    let now = Timestamp::now();
    for r in active {
        let waiting = matches!(
            r.vm.state,
            VmState::Requested | VmState::Preparing | VmState::Booting
        );
        if waiting && r.vm.ready_deadline <= now {
            let secs = r.readiness_secs();
            let message = format!(
                "not ready within {secs} s; last console line: {:?}",
                last_console_line(ctl, &r.vm.id)
            );
            cleanup::fail(ctl, &r.vm.id, FailureCode::BootTimeout, message).await;
            if !watch::request_stop(ctl, &r.vm.id) {
                cleanup::kill_recorded(r);
            }
        }
    }
}

fn last_console_line(ctl: &Controller, id: &VmId) -> String {
    let text =
        std::fs::read_to_string(ctl.config.data.vm(id).join("console.log")).unwrap_or_default();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_owned()
}

/// A VM meant to run whose hypervisor is gone and that no watcher follows.
async fn lost_processes(ctl: &Arc<Controller>, active: &[VmRecord]) {
    for r in active {
        let Some(process) = r.process else { continue };
        if r.vm.state.has_process()
            && !watch::is_watched(ctl, &r.vm.id)
            && !hearth_vmm::process::is_alive(process)
        {
            let message = format!("the hypervisor (pid {}) is gone", process.pid);
            super::confinement::release(ctl, &r.vm.id);
            cleanup::fail(ctl, &r.vm.id, FailureCode::HypervisorExited, message).await;
        }
    }
}

/// At start: adopt the VMs whose hypervisors still run; fail the rest. A
/// VM still `preparing` with a recorded process had its hypervisor spawned
/// (the create step records it at once) but not its `booting` stored: it
/// is adopted too, and moved on to `booting`.
pub(super) async fn adopt_all(ctl: &Arc<Controller>) {
    for r in active(ctl).await {
        let id = r.vm.id.clone();
        match (r.vm.state, r.process) {
            (state, Some(process)) if state.has_process() || state == VmState::Preparing => {
                adopt(ctl, &r, process).await;
            }
            _ => {
                cleanup::kill_recorded(&r);
                super::confinement::release(ctl, &id);
                super::prepare_files(ctl, &id).release_runtime();
                let message = format!("the controller stopped while the VM was {}", r.vm.state);
                cleanup::fail_as(ctl, &id, FailureCode::Lost, message, Ending::HostDown).await;
            }
        }
    }
    orphans(ctl, &active(ctl).await).await;
    super::network::reconcile(ctl).await;
}

/// Takes over the hypervisor of `r`, or fails the VM when it cannot be.
async fn adopt(ctl: &Arc<Controller>, r: &VmRecord, process: ProcessRef) {
    let id = r.vm.id.clone();
    let backend = Arc::clone(&ctl.backends[&r.vm.backend]);
    let running = match backend.adopt(&runtime_description(ctl, r), process).await {
        Ok(running) => running,
        Err(e) => {
            cleanup::kill_recorded(r);
            super::confinement::release(ctl, &id);
            super::prepare_files(ctl, &id).release_runtime();
            let message = format!("could not adopt it after a controller restart: {e}");
            let code = FailureCode::HypervisorExited;
            cleanup::fail_as(ctl, &id, code, message, Ending::HostDown).await;
            return;
        }
    };
    tracing::info!(vm = %id, pid = process.pid, state = %r.vm.state, "adopted a running VM");
    let mut state = r.vm.state;
    if state == VmState::Preparing {
        let message = format!(
            "booting: {} pid {} (adopted after a controller restart)",
            r.vm.backend, process.pid
        );
        if to_booting(ctl, &id, &message).await {
            state = VmState::Booting;
        }
    }
    super::agent::start_link(ctl, &id, r.vm.backend);
    let agent_ready = super::agent::ready_from_agent(ctl, &r.vm);
    watch::start(Arc::clone(ctl), id.clone(), running, agent_ready);
    if agent_ready && state == VmState::Booting {
        super::agent::ready_if_recorded(ctl, r).await;
    }
}

/// `preparing` -> `booting` through the lifecycle and the store's
/// compare-and-set; false when the VM moved meanwhile.
async fn to_booting(ctl: &Controller, id: &VmId, message: &str) -> bool {
    let Ok(to) = next(VmState::Preparing, Transition::Boot) else {
        return false;
    };
    let change = StateChange::to(to, Timestamp::now(), message);
    match ctl.store.transition(id, VmState::Preparing, &change).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(vm = %id, error = %e, "an adopted VM could not be marked booting");
            false
        }
    }
}

/// Adoption needs only where the VM's files are.
fn runtime_description(ctl: &Controller, r: &VmRecord) -> VmDescription {
    let files = super::prepare_files(ctl, &r.vm.id);
    VmDescription {
        id: r.vm.id.clone(),
        kernel: Default::default(),
        initramfs: None,
        disks: Vec::new(),
        vcpus: r.vm.vcpus,
        memory_mib: r.vm.memory_mib,
        cmdline: String::new(),
        run_dir: files.dir,
        console_log: files.console_log,
        channels: Vec::new(),
        memory: None,
    }
}

/// Hypervisors, VM directories and cgroups no active record accounts for.
async fn orphans(ctl: &Arc<Controller>, active: &[VmRecord]) {
    orphan_hypervisors_and_dirs(ctl, active).await;
    super::confinement::sweep_cgroups(ctl, active).await;
}

async fn orphan_hypervisors_and_dirs(ctl: &Arc<Controller>, active: &[VmRecord]) {
    let vms_dir = ctl.config.data.vms();
    for (pid, id) in hypervisors_under(&vms_dir) {
        // A VM still starting may have spawned its hypervisor a moment
        // before recording its pid; after a controller restart a starting
        // VM with a recorded process is adopted and the others are failed
        // first (adopt_all), so an unrecorded process is an orphan then.
        let owned = active.iter().any(|r| {
            r.vm.id == id
                && (r.process.is_some_and(|p| p.pid == pid)
                    || matches!(r.vm.state, VmState::Requested | VmState::Preparing))
        });
        if !owned {
            tracing::warn!(vm = %id, pid, "killing an orphaned hypervisor");
            // SAFETY: kill(2) on a process whose command line names our data directory.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
    let Ok(entries) = std::fs::read_dir(&vms_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<VmId>().ok())
        else {
            continue;
        };
        let known = active.iter().any(|r| r.vm.id == id)
            || matches!(ctl.store.vm(&id).await, Ok(Some(r)) if r.vm.state != VmState::Destroyed);
        if !known && older_than(&entry.path(), ctl.config.orphan_grace) {
            tracing::warn!(vm = %id, "removing an orphaned VM directory");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn older_than(path: &std::path::Path, age: Duration) -> bool {
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::now());
    modified.elapsed().unwrap_or_default() >= age
}

/// Detached processes (session leaders, as `hearth serve` starts them)
/// whose command line names a VM directory under `vms_dir`, or that run in
/// the jail of one (a jailed Firecracker names only paths in its jail).
fn hypervisors_under(vms_dir: &std::path::Path) -> Vec<(u32, VmId)> {
    // Absolute, so that another server's `.../data/vms/` never matches a
    // relative `data/vms/` of ours.
    let vms_dir = std::path::absolute(vms_dir).unwrap_or_else(|_| vms_dir.to_owned());
    let prefix = format!("{}/", vms_dir.display());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id() && is_session_leader(*pid))
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let id = vm_named_in(&String::from_utf8_lossy(&cmdline), &prefix)
                .or_else(|| hearth_vmm::firecracker::jail::jailed_vm(pid, &vms_dir))?;
            Some((pid, id))
        })
        .collect()
}

/// The VM whose directory (`prefix` + id) a command line names, as an
/// argument or an option's value (`path=...`, `unix:...`): the prefix must
/// start a path there, not sit inside a longer one.
fn vm_named_in(cmdline: &str, prefix: &str) -> Option<VmId> {
    let mut from = 0;
    while let Some(at) = cmdline[from..].find(prefix).map(|i| i + from) {
        let starts_a_path = at == 0 || cmdline[..at].ends_with(['\0', '=', ':', ',']);
        if starts_a_path {
            let id: String = cmdline[at + prefix.len()..]
                .chars()
                .take_while(|c| *c != '/' && *c != '\0' && *c != ',')
                .collect();
            if let Ok(id) = id.parse() {
                return Some(id);
            }
        }
        from = at + prefix.len();
    }
    None
}

/// Field 6 of /proc/PID/stat is the session id.
fn is_session_leader(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(i) = stat.rfind(')') else {
        return false;
    };
    stat[i + 2..]
        .split_whitespace()
        .nth(3)
        .and_then(|s| s.parse::<u32>().ok())
        == Some(pid)
}

#[cfg(test)]
mod named_tests {
    use super::*;

    #[test]
    fn only_a_path_starting_with_our_vms_dir_names_one_of_our_vms() {
        let ours = "/srv/hearth/data/vms/";
        let cmd = "qemu\0-qmp\0unix:/srv/hearth/data/vms/vm-0123456789ab/qmp.sock,server=on\0";
        assert_eq!(vm_named_in(cmd, ours), "vm-0123456789ab".parse().ok());
        let drive = "qemu\0-drive\0id=layer,file=/srv/hearth/data/vms/vm-0123456789ab/layer.ext4\0";
        assert_eq!(vm_named_in(drive, ours), "vm-0123456789ab".parse().ok());
        // Another server's data directory that merely ends the same way.
        let other = "qemu\0-qmp\0unix:/tmp/test/srv/hearth/data/vms/vm-0123456789ab/qmp.sock\0";
        assert_eq!(vm_named_in(other, ours), None);
        assert_eq!(vm_named_in("qemu\0-m\x00256\0", ours), None);
    }
}
