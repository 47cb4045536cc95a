//! The `vms` and `vm_events` tables. Every change to a VM appends its event
//! in the same transaction, so the log never misses a state.

use hearth_types::api::{Vm, VmEvent};
use hearth_types::{Failure, FailureCode, Timestamp, VmId, VmState};
use rusqlite::{named_params, params_from_iter, Connection, Row, Transaction, TransactionBehavior};

use super::cells::{all, first, Cells};
use super::error::{constraint, to_i64, Constraint, Fail};
use crate::{ProcessRef, StateChange, StoreError, VmFilter, VmRecord};

const COLUMNS: &str = "id, tenant, state, failure_code, failure_message, held, image, backend, vcpus, \
     memory_mib, command, created_at, updated_at, ready_at, ready_deadline, cleanup_after, pid, pid_start_ticks, \
     persistent, disk_mib, restart_policy, idle_stop_secs, readiness_secs, restarts, restart_at, \
     network_policy";

/// Inserts the VM and its first event, `requested`.
pub(super) fn insert(conn: &mut Connection, rec: &VmRecord) -> Result<(), Fail> {
    let vm = &rec.vm;
    let command = serde_json::to_string(&vm.command)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
    let network_policy = vm
        .network_policy
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
    let (pid, start_ticks) = process_columns(rec.process)?;
    let tx = immediate(conn)?;
    let inserted = tx.execute(
        &format!(
            "INSERT INTO vms ({COLUMNS}) VALUES (:id, :tenant, :state, :failure_code, :failure_message, \
             :held, :image, :backend, :vcpus, :memory_mib, :command, :created_at, :updated_at, \
             :ready_at, :ready_deadline, :cleanup_after, :pid, :pid_start_ticks, :persistent, \
             :disk_mib, :restart_policy, :idle_stop_secs, :readiness_secs, :restarts, :restart_at, :network_policy)"
        ),
        named_params! {
            ":id": vm.id.as_str(),
            ":tenant": vm.tenant.as_str(),
            ":state": vm.state.as_str(),
            ":failure_code": vm.failure.as_ref().map(|f| f.code.as_str()),
            ":failure_message": vm.failure.as_ref().map(|f| f.message.as_str()),
            ":held": vm.held,
            ":image": vm.image,
            ":backend": vm.backend.as_str(),
            ":vcpus": vm.vcpus,
            ":memory_mib": vm.memory_mib,
            ":command": command,
            ":created_at": vm.created_at.as_millis(),
            ":updated_at": vm.updated_at.as_millis(),
            ":ready_at": vm.ready_at.map(Timestamp::as_millis),
            ":ready_deadline": vm.ready_deadline.as_millis(),
            ":cleanup_after": vm.cleanup_after.map(Timestamp::as_millis),
            ":pid": pid,
            ":pid_start_ticks": start_ticks,
            ":persistent": vm.persistent,
            ":disk_mib": vm.disk_mib,
            ":restart_policy": vm.restart.as_str(),
            ":idle_stop_secs": vm.idle_stop_secs.map(to_i64).transpose()?,
            ":readiness_secs": rec.readiness_secs.map(to_i64).transpose()?,
            ":restarts": vm.restarts,
            ":restart_at": vm.restart_at.map(Timestamp::as_millis),
            ":network_policy": network_policy,
        },
    );
    if inserted.as_ref().err().and_then(constraint) == Some(Constraint::PrimaryKey) {
        return Err(StoreError::Duplicate {
            what: format!("VM {}", vm.id),
        }
        .into());
    }
    inserted?;
    append_event(&tx, &vm.id, vm.created_at, "requested")?;
    tx.commit()?;
    Ok(())
}

pub(super) fn get(conn: &Connection, id: &VmId) -> Result<Option<VmRecord>, Fail> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM vms WHERE id = ?1"))?;
    first(&mut stmt, [id.as_str()], decode)
}

pub(super) fn list(conn: &Connection, filter: &VmFilter) -> Result<Vec<VmRecord>, Fail> {
    let mut sql = format!("SELECT {COLUMNS} FROM vms WHERE 1 = 1");
    let mut args: Vec<&str> = Vec::new();
    if let Some(tenant) = &filter.tenant {
        sql.push_str(" AND tenant = ?");
        args.push(tenant.as_str());
    }
    if !filter.states.is_empty() {
        let marks = vec!["?"; filter.states.len()].join(", ");
        sql.push_str(&format!(" AND state IN ({marks})"));
        args.extend(filter.states.iter().map(|s| s.as_str()));
    }
    sql.push_str(" ORDER BY created_at, id");
    let mut stmt = conn.prepare_cached(&sql)?;
    all(&mut stmt, params_from_iter(args), decode)
}

/// The compare-and-set at the heart of the lifecycle: moves the VM from
/// `expected` to `change.to` only if it is still in `expected`.
pub(super) fn transition(
    conn: &mut Connection,
    id: &VmId,
    expected: VmState,
    change: &StateChange,
) -> Result<VmRecord, Fail> {
    let tx = immediate(conn)?;
    let actual = state(&tx, id)?;
    if actual != expected {
        return Err(StoreError::Conflict {
            id: id.clone(),
            expected,
            actual,
        }
        .into());
    }
    tx.execute(
        "UPDATE vms SET state = :state, updated_at = :at, \
             failure_code = COALESCE(:failure_code, failure_code), \
             failure_message = COALESCE(:failure_message, failure_message), \
             ready_at = COALESCE(:ready_at, ready_at), \
             cleanup_after = COALESCE(:cleanup_after, cleanup_after) \
         WHERE id = :id",
        named_params! {
            ":id": id.as_str(),
            ":state": change.to.as_str(),
            ":at": change.at.as_millis(),
            ":failure_code": change.failure.as_ref().map(|f| f.code.as_str()),
            ":failure_message": change.failure.as_ref().map(|f| f.message.as_str()),
            ":ready_at": change.ready_at.map(Timestamp::as_millis),
            ":cleanup_after": change.cleanup_after.map(Timestamp::as_millis),
        },
    )?;
    if let Some(boot) = change.new_boot {
        new_boot(&tx, id, boot)?;
    }
    if let Some((at, restarts)) = change.restart {
        tx.execute(
            "UPDATE vms SET restart_at = ?1, restarts = ?2 WHERE id = ?3",
            (at.as_millis(), restarts, id.as_str()),
        )?;
    }
    append_event(&tx, id, change.at, &change.message)?;
    let rec = existing(&tx, id)?;
    tx.commit()?;
    Ok(rec)
}

/// A stopped or failed VM boots again: what its last run left is
/// cleared (the events keep it).
fn new_boot(tx: &Transaction<'_>, id: &VmId, boot: crate::NewBoot) -> rusqlite::Result<usize> {
    tx.execute(
        "UPDATE vms SET failure_code = NULL, failure_message = NULL, ready_at = NULL, \
             cleanup_after = NULL, restart_at = NULL, ready_deadline = ?1, restarts = ?2 \
         WHERE id = ?3",
        (boot.ready_deadline.as_millis(), boot.restarts, id.as_str()),
    )
}

/// Drops the VM's planned restart and notes why, in one transaction.
pub(super) fn cancel_restart(
    conn: &mut Connection,
    id: &VmId,
    at: Timestamp,
    message: &str,
) -> Result<VmRecord, Fail> {
    let tx = immediate(conn)?;
    let changed = tx.execute(
        "UPDATE vms SET restart_at = NULL, updated_at = ?1 WHERE id = ?2 AND restart_at IS NOT NULL",
        (at.as_millis(), id.as_str()),
    )?;
    if changed > 0 {
        append_event(&tx, id, at, message)?;
    }
    let rec = existing(&tx, id)?;
    tx.commit()?;
    Ok(rec)
}

pub(super) fn set_process(
    conn: &Connection,
    id: &VmId,
    process: Option<ProcessRef>,
) -> Result<(), Fail> {
    let (pid, start_ticks) = process_columns(process)?;
    let changed = conn.execute(
        "UPDATE vms SET pid = ?1, pid_start_ticks = ?2 WHERE id = ?3",
        (pid, start_ticks, id.as_str()),
    )?;
    found(changed, id)
}

pub(super) fn set_network_policy(
    conn: &Connection,
    id: &VmId,
    policy: &hearth_types::api::NetworkPolicy,
) -> Result<(), Fail> {
    let policy = serde_json::to_string(policy)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let changed = conn.execute(
        "UPDATE vms SET network_policy = ?1 WHERE id = ?2",
        (policy, id.as_str()),
    )?;
    found(changed, id)
}

pub(super) fn set_held(
    conn: &mut Connection,
    id: &VmId,
    held: bool,
    at: Timestamp,
) -> Result<VmRecord, Fail> {
    let tx = immediate(conn)?;
    let changed = tx.execute(
        "UPDATE vms SET held = ?1, updated_at = ?2 WHERE id = ?3",
        (held, at.as_millis(), id.as_str()),
    )?;
    found(changed, id)?;
    append_event(&tx, id, at, if held { "held" } else { "released" })?;
    let rec = existing(&tx, id)?;
    tx.commit()?;
    Ok(rec)
}

pub(super) fn add_event(
    conn: &Connection,
    id: &VmId,
    at: Timestamp,
    message: &str,
) -> Result<(), Fail> {
    append_event(conn, id, at, message)
}

/// `NotFound` for an unknown VM (every VM has at least its `requested`
/// event, so an empty log means there is no such VM).
pub(super) fn events(conn: &Connection, id: &VmId) -> Result<Vec<VmEvent>, Fail> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, vm_id, at, state, message FROM vm_events WHERE vm_id = ?1 ORDER BY seq",
    )?;
    let events = all(&mut stmt, [id.as_str()], decode_event)?;
    if events.is_empty() {
        state(conn, id)?;
    }
    Ok(events)
}

/// Appends an event carrying the VM's current state; `NotFound` if there is
/// no such VM.
fn append_event(conn: &Connection, id: &VmId, at: Timestamp, message: &str) -> Result<(), Fail> {
    let added = conn.prepare_cached(
        "INSERT INTO vm_events (vm_id, at, state, message) SELECT id, ?2, state, ?3 FROM vms WHERE id = ?1",
    )?
    .execute((id.as_str(), at.as_millis(), message))?;
    found(added, id)
}

fn state(conn: &Connection, id: &VmId) -> Result<VmState, Fail> {
    let mut stmt = conn.prepare_cached("SELECT state FROM vms WHERE id = ?1")?;
    let decode =
        |row: &Row<'_>| -> Result<VmState, Fail> { Ok(Cells::new(row, "VM").word("state")?) };
    let state = first(&mut stmt, [id.as_str()], decode)?;
    state.ok_or_else(|| StoreError::NotFound(id.clone()).into())
}

fn existing(conn: &Connection, id: &VmId) -> Result<VmRecord, Fail> {
    get(conn, id)?.ok_or_else(|| StoreError::NotFound(id.clone()).into())
}

fn found(changed: usize, id: &VmId) -> Result<(), Fail> {
    if changed == 0 {
        return Err(StoreError::NotFound(id.clone()).into());
    }
    Ok(())
}

fn immediate(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

fn process_columns(process: Option<ProcessRef>) -> rusqlite::Result<(Option<u32>, Option<i64>)> {
    match process {
        Some(p) => Ok((Some(p.pid), Some(to_i64(p.start_ticks)?))),
        None => Ok((None, None)),
    }
}

fn decode(row: &Row<'_>) -> Result<VmRecord, Fail> {
    let mut cells = Cells::new(row, "a VM row");
    let id: VmId = cells.word("id")?;
    cells.name(format!("VM {id}"));
    let vm = Vm {
        tenant: cells.word("tenant")?,
        state: cells.word("state")?,
        failure: decode_failure(&cells)?,
        held: cells.get("held")?,
        image: cells.get("image")?,
        backend: cells.word("backend")?,
        vcpus: cells.get("vcpus")?,
        memory_mib: cells.get("memory_mib")?,
        command: cells.json("command")?,
        created_at: cells.time("created_at")?,
        updated_at: cells.time("updated_at")?,
        ready_at: cells.opt_time("ready_at")?,
        ready_deadline: cells.time("ready_deadline")?,
        cleanup_after: cells.opt_time("cleanup_after")?,
        persistent: cells.get("persistent")?,
        disk_mib: cells.get("disk_mib")?,
        restart: cells.word("restart_policy")?,
        idle_stop_secs: cells.opt_unsigned("idle_stop_secs")?,
        restarts: cells.get("restarts")?,
        restart_at: cells.opt_time("restart_at")?,
        network_policy: cells.opt_json("network_policy")?,
        id,
    };
    let readiness_secs = cells.opt_unsigned("readiness_secs")?;
    let process = match (cells.get("pid")?, cells.opt_unsigned("pid_start_ticks")?) {
        (Some(pid), Some(start_ticks)) => Some(ProcessRef { pid, start_ticks }),
        (None, None) => None,
        _ => {
            return Err(cells
                .corrupt(
                    "pid",
                    "a pid without a start time, or a start time without a pid",
                )
                .into())
        }
    };
    Ok(VmRecord {
        vm,
        process,
        readiness_secs,
    })
}

fn decode_failure(cells: &Cells<'_, '_>) -> Result<Option<Failure>, StoreError> {
    match (
        cells.opt_word::<FailureCode>("failure_code")?,
        cells.get("failure_message")?,
    ) {
        (Some(code), Some(message)) => Ok(Some(Failure { code, message })),
        (None, None) => Ok(None),
        _ => Err(cells.corrupt(
            "failure_code",
            "a failure code without a message, or a message without a code",
        )),
    }
}

fn decode_event(row: &Row<'_>) -> Result<VmEvent, Fail> {
    let mut cells = Cells::new(row, "an event row");
    let seq: i64 = cells.get("seq")?;
    let vm: String = cells.get("vm_id")?;
    cells.name(format!("event {seq} of VM {vm}"));
    Ok(VmEvent {
        seq,
        at: cells.time("at")?,
        state: cells.word("state")?,
        message: cells.get("message")?,
    })
}
