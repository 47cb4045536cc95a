//! Ending a VM's life: the final state with its cleanup time, and the one
//! path every deletion takes — archive the logs, then remove the files
//! (a persistent VM's disk with them), then mark the VM destroyed. Cleanup
//! runs as persistent, idempotent jobs with leases; nothing younger than
//! its grace is removed, a held VM is never removed, and a persistent VM
//! is removed only by `rm` (its own job kind), never by the grace period.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hearth_store::{ArchiveRecord, Job, JobKind, NewJob, StateChange, VmRecord};
use hearth_types::api::Vm;
use hearth_types::{Failure, FailureCode, Timestamp, VmId, VmState};

use super::persist::AfterRun;
use super::{watch, ControlError, Controller};
use crate::lifecycle::{next, Transition};
use crate::restart::Ending;

/// The logs a VM leaves, archived before its directory goes (with the
/// record of its isolation, which the diagnosis reads).
const LOG_FILES: &[&str] = &[
    "console.log",
    "hypervisor.log",
    "firecracker.log",
    "console.previous.log",
    "hypervisor.previous.log",
    hearth_vmm::isolation::REPORT_FILE,
];
/// How long a job is leased to one runner.
const LEASE: Duration = Duration::from_secs(60);
/// When a job that could not finish is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Fails `id` (from whatever active state it is in) and schedules its
/// cleanup after the grace period, or for a persistent VM keeps it and
/// plans its restart by its policy. Every failure (a create step, a lost
/// or exited hypervisor, a boot timeout) comes through here, so this is
/// where the server's log says so, once, by the one that won the race.
pub(super) async fn fail(ctl: &Controller, id: &VmId, code: FailureCode, message: String) {
    fail_as(ctl, id, code, message, Ending::Failed).await
}

/// [`fail`], for a run that ended by `ending` (a VM stopping on request
/// that fails on its way down was still asked to stop).
pub(super) async fn fail_as(
    ctl: &Controller,
    id: &VmId,
    code: FailureCode,
    message: String,
    ending: Ending,
) {
    let Ok(Some(record)) = ctl.store.vm(id).await else {
        return;
    };
    let state = record.vm.state;
    let Ok(to) = next(state, Transition::Fail(code)) else {
        return;
    };
    let ending = if state == VmState::Stopping {
        Ending::StopRequested
    } else {
        ending
    };
    let now = Timestamp::now();
    let mut change = StateChange::to(to, now, format!("failed ({code}): {message}"));
    change.failure = Some(Failure {
        code,
        message: message.clone(),
    });
    let after = AfterRun::of(ctl, &record, ending, now);
    after.apply(&mut change);
    if ctl.store.transition(id, state, &change).await.is_ok() {
        tracing::warn!(vm = %id, code = %code, from = %state, reason = %message, "VM failed");
        after.follow_up(ctl, id).await;
    }
}

/// Moves `id` out of `from` by `t` (to stopped) and schedules its cleanup
/// (or keeps a persistent VM, restarting it if its policy says so).
pub(super) async fn finish(
    ctl: &Controller,
    id: &VmId,
    from: VmState,
    t: Transition,
    message: &str,
    ending: Ending,
) {
    let Ok(to) = next(from, t) else { return };
    let Ok(Some(record)) = ctl.store.vm(id).await else {
        return;
    };
    let now = Timestamp::now();
    let mut change = StateChange::to(to, now, message);
    let after = AfterRun::of(ctl, &record, ending, now);
    after.apply(&mut change);
    if ctl.store.transition(id, from, &change).await.is_ok() {
        after.follow_up(ctl, id).await;
    }
}

/// The grace-period cleanup of `id` (which never removes a persistent VM).
pub(super) async fn schedule_destroy(ctl: &Controller, id: &VmId, due: Timestamp) {
    schedule(ctl, id, JobKind::Destroy, due).await
}

async fn schedule(ctl: &Controller, id: &VmId, kind: JobKind, due: Timestamp) {
    let job = NewJob {
        kind,
        vm: id.clone(),
        due,
    };
    if let Err(e) = ctl.store.enqueue_job(&job).await {
        tracing::error!(vm = %id, error = %e, "could not schedule cleanup; the orphan reconciler will find it");
    }
}

/// `hearth vm rm`: stop if running, then destroy as soon as it is stopped.
pub(super) async fn destroy_now(
    ctl: &Arc<Controller>,
    record: VmRecord,
) -> Result<Vm, ControlError> {
    let id = record.vm.id.clone();
    if record.vm.held {
        return Err(ControlError::Held(id));
    }
    match record.vm.state {
        VmState::Destroyed => Ok(record.vm),
        VmState::Stopped | VmState::Failed => Ok(destroy(ctl, &id).await?.unwrap_or(record.vm)),
        state => {
            let to = next(state, Transition::Stop)?;
            let change = StateChange::to(to, Timestamp::now(), "stopping: destroy requested");
            let vm = ctl.store.transition(&id, state, &change).await?.vm;
            if !watch::request_stop(ctl, &id) && state.has_process() {
                kill_recorded(&record);
            }
            schedule(ctl, &id, JobKind::Remove, Timestamp::now()).await;
            Ok(vm)
        }
    }
}

/// Kills a recorded hypervisor no watcher owns (after a failed adoption).
pub(super) fn kill_recorded(record: &VmRecord) {
    if let Some(p) = record.process.filter(|p| hearth_vmm::process::is_alive(*p)) {
        // SAFETY: kill(2) on a pid whose start time was just checked to be the VM's.
        unsafe {
            libc::kill(p.pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// Runs the cleanup jobs that are due.
pub(super) async fn run_due_jobs(ctl: &Arc<Controller>) {
    let now = Timestamp::now();
    let owner = format!("controller-{}", std::process::id());
    let jobs = match ctl
        .store
        .lease_due_jobs(now, now.plus(LEASE), &owner, 16)
        .await
    {
        Ok(jobs) => jobs,
        Err(e) => return tracing::error!(error = %e, "could not lease cleanup jobs"),
    };
    for job in jobs {
        run_job(ctl, &job).await;
    }
}

async fn run_job(ctl: &Arc<Controller>, job: &Job) {
    let result = match job.kind {
        JobKind::Destroy | JobKind::Remove => destroy_job(ctl, &job.vm, job.kind).await,
    };
    let store = &ctl.store;
    let outcome = match result {
        Ok(None) => store.finish_job(job.id).await,
        Ok(Some((why, due))) => store.retry_job(job.id, &why, due).await,
        Err(e) => {
            store
                .retry_job(job.id, &e.to_string(), Timestamp::now().plus(RETRY_AFTER))
                .await
        }
    };
    if let Err(e) = outcome {
        tracing::error!(vm = %job.vm, error = %e, "could not update cleanup job");
    }
}

/// Ok(None): done. Ok(Some): not yet (why, when to look again).
async fn destroy_job(
    ctl: &Arc<Controller>,
    id: &VmId,
    kind: JobKind,
) -> Result<Option<(String, Timestamp)>, ControlError> {
    let Some(record) = ctl.store.vm(id).await? else {
        return Ok(None);
    };
    if record.vm.persistent && kind != JobKind::Remove {
        tracing::info!(vm = %id, "the grace-period cleanup keeps a persistent VM: only `rm` removes it");
        return Ok(None);
    }
    let now = Timestamp::now();
    if record.vm.held {
        return Ok(Some((
            "held: postponed until released".into(),
            now.plus(ctl.config.grace),
        )));
    }
    if record.vm.state.is_active() {
        return Ok(Some((
            format!("still {}: waiting for it to stop", record.vm.state),
            now.plus(RETRY_AFTER),
        )));
    }
    destroy(ctl, id).await?;
    Ok(None)
}

/// Removes the VM's network, archives the logs, removes the VM's files,
/// marks it destroyed. Safe to repeat: each part checks what is already
/// done.
async fn destroy(ctl: &Controller, id: &VmId) -> Result<Option<Vm>, ControlError> {
    let Some(record) = ctl.store.vm(id).await? else {
        return Ok(None);
    };
    let state = record.vm.state;
    if state == VmState::Destroyed {
        return Ok(Some(record.vm));
    }
    next(state, Transition::Destroy)?;
    // First, so that a failure here retries the whole job cleanly.
    ctl.networks.detach(id).await?;
    archive(ctl, &record).await?;
    let dir = ctl.config.data.vm(id);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|source| ControlError::Io {
            what: dir.display().to_string(),
            source,
        })?;
    }
    // The disk is gone; its key goes too (a failure retries the job).
    if let (true, Some(keys)) = (record.vm.persistent, &ctl.config.disk_keys) {
        keys.destroy(&record.vm)
            .await
            .map_err(|why| ControlError::Io {
                what: format!("VM {id}'s disk key"),
                source: std::io::Error::other(why),
            })?;
    }
    if let Err(e) = ctl.isolation.remove_cgroup(id) {
        tracing::warn!(vm = %id, error = %e, "the VM's cgroup stays; the orphan sweep tries again");
    }
    let change = StateChange::to(
        VmState::Destroyed,
        Timestamp::now(),
        "destroyed: logs archived, files removed",
    );
    let vm = ctl.store.transition(id, state, &change).await?.vm;
    ctl.counters.cleaned.fetch_add(1, Ordering::Relaxed);
    tracing::info!(vm = %id, "VM destroyed");
    Ok(Some(vm))
}

/// Copies the VM's logs to its archive directory and records it.
async fn archive(ctl: &Controller, record: &VmRecord) -> Result<(), ControlError> {
    let id = &record.vm.id;
    let (from, to) = (ctl.config.data.vm(id), ctl.config.data.archive(id));
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |source| ControlError::Io { what, source }
    };
    std::fs::create_dir_all(&to).map_err(io(&to))?;
    let mut bytes = 0;
    for name in LOG_FILES {
        let src = from.join(name);
        bytes += copy_regular(&src, &to.join(name)).map_err(io(&src))?;
    }
    let archive = ArchiveRecord {
        vm: id.clone(),
        tenant: record.vm.tenant.clone(),
        path: to,
        bytes,
        created_at: Timestamp::now(),
    };
    ctl.store.insert_archive(&archive).await?;
    Ok(())
}

/// Copies `src` if it is a regular file, never following a link: a VM's
/// directory was writable by its hypervisor's user, which may have put a
/// link to a file of the host's where a log was expected. 0 bytes when
/// there is no such file.
fn copy_regular(src: &Path, dest: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut from = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(src)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        // A link (ELOOP) or a socket (ENXIO): not a log.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENXIO)) => return Ok(0),
        Err(e) => return Err(e),
    };
    if !from.metadata()?.is_file() {
        return Ok(0);
    }
    let mut to = std::fs::File::create(dest)?;
    std::io::copy(&mut from, &mut to)
}

/// Prunes archives past the retention age, then the oldest while the total
/// is over the size limit; a pruned VM's egress refusal totals go with its
/// archive (kept until then, as what its network refused).
pub(super) async fn apply_retention(ctl: &Controller) -> Result<(), ControlError> {
    let archives = ctl.store.archives().await?;
    let oldest_kept = Timestamp::now().as_millis() - ctl.config.retention_age.as_millis() as i64;
    let mut total: u64 = archives.iter().map(|a| a.bytes).sum();
    for a in &archives {
        if a.created_at.as_millis() >= oldest_kept && total <= ctl.config.retention_bytes {
            continue;
        }
        let _ = std::fs::remove_dir_all(&a.path);
        ctl.store.delete_archive(&a.vm).await?;
        ctl.store.delete_egress_refusals(&a.vm).await?;
        total = total.saturating_sub(a.bytes);
        tracing::info!(vm = %a.vm, bytes = a.bytes, "archived logs pruned by retention");
    }
    Ok(())
}
