//! One watcher per running VM: it reads the console as it comes (readiness,
//! failure markers), stops the VM when asked, and turns the hypervisor's
//! exit into the VM's final state.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hearth_store::StateChange;
use hearth_types::console::ConsoleEvent;
use hearth_types::{FailureCode, Timestamp, VmId, VmState};
use hearth_vmm::console::LineSplitter;
use hearth_vmm::{ExitInfo, RunningVm};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, Notify};

use super::Controller;
use crate::lifecycle::{next, Transition};
use crate::restart::Ending;
use crate::verdict::{ConsoleFacts, FailReason};

/// How long a guest gets to shut down when asked before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What the controller keeps of a running VM.
#[derive(Debug)]
pub(super) struct LiveVm {
    /// Resubscribed for every follower.
    pub console: broadcast::Receiver<Bytes>,
    pub stop: Arc<Notify>,
}

/// Starts watching `running` in the background. With `agent_ready` the
/// console's readiness marker is not enough: the agent's `ready` is.
pub(super) fn start(ctl: Arc<Controller>, id: VmId, mut running: RunningVm, agent_ready: bool) {
    let console = running.console();
    let stop = Arc::new(Notify::new());
    let live = LiveVm {
        console: console.resubscribe(),
        stop: Arc::clone(&stop),
    };
    lock(&ctl).insert(id.clone(), live);
    tokio::spawn(async move {
        let facts = watch_console(&ctl, &id, &mut running, console, &stop, agent_ready).await;
        let exit = running.wait().await;
        ctl.links.stop(&id);
        lock(&ctl).remove(&id);
        on_exit(&ctl, &id, &facts, exit).await;
    });
}

fn lock(ctl: &Controller) -> std::sync::MutexGuard<'_, std::collections::HashMap<VmId, LiveVm>> {
    ctl.live
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Asks the watcher of `id` to stop its VM; false when none runs.
pub(super) fn request_stop(ctl: &Controller, id: &VmId) -> bool {
    match lock(ctl).get(id) {
        Some(live) => {
            live.stop.notify_one();
            true
        }
        None => false,
    }
}

pub(super) fn subscribe(ctl: &Controller, id: &VmId) -> Option<broadcast::Receiver<Bytes>> {
    lock(ctl).get(id).map(|live| live.console.resubscribe())
}

pub(super) fn is_watched(ctl: &Controller, id: &VmId) -> bool {
    lock(ctl).contains_key(id)
}

async fn watch_console(
    ctl: &Controller,
    id: &VmId,
    running: &mut RunningVm,
    mut console: broadcast::Receiver<Bytes>,
    stop: &Notify,
    agent_ready: bool,
) -> ConsoleFacts {
    let mut facts = ConsoleFacts::default();
    let mut lines = LineSplitter::default();
    loop {
        tokio::select! {
            chunk = console.recv() => match chunk {
                Ok(bytes) => {
                    for line in lines.push(&bytes) {
                        if facts.observe(&line) == Some(ConsoleEvent::Ready) && !agent_ready {
                            mark_ready(ctl, id, "ready: the guest reported readiness").await;
                        }
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return facts,
            },
            _ = stop.notified() => {
                // Only a guest that is up can answer a shutdown request.
                if facts.ready {
                    running.stop(STOP_GRACE).await;
                } else {
                    running.kill().await;
                }
            }
        }
    }
}

/// Moves a booting VM to ready (a VM in any other state is left alone).
pub(super) async fn mark_ready(ctl: &Controller, id: &VmId, message: &str) {
    let now = Timestamp::now();
    let mut change = StateChange::to(VmState::Ready, now, message);
    change.ready_at = Some(now);
    if let Ok(record) = ctl.store.transition(id, VmState::Booting, &change).await {
        // From this boot's start: a kept VM's restart is not its creation.
        let secs = now.since(record.boot_started_at()).as_secs_f64();
        ctl.counters
            .boot_seconds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(secs);
        tracing::info!(vm = %id, secs, "VM ready");
    }
}

/// The VM's final state from what its console said and how it ended.
async fn on_exit(ctl: &Arc<Controller>, id: &VmId, facts: &ConsoleFacts, exit: ExitInfo) {
    let _ = ctl.store.set_process(id, None).await;
    super::prepare_files(ctl, id).release_runtime();
    let Ok(Some(record)) = ctl.store.vm(id).await else {
        return;
    };
    let state = record.vm.state;
    if let Some(reason) = &facts.failure {
        let (code, message) = failure_of(reason);
        super::cleanup::fail(ctl, id, code, message).await;
        return;
    }
    let clean = exit.success() || (exit == ExitInfo::UNKNOWN && facts.powered_off);
    if state == VmState::Stopping || (clean && facts.powered_off) {
        let (message, ending) = if state == VmState::Stopping {
            ("stopped on request", Ending::StopRequested)
        } else {
            ("the guest powered off", Ending::PoweredOff)
        };
        super::cleanup::finish(ctl, id, state, Transition::Exited, message, ending).await;
        return;
    }
    if next(state, Transition::Fail(FailureCode::HypervisorExited)).is_ok() {
        let how = match memory_limit_kill(ctl, id) {
            Some(limit) => format!("was killed at the VM's memory limit ({limit})"),
            None => format!("ended ({exit})"),
        };
        let message = format!(
            "the hypervisor {how} while the VM was {state}; last console line: {:?}",
            facts.last_line
        );
        super::cleanup::fail(ctl, id, FailureCode::HypervisorExited, message).await;
    }
}

/// The memory limit the VM's cgroup killed its hypervisor at, if it did
/// (the counters were recorded when the hypervisor ended).
fn memory_limit_kill(ctl: &Controller, id: &VmId) -> Option<String> {
    let report = hearth_vmm::isolation::IsolationReport::read(&ctl.config.data.vm(id))?;
    let cgroup = report.cgroup.as_ref().filter(|_| report.oom_killed())?;
    let limit = report
        .exit
        .and_then(|c| c.memory_limit_bytes)
        .unwrap_or(cgroup.limits.memory_bytes);
    Some(format!("{} MiB, by its cgroup's OOM killer", limit >> 20))
}

fn failure_of(reason: &FailReason) -> (FailureCode, String) {
    let code = match reason {
        FailReason::KernelPanic(_) => FailureCode::KernelPanic,
        FailReason::RootNotMountable(_) => FailureCode::RootNotMountable,
        FailReason::MissingModule(_) => FailureCode::MissingModule,
        FailReason::Timeout { .. } => FailureCode::BootTimeout,
        // Interrupted: only `hearth vm run` says it, of its own signal.
        FailReason::HypervisorFailed(_)
        | FailReason::GuestStopped { .. }
        | FailReason::Interrupted(_) => FailureCode::HypervisorExited,
    };
    (code, reason.to_string())
}
