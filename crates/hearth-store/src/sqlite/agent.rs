//! The agent tables: `vm_agents` (configuration and the latest hello),
//! `agent_instances` (acks), `agent_records` and `service_logs`. Storing a
//! batch of records, raising the ack and trimming the oldest rows happen in
//! one transaction, so an ack never covers a record that is not stored.

use std::collections::BTreeSet;

use hearth_types::guest::Stream;
use hearth_types::{Timestamp, VmId};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior};

use super::cells::{all, first, Cells};
use super::error::{constraint, to_i64, Constraint, Fail};
use crate::agent::{MAX_LINES_PER_SERVICE, MAX_RECORDS_PER_VM};
use crate::StoreError;
use crate::{AgentEntry, AgentHello, AgentRecord, AgentStatus, NewAgentRecord, ServiceLine};

/// `NotFound` when the statement broke the foreign key to `vms`.
fn vm_must_exist<T>(id: &VmId, r: rusqlite::Result<T>) -> Result<T, Fail> {
    match r {
        Err(e) if constraint(&e) == Some(Constraint::ForeignKey) => {
            Err(StoreError::NotFound(id.clone()).into())
        }
        r => Ok(r?),
    }
}

pub(super) fn set_config(conn: &Connection, id: &VmId, config: &str) -> Result<(), Fail> {
    let r = conn.execute(
        "INSERT INTO vm_agents (vm_id, config) VALUES (?1, ?2) \
         ON CONFLICT (vm_id) DO UPDATE SET config = excluded.config",
        (id.as_str(), config),
    );
    vm_must_exist(id, r).map(drop)
}

pub(super) fn config(conn: &Connection, id: &VmId) -> Result<Option<String>, Fail> {
    let config = conn
        .prepare_cached("SELECT config FROM vm_agents WHERE vm_id = ?1")?
        .query_row([id.as_str()], |row| row.get(0))
        .optional()?;
    Ok(config)
}

/// Records the hello and answers the highest seq stored for its instance.
pub(super) fn hello(conn: &mut Connection, id: &VmId, hello: &AgentHello) -> Result<u64, Fail> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let at = hello.connected_at.as_millis();
    let r = tx.execute(
        "INSERT INTO vm_agents (vm_id, instance, agent_version, boot_id, connected_at, last_heartbeat) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?5) \
         ON CONFLICT (vm_id) DO UPDATE SET instance = excluded.instance, \
             agent_version = excluded.agent_version, boot_id = excluded.boot_id, \
             connected_at = excluded.connected_at, last_heartbeat = excluded.last_heartbeat, \
             disconnected_at = NULL",
        (id.as_str(), &hello.instance, &hello.agent_version, &hello.boot_id, at),
    );
    vm_must_exist(id, r)?;
    let acked = acked(&tx, id, &hello.instance)?;
    tx.commit()?;
    Ok(acked)
}

fn acked(conn: &Connection, id: &VmId, instance: &str) -> Result<u64, Fail> {
    let acked: Option<i64> = conn
        .prepare_cached("SELECT acked FROM agent_instances WHERE vm_id = ?1 AND instance = ?2")?
        .query_row((id.as_str(), instance), |row| row.get(0))
        .optional()?;
    Ok(acked.unwrap_or(0).max(0) as u64)
}

pub(super) fn heartbeat(conn: &Connection, id: &VmId, at: Timestamp) -> Result<(), Fail> {
    conn.prepare_cached("UPDATE vm_agents SET last_heartbeat = ?2 WHERE vm_id = ?1")?
        .execute((id.as_str(), at.as_millis()))?;
    Ok(())
}

pub(super) fn disconnected(conn: &Connection, id: &VmId, at: Timestamp) -> Result<(), Fail> {
    conn.prepare_cached(
        "UPDATE vm_agents SET disconnected_at = ?2 WHERE vm_id = ?1 AND instance IS NOT NULL",
    )?
    .execute((id.as_str(), at.as_millis()))?;
    Ok(())
}

/// Stores what is new in `records` (a seq at or below the instance's ack,
/// or already stored, is skipped),
/// raises the instance's ack and trims the oldest rows; answers the ack.
pub(super) fn store_records(
    conn: &mut Connection,
    id: &VmId,
    instance: &str,
    records: &[NewAgentRecord],
) -> Result<u64, Fail> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // The agent sends in seq order, so everything up to the ack is stored
    // (logs and records share one seq, in two tables).
    let stored = acked(&tx, id, instance)?;
    let mut services = BTreeSet::new();
    let mut any_record = false;
    let mut top = 0;
    for r in records.iter().filter(|r| r.seq > stored) {
        let seq = to_i64(r.seq)?;
        top = top.max(r.seq);
        let at = r.at.as_millis();
        let inserted = match &r.entry {
            AgentEntry::Log {
                service,
                stream,
                line,
            } => {
                services.insert(service.as_str());
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO service_logs (vm_id, instance, seq, service, at, stream, line) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute((id.as_str(), instance, seq, service, at, stream.as_str(), line))
            }
            AgentEntry::Record {
                kind,
                service,
                body,
            } => {
                any_record = true;
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO agent_records (vm_id, instance, seq, at, kind, service, body) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute((id.as_str(), instance, seq, at, kind, service, body))
            }
        };
        vm_must_exist(id, inserted)?;
    }
    if top > stored {
        tx.prepare_cached(
            "INSERT INTO agent_instances (vm_id, instance, acked) VALUES (?1, ?2, ?3) \
             ON CONFLICT (vm_id, instance) DO UPDATE SET acked = MAX(acked, excluded.acked)",
        )?
        .execute((id.as_str(), instance, to_i64(top)?))?;
    }
    for service in services {
        trim_lines(&tx, id, service)?;
    }
    if any_record {
        trim_records(&tx, id)?;
    }
    let acked = acked(&tx, id, instance)?;
    tx.commit()?;
    Ok(acked)
}

fn trim_lines(conn: &Connection, id: &VmId, service: &str) -> Result<(), Fail> {
    conn.prepare_cached(
        "DELETE FROM service_logs WHERE vm_id = ?1 AND service = ?2 AND id <= \
         (SELECT id FROM service_logs WHERE vm_id = ?1 AND service = ?2 ORDER BY id DESC LIMIT 1 OFFSET ?3)",
    )?
    .execute((id.as_str(), service, to_i64(MAX_LINES_PER_SERVICE)?))?;
    Ok(())
}

fn trim_records(conn: &Connection, id: &VmId) -> Result<(), Fail> {
    conn.prepare_cached(
        "DELETE FROM agent_records WHERE vm_id = ?1 AND id <= \
         (SELECT id FROM agent_records WHERE vm_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )?
    .execute((id.as_str(), to_i64(MAX_RECORDS_PER_VM)?))?;
    Ok(())
}

pub(super) fn status(conn: &Connection, id: &VmId) -> Result<Option<AgentStatus>, Fail> {
    let mut stmt = conn.prepare_cached(
        "SELECT instance, agent_version, boot_id, connected_at, disconnected_at, last_heartbeat \
         FROM vm_agents WHERE vm_id = ?1",
    )?;
    first(&mut stmt, [id.as_str()], decode_status)
}

fn decode_status(row: &Row<'_>) -> Result<AgentStatus, Fail> {
    let cells = Cells::new(row, "an agent row");
    let instance: Option<String> = cells.get("instance")?;
    let hello = match (instance, cells.opt_time("connected_at")?) {
        (Some(instance), Some(connected_at)) => Some(AgentHello {
            instance,
            agent_version: cells
                .get::<Option<String>>("agent_version")?
                .unwrap_or_default(),
            boot_id: cells.get::<Option<String>>("boot_id")?.unwrap_or_default(),
            connected_at,
        }),
        _ => None,
    };
    Ok(AgentStatus {
        hello,
        disconnected_at: cells.opt_time("disconnected_at")?,
        last_heartbeat: cells.opt_time("last_heartbeat")?,
    })
}

const RECORD_COLUMNS: &str = "at, kind, service, body";

pub(super) fn records(conn: &Connection, id: &VmId) -> Result<Vec<AgentRecord>, Fail> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS} FROM agent_records WHERE vm_id = ?1 ORDER BY id"
    ))?;
    all(&mut stmt, [id.as_str()], decode_record)
}

pub(super) fn latest_record(
    conn: &Connection,
    id: &VmId,
    kind: &str,
) -> Result<Option<AgentRecord>, Fail> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS} FROM agent_records WHERE vm_id = ?1 AND kind = ?2 \
         ORDER BY id DESC LIMIT 1"
    ))?;
    first(&mut stmt, (id.as_str(), kind), decode_record)
}

fn decode_record(row: &Row<'_>) -> Result<AgentRecord, Fail> {
    let cells = Cells::new(row, "an agent record");
    Ok(AgentRecord {
        at: cells.time("at")?,
        kind: cells.get("kind")?,
        service: cells.get("service")?,
        body: cells.get("body")?,
    })
}

/// The last `tail` lines of `service`, oldest first.
pub(super) fn service_lines(
    conn: &Connection,
    id: &VmId,
    service: &str,
    tail: usize,
) -> Result<Vec<ServiceLine>, Fail> {
    let mut stmt = conn.prepare_cached(
        "SELECT at, stream, line FROM (SELECT id, at, stream, line FROM service_logs \
         WHERE vm_id = ?1 AND service = ?2 ORDER BY id DESC LIMIT ?3) ORDER BY id",
    )?;
    let tail = i64::try_from(tail).unwrap_or(i64::MAX);
    all(&mut stmt, (id.as_str(), service, tail), decode_line)
}

fn decode_line(row: &Row<'_>) -> Result<ServiceLine, Fail> {
    let cells = Cells::new(row, "a service log line");
    let stream: String = cells.get("stream")?;
    let stream = match stream.as_str() {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        other => {
            return Err(cells
                .corrupt("stream", format_args!("unknown stream {other:?}"))
                .into())
        }
    };
    Ok(ServiceLine {
        at: cells.time("at")?,
        stream,
        line: cells.get("line")?,
    })
}
