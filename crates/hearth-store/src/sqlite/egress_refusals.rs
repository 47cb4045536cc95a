//! The `vm_egress_refusals` table.

use hearth_types::{Timestamp, VmId};
use rusqlite::{params, Connection, OptionalExtension};

use super::error::Fail;
use crate::EgressRefusals;

pub(super) fn put(
    conn: &Connection,
    vm: &VmId,
    totals: EgressRefusals,
    at: Timestamp,
) -> Result<(), Fail> {
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    conn.execute(
        "INSERT OR REPLACE INTO vm_egress_refusals \
         (vm_id, refused_queries, refused_connections, updated_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            vm.as_str(),
            count(totals.queries),
            count(totals.connections),
            at.as_millis()
        ],
    )?;
    Ok(())
}

pub(super) fn get(conn: &Connection, vm: &VmId) -> Result<Option<EgressRefusals>, Fail> {
    let row: Option<(i64, i64)> = conn
        .prepare_cached(
            "SELECT refused_queries, refused_connections FROM vm_egress_refusals WHERE vm_id = ?1",
        )?
        .query_row([vm.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.map(|(queries, connections)| EgressRefusals {
        queries: u64::try_from(queries).unwrap_or(0),
        connections: u64::try_from(connections).unwrap_or(0),
    }))
}

pub(super) fn delete(conn: &Connection, vm: &VmId) -> Result<(), Fail> {
    conn.execute(
        "DELETE FROM vm_egress_refusals WHERE vm_id = ?1",
        [vm.as_str()],
    )?;
    Ok(())
}
