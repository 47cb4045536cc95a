//! The `net_slots` table behind [`NetSlotStore`].

use async_trait::async_trait;
use hearth_types::{Timestamp, VmId};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior};

use super::cells::{all, Cells};
use super::error::Fail;
use super::SqliteStore;
use crate::{NetSlot, NetSlotStore, SlotClaim, StoreError};

#[async_trait]
impl NetSlotStore for SqliteStore {
    async fn claim_net_slot(&self, vm: &VmId, claim: SlotClaim) -> Result<Option<u32>, StoreError> {
        self.run(format_args!("claiming a network slot for VM {vm}"), |c| {
            claim_slot(c, vm, claim)
        })
    }

    async fn release_net_slot(&self, vm: &VmId, at: Timestamp) -> Result<Option<u32>, StoreError> {
        self.run(format_args!("releasing the network slot of VM {vm}"), |c| {
            release(c, vm, at)
        })
    }

    async fn net_slots(&self) -> Result<Vec<NetSlot>, StoreError> {
        self.run("listing network slots", held)
    }
}

fn claim_slot(conn: &mut Connection, vm: &VmId, claim: SlotClaim) -> Result<Option<u32>, Fail> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mine: Option<i64> = tx
        .query_row(
            "SELECT slot FROM net_slots WHERE vm_id = ?1",
            [vm.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(slot) = mine {
        return Ok(Some(slot_number(slot)?));
    }
    let Some(slot) = free_slot(&tx, claim)? else {
        return Ok(None);
    };
    tx.execute(
        "INSERT INTO net_slots (slot, vm_id, claimed_at, released_at) VALUES (?1, ?2, ?3, NULL) \
         ON CONFLICT (slot) DO UPDATE SET vm_id = ?2, claimed_at = ?3, released_at = NULL",
        (i64::from(slot), vm.as_str(), claim.now.as_millis()),
    )?;
    tx.commit()?;
    Ok(Some(slot))
}

/// The lowest released slot past its grace, or else the lowest number never
/// used; `None` when the pool is full.
fn free_slot(conn: &Connection, claim: SlotClaim) -> Result<Option<u32>, Fail> {
    let reusable: Option<i64> = conn.query_row(
        "SELECT MIN(slot) FROM net_slots WHERE vm_id IS NULL AND released_at <= ?1 AND slot < ?2",
        (
            claim.released_before.as_millis(),
            i64::from(claim.pool_size),
        ),
        |r| r.get(0),
    )?;
    // The lowest number with no row: 0 when 0 is unused, else one past a
    // row whose successor has none.
    let unused: Option<i64> = conn.query_row(
        "SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM net_slots WHERE slot = 0) THEN 0 ELSE \
         (SELECT MIN(a.slot + 1) FROM net_slots a WHERE NOT EXISTS \
          (SELECT 1 FROM net_slots b WHERE b.slot = a.slot + 1)) END",
        [],
        |r| r.get(0),
    )?;
    let unused = unused.filter(|&n| n < i64::from(claim.pool_size));
    [reusable, unused]
        .into_iter()
        .flatten()
        .min()
        .map(slot_number)
        .transpose()
}

fn release(conn: &mut Connection, vm: &VmId, at: Timestamp) -> Result<Option<u32>, Fail> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let slot: Option<i64> = tx
        .query_row(
            "SELECT slot FROM net_slots WHERE vm_id = ?1",
            [vm.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    tx.execute(
        "UPDATE net_slots SET vm_id = NULL, released_at = ?2 WHERE vm_id = ?1",
        (vm.as_str(), at.as_millis()),
    )?;
    tx.commit()?;
    slot.map(slot_number).transpose()
}

fn held(conn: &mut Connection) -> Result<Vec<NetSlot>, Fail> {
    let mut stmt = conn.prepare_cached(
        "SELECT slot, vm_id, claimed_at FROM net_slots WHERE vm_id IS NOT NULL ORDER BY slot",
    )?;
    all(&mut stmt, [], decode)
}

fn decode(row: &Row<'_>) -> Result<NetSlot, Fail> {
    let cells = Cells::new(row, "network slot");
    Ok(NetSlot {
        slot: slot_number(cells.get("slot")?)?,
        vm: cells.word("vm_id")?,
        claimed_at: cells.time("claimed_at")?,
    })
}

fn slot_number(n: i64) -> Result<u32, Fail> {
    u32::try_from(n)
        .map_err(|_| StoreError::Corrupt(format!("network slot {n} is out of range")).into())
}
