//! Persistent VMs: stop and start as lifecycle operations, what happens
//! when a kept VM's run ends (kept, never cleaned up by the grace period;
//! a restart planned by its policy), and the reconciler that carries
//! planned restarts out. A VM is persistent by a property of its record,
//! so exec, files, ports, network and the viewer work on it unchanged.

use std::sync::Arc;
use std::time::Duration;

use hearth_store::{NewBoot, StateChange, VmFilter, VmRecord};
use hearth_types::api::Vm;
use hearth_types::{Timestamp, VmState};

use super::{watch, ControlError, Controller, Scope};
use crate::agent_link::ExecEvent;
use crate::lifecycle::{next, Transition};
use crate::restart::{plan, Ending};

/// How long the guest gets to write its caches to its disk before a stop.
const FLUSH: Duration = Duration::from_secs(10);

/// What a VM's ended run leaves in its state change, and what follows it.
#[derive(Debug, Clone, Default)]
pub(super) struct AfterRun {
    /// When the grace-period cleanup may remove it; never for a kept VM.
    pub cleanup_after: Option<Timestamp>,
    /// When its restart policy starts it again, and the restart's number.
    pub restart: Option<(Timestamp, u32)>,
    /// An event that explains what becomes of a kept VM.
    pub note: Option<String>,
}

impl AfterRun {
    /// What follows the run of `record` that ended by `ending` at `now`.
    pub(super) fn of(ctl: &Controller, record: &VmRecord, ending: Ending, now: Timestamp) -> Self {
        let vm = &record.vm;
        if !vm.persistent {
            return AfterRun {
                cleanup_after: Some(now.plus(ctl.config.grace)),
                ..AfterRun::default()
            };
        }
        let healthy_for = vm.ready_at.map(|at| now.since(at));
        let planned = plan(
            vm.restart,
            ending,
            vm.restarts,
            healthy_for,
            &ctl.config.restart_backoff,
        );
        let note =
            match (planned, ending) {
                (Some(p), _) => format!(
                    "restart {} planned in {:.1} s (restart policy {})",
                    p.attempt,
                    p.delay.as_secs_f64(),
                    vm.restart
                ),
                (None, Ending::StopRequested) => return AfterRun::default(),
                (None, _) => {
                    format!(
                "kept {}: restart policy {} does not restart it after this; its disk stays \
                 (`hearth vm start {}` boots it again, `hearth vm rm {}` removes it)",
                if ending == Ending::PoweredOff { "stopped" } else { "failed" },
                vm.restart,
                vm.id,
                vm.id
            )
                }
            };
        AfterRun {
            cleanup_after: None,
            restart: planned.map(|p| (now.plus(p.delay), p.attempt)),
            note: Some(note),
        }
    }

    pub(super) fn apply(&self, change: &mut StateChange) {
        change.cleanup_after = self.cleanup_after;
        change.restart = self.restart;
    }

    /// After the state change was stored: the cleanup scheduled, the note
    /// recorded.
    pub(super) async fn follow_up(&self, ctl: &Controller, id: &hearth_types::VmId) {
        if let Some(due) = self.cleanup_after {
            if !removal_pending(ctl, id).await {
                super::cleanup::schedule_destroy(ctl, id, due).await;
            }
        }
        if let Some(note) = &self.note {
            if let Err(e) = ctl.store.add_event(id, Timestamp::now(), note).await {
                tracing::warn!(vm = %id, error = %e, "could not record what becomes of a kept VM");
            }
        }
    }
}

/// Whether `rm` already asked for the VM's removal (its job then does what
/// a grace-period cleanup would, sooner).
async fn removal_pending(ctl: &Controller, id: &hearth_types::VmId) -> bool {
    let jobs = ctl.store.jobs_for(id).await.unwrap_or_default();
    jobs.iter().any(|j| j.kind == hearth_store::JobKind::Remove)
}

/// `POST /v1/vms/{id}/stop`: a running VM is shut down (any VM; a
/// persistent one keeps its disk, another is cleaned up after its grace);
/// a stopped or failed one stays so, its planned restart cancelled.
pub(super) async fn stop(
    ctl: &Arc<Controller>,
    scope: &Scope,
    id: &hearth_types::VmId,
) -> Result<Vm, ControlError> {
    let record = ctl.record(scope, id).await?;
    stop_record(ctl, &record, "stopping on request").await
}

/// Stops `record`'s VM with `message` as the event (a request, the idle
/// policy).
pub(super) async fn stop_record(
    ctl: &Arc<Controller>,
    record: &VmRecord,
    message: &str,
) -> Result<Vm, ControlError> {
    let id = &record.vm.id;
    let state = record.vm.state;
    match state {
        VmState::Stopping | VmState::Destroyed => Ok(record.vm.clone()),
        VmState::Stopped | VmState::Failed => {
            let note = "restart cancelled: a stop was asked for";
            Ok(ctl
                .store
                .cancel_restart(id, Timestamp::now(), note)
                .await?
                .vm)
        }
        _ => {
            let to = next(state, Transition::Stop)?;
            let change = StateChange::to(to, Timestamp::now(), message);
            let vm = ctl.store.transition(id, state, &change).await?.vm;
            let (ctl, record) = (Arc::clone(ctl), record.clone());
            tokio::spawn(async move {
                if record.vm.persistent {
                    flush_disk(&ctl, &record.vm.id).await;
                }
                if !watch::request_stop(&ctl, &record.vm.id) && state.has_process() {
                    super::cleanup::kill_recorded(&record);
                }
            });
            Ok(vm)
        }
    }
}

/// Has the guest agent of a kept VM run `sync` before its hypervisor is
/// asked to shut down, so that a stop which ends in a kill (a guest that
/// ignores the power button) loses nothing written before it. Best
/// effort, bounded by [`FLUSH`].
async fn flush_disk(ctl: &Controller, id: &hearth_types::VmId) {
    let Some(link) = ctl.links.get(id).filter(|l| l.connected()) else {
        return;
    };
    let Some(mut events) = link.exec(vec!["sync".into()], Some(FLUSH), false) else {
        return;
    };
    let ended = async {
        while let Some(event) = events.recv().await {
            if !matches!(event, ExecEvent::Output(..)) {
                return event;
            }
        }
        ExecEvent::Lost
    };
    match tokio::time::timeout(FLUSH, ended).await {
        Ok(ExecEvent::Exit { code: Some(0), .. }) => {}
        other => {
            tracing::warn!(vm = %id, outcome = ?other, "the guest's sync before a stop did not succeed")
        }
    }
}

/// `POST /v1/vms/{id}/start`: a stopped or failed persistent VM boots
/// again from its disk; a running one is left as it is.
pub(super) async fn start(
    ctl: &Arc<Controller>,
    scope: &Scope,
    id: &hearth_types::VmId,
) -> Result<Vm, ControlError> {
    let record = ctl.record(scope, id).await?;
    if !record.vm.persistent {
        return Err(ControlError::Invalid(format!(
            "VM {id} is not persistent: its writable layer went with its last run, so it cannot \
             start again; create a VM with \"persistent\": true (`hearth vm create --persistent`) \
             to keep a disk across boots"
        )));
    }
    if matches!(
        record.vm.state,
        VmState::Requested | VmState::Preparing | VmState::Booting | VmState::Ready
    ) {
        return Ok(record.vm);
    }
    boot_again(ctl, &record, "starting on request", 0).await
}

/// Moves a kept VM from stopped or failed to preparing (compare-and-set,
/// with `message` as the event) and boots it in the background.
async fn boot_again(
    ctl: &Arc<Controller>,
    record: &VmRecord,
    message: &str,
    restarts: u32,
) -> Result<Vm, ControlError> {
    let id = &record.vm.id;
    let state = record.vm.state;
    let to = next(state, Transition::Start)?;
    // Checked at create, so this fails only for a row changed since: the
    // VM then stays as it is rather than boot with a policy it lacks.
    let network = match &record.vm.network_policy {
        Some(policy) => Some(
            super::tenant_network::stored_nic(ctl, &record.vm.tenant, policy)
                .await
                .map_err(|why| {
                    ControlError::Invalid(format!("VM {id}'s stored network policy: {why}"))
                })?,
        ),
        None => None,
    };
    let now = Timestamp::now();
    let mut change = StateChange::to(to, now, message);
    let deadline = now.plus(Duration::from_secs(record.readiness_secs()));
    change.new_boot = Some(NewBoot {
        ready_deadline: deadline,
        restarts,
    });
    let started = ctl.store.transition(id, state, &change).await?;
    // Only the one that won the compare-and-set moves the logs.
    if let Err(e) = super::vm_files(ctl, &record.vm).rotate_logs() {
        tracing::warn!(vm = %id, error = %e, "the last boot's logs were not moved aside");
    }
    ctl.activity.forget(id);
    tracing::info!(vm = %id, restarts, "a kept VM boots again");
    tokio::spawn(super::create::boot(
        Arc::clone(ctl),
        started.clone(),
        network,
        false,
    ));
    Ok(started.vm)
}

/// The reconciler of restart policies: kept VMs whose planned restart is
/// due boot again; the event says why, with the failed boot's diagnosis.
pub(super) async fn restart_due(ctl: &Arc<Controller>) {
    let filter = VmFilter {
        tenant: None,
        states: vec![VmState::Stopped, VmState::Failed],
    };
    let Ok(ended) = ctl.store.list_vms(&filter).await else {
        return;
    };
    let now = Timestamp::now();
    let due = ended
        .into_iter()
        .filter(|r| r.vm.persistent && r.vm.restart_at.is_some_and(|at| at <= now));
    for record in due {
        let why = restart_reason(ctl, &record).await;
        if let Err(e) = boot_again(ctl, &record, &why, record.vm.restarts).await {
            let id = &record.vm.id;
            tracing::warn!(vm = %id, error = %hearth_types::error_chain(&e), "a planned restart did not start");
        }
    }
}

/// "restarting (restart policy on-failure, restart 2): it failed
/// (hypervisor_exited): ...; diagnosis: ...".
async fn restart_reason(ctl: &Controller, record: &VmRecord) -> String {
    let vm = &record.vm;
    let mut why = format!(
        "restarting (restart policy {}, restart {}): ",
        vm.restart, vm.restarts
    );
    match &vm.failure {
        Some(f) => why.push_str(&format!("it failed ({}): {}", f.code, f.message)),
        None => why.push_str("it stopped without a stop being asked for"),
    }
    let diagnosis = match super::diagnose::diagnosis(ctl, record).await {
        Ok(d) => match d.findings.first() {
            Some(f) => format!("{} [{}]", f.cause, f.rule),
            None => "its logs show no cause".to_owned(),
        },
        Err(e) => format!("none ({})", hearth_types::error_chain(&e)),
    };
    why.push_str(&format!("; diagnosis: {diagnosis}"));
    why
}
