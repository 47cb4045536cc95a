//! The `jobs` table: cleanup work with a due time, leased to one worker at a
//! time. A lease expires on its own, so a worker that dies mid-job only
//! delays the job until `lease_until`.

use hearth_types::{Timestamp, VmId};
use rusqlite::{named_params, Connection, Row, TransactionBehavior};

use super::cells::{all, Cells};
use super::error::{constraint, Constraint, Fail};
use crate::{Job, JobKind, NewJob, StoreError};

const COLUMNS: &str = "id, kind, vm_id, due, attempts, last_error, lease_owner, lease_until";

/// A partial unique index allows one pending job per kind and VM, so a
/// second enqueue only moves the pending job's due time earlier (a destroy
/// asked for now must not wait for a cleanup scheduled after a grace).
/// `NotFound` for an unknown VM.
pub(super) fn enqueue(conn: &Connection, job: &NewJob) -> Result<(), Fail> {
    let inserted = conn.execute(
        "INSERT INTO jobs (kind, vm_id, due) VALUES (?1, ?2, ?3) \
         ON CONFLICT (kind, vm_id) WHERE done = 0 DO UPDATE SET due = min(due, excluded.due)",
        (job.kind.as_str(), job.vm.as_str(), job.due.as_millis()),
    );
    if inserted.as_ref().err().and_then(constraint) == Some(Constraint::ForeignKey) {
        return Err(StoreError::NotFound(job.vm.clone()).into());
    }
    inserted?;
    Ok(())
}

/// Leases up to `limit` due jobs whose lease (if any) has run out, earliest
/// due first, in one transaction: two workers never get the same job.
pub(super) fn lease_due(
    conn: &mut Connection,
    now: Timestamp,
    lease_until: Timestamp,
    owner: &str,
    limit: u32,
) -> Result<Vec<Job>, Fail> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut jobs = {
        let mut stmt = tx.prepare_cached(&format!(
            "UPDATE jobs SET lease_owner = :owner, lease_until = :until, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM jobs \
                          WHERE done = 0 AND due <= :now AND (lease_until IS NULL OR lease_until < :now) \
                          ORDER BY due, id LIMIT :limit) \
             RETURNING {COLUMNS}"
        ))?;
        let params = named_params! {
            ":owner": owner,
            ":until": lease_until.as_millis(),
            ":now": now.as_millis(),
            ":limit": limit,
        };
        all(&mut stmt, params, decode)?
    };
    tx.commit()?;
    // RETURNING gives rows in no promised order.
    jobs.sort_by_key(|j| (j.due, j.id));
    Ok(jobs)
}

/// Marks the job done. Finishing an unknown or finished job does nothing,
/// so a worker may repeat it after a crash.
pub(super) fn finish(conn: &Connection, id: i64) -> Result<(), Fail> {
    conn.execute(
        "UPDATE jobs SET done = 1, lease_owner = NULL, lease_until = NULL WHERE id = ?1",
        [id],
    )?;
    Ok(())
}

/// Releases the job's lease and makes it due again at `due`. Does nothing to
/// an unknown or finished job.
pub(super) fn retry(conn: &Connection, id: i64, error: &str, due: Timestamp) -> Result<(), Fail> {
    conn.execute(
        "UPDATE jobs SET lease_owner = NULL, lease_until = NULL, last_error = ?2, due = ?3 \
         WHERE id = ?1 AND done = 0",
        (id, error, due.as_millis()),
    )?;
    Ok(())
}

/// The VM's pending jobs, earliest due first; none for an unknown VM.
pub(super) fn pending_for(conn: &Connection, vm: &VmId) -> Result<Vec<Job>, Fail> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE vm_id = ?1 AND done = 0 ORDER BY due, id"
    ))?;
    all(&mut stmt, [vm.as_str()], decode)
}

pub(super) fn count_pending(conn: &Connection) -> Result<u64, Fail> {
    let count: i64 = conn.query_row("SELECT COUNT(*) FROM jobs WHERE done = 0", [], |row| {
        row.get(0)
    })?;
    u64::try_from(count).map_err(|_| {
        StoreError::Corrupt(format!("jobs: SQLite counted {count} pending jobs")).into()
    })
}

fn decode(row: &Row<'_>) -> Result<Job, Fail> {
    let mut cells = Cells::new(row, "a job row");
    let id: i64 = cells.get("id")?;
    cells.name(format!("job {id}"));
    let kind: String = cells.get("kind")?;
    let kind = JobKind::parse(&kind)
        .ok_or_else(|| cells.corrupt("kind", format!("unknown job kind {kind:?}")))?;
    Ok(Job {
        id,
        kind,
        vm: cells.word("vm_id")?,
        due: cells.time("due")?,
        attempts: cells.get("attempts")?,
        last_error: cells.get("last_error")?,
        lease_owner: cells.get("lease_owner")?,
        lease_until: cells.opt_time("lease_until")?,
    })
}
