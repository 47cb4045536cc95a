//! The `sessions`, `session_events` and `egress_connections` tables. A
//! change is a compare-and-set on the session's state in one `BEGIN
//! IMMEDIATE` transaction with its event, like a VM's transition; the
//! partial unique index on live sessions is what refuses a second one.

use hearth_types::session::{EgressConnection, SessionEvent};
use hearth_types::{SessionId, SessionState, Timestamp};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use super::cells::{all, first, Cells};
use super::error::{constraint, to_i64, Constraint, Fail};
use crate::{SessionChange, SessionFilter, SessionRecord, StoreError};

const COLUMNS: &str = "id, tenant, user_name, provider, state, vm_id, created_at, updated_at, \
                       expires_at, message, diagnosis, credential_version";

pub(super) fn insert(conn: &mut Connection, s: &SessionRecord) -> Result<(), Fail> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let inserted = tx.execute(
        &format!("INSERT INTO sessions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
        params![
            s.id.as_str(),
            s.tenant.as_str(),
            s.user.as_str(),
            s.provider.as_str(),
            s.state.as_str(),
            s.vm.as_ref().map(|v| v.as_str()),
            s.created_at.as_millis(),
            s.updated_at.as_millis(),
            s.expires_at.as_millis(),
            s.message,
            json(&s.diagnosis)?,
            s.credential_version.map(to_i64).transpose()?,
        ],
    );
    match inserted {
        Err(e) if constraint(&e) == Some(Constraint::Unique) => {
            return Err(StoreError::Duplicate {
                what: format!(
                    "a live session of user {} for provider {}",
                    s.user, s.provider
                ),
            }
            .into())
        }
        Err(e) if constraint(&e) == Some(Constraint::PrimaryKey) => {
            return Err(StoreError::Duplicate {
                what: format!("session {}", s.id),
            }
            .into())
        }
        other => other?,
    };
    append_event(&tx, &s.id, s.created_at, s.state, "session started")?;
    tx.commit()?;
    Ok(())
}

pub(super) fn get(conn: &Connection, id: &SessionId) -> Result<Option<SessionRecord>, Fail> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM sessions WHERE id = ?1"))?;
    first(&mut stmt, [id.as_str()], decode)
}

pub(super) fn list(conn: &Connection, filter: &SessionFilter) -> Result<Vec<SessionRecord>, Fail> {
    let live = "state IN ('starting', 'waiting_for_user', 'captured')";
    let mut clauses = vec!["(?1 IS NULL OR tenant = ?1)"];
    if filter.live_only {
        clauses.push(live);
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM sessions WHERE {} ORDER BY created_at DESC, id",
        clauses.join(" AND ")
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    all(
        &mut stmt,
        [filter.tenant.as_ref().map(|t| t.as_str())],
        decode,
    )
}

pub(super) fn change(
    conn: &mut Connection,
    id: &SessionId,
    expected: SessionState,
    change: &SessionChange,
) -> Result<SessionRecord, Fail> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let updated = tx.execute(
        "UPDATE sessions SET state = ?3, updated_at = ?4, vm_id = COALESCE(?5, vm_id), \
         message = COALESCE(?6, message), diagnosis = COALESCE(?7, diagnosis), \
         credential_version = COALESCE(?8, credential_version) \
         WHERE id = ?1 AND state = ?2",
        params![
            id.as_str(),
            expected.as_str(),
            change.to.as_str(),
            change.at.as_millis(),
            change.vm.as_ref().map(|v| v.as_str()),
            change.message,
            json(&change.diagnosis)?,
            change.credential_version.map(to_i64).transpose()?,
        ],
    )?;
    if updated == 0 {
        return Err(StoreError::Changed {
            what: format!("session {id} (it is no longer {expected})"),
        }
        .into());
    }
    append_event(&tx, id, change.at, change.to, &change.event)?;
    let after =
        get(&tx, id)?.ok_or_else(|| StoreError::Corrupt(format!("session {id} vanished")))?;
    tx.commit()?;
    Ok(after)
}

pub(super) fn add_event(
    conn: &mut Connection,
    id: &SessionId,
    at: Timestamp,
    message: &str,
) -> Result<(), Fail> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let state: Option<String> = tx
        .query_row(
            "SELECT state FROM sessions WHERE id = ?1",
            [id.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    let state: SessionState = state
        .ok_or_else(|| StoreError::Corrupt(format!("no session {id} to add an event to")))?
        .parse()
        .map_err(|e: String| StoreError::Corrupt(format!("session {id}: column state: {e}")))?;
    append_event(&tx, id, at, state, message)?;
    tx.commit()?;
    Ok(())
}

fn append_event(
    tx: &Transaction<'_>,
    id: &SessionId,
    at: Timestamp,
    state: SessionState,
    message: &str,
) -> Result<(), Fail> {
    tx.execute(
        "INSERT INTO session_events (session_id, seq, at, state, message) \
         SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4 FROM session_events WHERE session_id = ?1",
        params![id.as_str(), at.as_millis(), state.as_str(), message],
    )?;
    Ok(())
}

pub(super) fn events(conn: &Connection, id: &SessionId) -> Result<Vec<SessionEvent>, Fail> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, at, state, message FROM session_events WHERE session_id = ?1 ORDER BY seq",
    )?;
    all(&mut stmt, [id.as_str()], |row| {
        let c = Cells::new(row, "a session event");
        Ok(SessionEvent {
            seq: c.get("seq")?,
            at: c.time("at")?,
            state: c.word("state")?,
            message: c.get("message")?,
        })
    })
}

pub(super) fn add_egress(
    conn: &mut Connection,
    id: &SessionId,
    e: &EgressConnection,
) -> Result<(), Fail> {
    conn.execute(
        "INSERT INTO egress_connections \
         (session_id, seq, at, kind, host, port, outcome, reason, bytes_up, bytes_down) \
         SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 \
         FROM egress_connections WHERE session_id = ?1",
        params![
            id.as_str(),
            e.at.as_millis(),
            e.kind,
            e.host,
            e.port,
            e.outcome,
            e.reason,
            to_i64(e.bytes_up)?,
            to_i64(e.bytes_down)?,
        ],
    )?;
    Ok(())
}

pub(super) fn egress(conn: &Connection, id: &SessionId) -> Result<Vec<EgressConnection>, Fail> {
    let mut stmt = conn.prepare_cached(
        "SELECT at, kind, host, port, outcome, reason, bytes_up, bytes_down \
         FROM egress_connections WHERE session_id = ?1 ORDER BY seq",
    )?;
    all(&mut stmt, [id.as_str()], |row| {
        let c = Cells::new(row, "an egress connection");
        Ok(EgressConnection {
            at: c.time("at")?,
            kind: c.get("kind")?,
            host: c.get("host")?,
            port: c.get("port")?,
            outcome: c.get("outcome")?,
            reason: c.get("reason")?,
            bytes_up: c.unsigned("bytes_up")?,
            bytes_down: c.unsigned("bytes_down")?,
        })
    })
}

fn decode(row: &Row<'_>) -> Result<SessionRecord, Fail> {
    let mut c = Cells::new(row, "a session row");
    let id: SessionId = c.word("id")?;
    c.name(format!("session {id}"));
    let diagnosis: Option<String> = c.get("diagnosis")?;
    let diagnosis = diagnosis
        .map(|text| serde_json::from_str(&text).map_err(|e| c.corrupt("diagnosis", e)))
        .transpose()?;
    Ok(SessionRecord {
        id,
        tenant: c.word("tenant")?,
        user: c.word("user_name")?,
        provider: c.word("provider")?,
        state: c.word("state")?,
        vm: c.opt_word("vm_id")?,
        created_at: c.time("created_at")?,
        updated_at: c.time("updated_at")?,
        expires_at: c.time("expires_at")?,
        message: c.get("message")?,
        diagnosis,
        credential_version: c.opt_unsigned("credential_version")?,
    })
}

fn json<T: serde::Serialize>(value: &Option<T>) -> Result<Option<String>, Fail> {
    value
        .as_ref()
        .map(|v| serde_json::to_string(v))
        .transpose()
        .map_err(|e| Fail::Sql(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))
}
