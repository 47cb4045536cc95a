//! The `snapshots` and `snapshot_vms` tables behind [`SnapshotStore`].

use async_trait::async_trait;
use hearth_types::{SnapshotManifest, SnapshotName, TenantId, Timestamp, VmId};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior};

use super::error::Fail;
use super::SqliteStore;
use crate::{SnapshotRecord, SnapshotRole, SnapshotStore, StoreError};

const COLUMNS: &str = "name, tenant, manifest, created_at";

#[async_trait]
impl SnapshotStore for SqliteStore {
    async fn insert_snapshot(&self, snap: &SnapshotRecord) -> Result<(), StoreError> {
        self.run(format_args!("recording snapshot {}", snap.name), |c| {
            insert(c, snap)
        })
    }

    async fn finish_snapshot(
        &self,
        name: &SnapshotName,
        manifest: &SnapshotManifest,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(manifest)
            .map_err(|e| StoreError::Corrupt(format!("a manifest that is not JSON: {e}")))?;
        self.run(format_args!("finishing snapshot {name}"), |c| {
            c.execute(
                "UPDATE snapshots SET state = 'ready', manifest = ?2 WHERE name = ?1",
                (name.as_str(), json),
            )?;
            Ok(())
        })
    }

    async fn snapshot(&self, name: &SnapshotName) -> Result<Option<SnapshotRecord>, StoreError> {
        self.run(format_args!("reading snapshot {name}"), |c| {
            let sql = format!("SELECT {COLUMNS} FROM snapshots WHERE name = ?1");
            let row = c
                .query_row(&sql, [name.as_str()], |r| Ok(decode(r)))
                .optional()?;
            row.transpose()
        })
    }

    async fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>, StoreError> {
        self.run("listing snapshots", |c| {
            let sql = format!("SELECT {COLUMNS} FROM snapshots ORDER BY created_at, name");
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map([], |r| Ok(decode(r)))?;
            rows.map(|r| r.map_err(Fail::from).and_then(|d| d))
                .collect()
        })
    }

    async fn delete_snapshot(&self, name: &SnapshotName) -> Result<(), StoreError> {
        self.run(format_args!("deleting snapshot {name}"), |c| {
            let tx = c.transaction()?;
            tx.execute(
                "DELETE FROM snapshot_vms WHERE snapshot = ?1",
                [name.as_str()],
            )?;
            tx.execute("DELETE FROM snapshots WHERE name = ?1", [name.as_str()])?;
            tx.commit()?;
            Ok(())
        })
    }

    async fn set_snapshot_role(
        &self,
        vm: &VmId,
        snapshot: &SnapshotName,
        role: SnapshotRole,
    ) -> Result<(), StoreError> {
        self.run(
            format_args!("recording VM {vm} as {}", role.as_str()),
            |c| {
                c.execute(
                "INSERT OR REPLACE INTO snapshot_vms (vm_id, snapshot, role) VALUES (?1, ?2, ?3)",
                (vm.as_str(), snapshot.as_str(), role.as_str()),
            )?;
                Ok(())
            },
        )
    }

    async fn snapshot_role(
        &self,
        vm: &VmId,
    ) -> Result<Option<(SnapshotName, SnapshotRole)>, StoreError> {
        self.run(format_args!("reading the snapshot of VM {vm}"), |c| {
            let row: Option<(String, String)> = c
                .query_row(
                    "SELECT snapshot, role FROM snapshot_vms WHERE vm_id = ?1",
                    [vm.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            row.map(|(name, role)| {
                let name = name.parse().map_err(|e| corrupt(&e))?;
                let role = SnapshotRole::parse(&role)
                    .ok_or_else(|| corrupt(&format!("unknown role {role:?}")))?;
                Ok((name, role))
            })
            .transpose()
        })
    }

    async fn snapshot_users(&self, snapshot: &SnapshotName) -> Result<Vec<VmId>, StoreError> {
        self.run(
            format_args!("listing the VMs of snapshot {snapshot}"),
            |c| {
                let mut stmt = c.prepare(
                    "SELECT s.vm_id FROM snapshot_vms s JOIN vms v ON v.id = s.vm_id \
                 WHERE s.snapshot = ?1 AND v.state != 'destroyed' ORDER BY s.vm_id",
                )?;
                let ids = stmt.query_map([snapshot.as_str()], |r| r.get::<_, String>(0))?;
                ids.map(|id| id.map_err(Fail::from)?.parse().map_err(|e| corrupt(&e)))
                    .collect()
            },
        )
    }
}

fn insert(conn: &mut Connection, snap: &SnapshotRecord) -> Result<(), Fail> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let taken: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM snapshots WHERE name = ?1)",
        [snap.name.as_str()],
        |r| r.get(0),
    )?;
    if taken {
        return Err(Fail::Store(StoreError::Duplicate {
            what: format!("snapshot {}", snap.name),
        }));
    }
    tx.execute(
        "INSERT INTO snapshots (name, tenant, state, manifest, created_at) \
         VALUES (?1, ?2, 'creating', NULL, ?3)",
        (
            snap.name.as_str(),
            snap.tenant.as_str(),
            snap.created_at.as_millis(),
        ),
    )?;
    tx.commit()?;
    Ok(())
}

fn decode(row: &Row<'_>) -> Result<SnapshotRecord, Fail> {
    let name: String = row.get(0)?;
    let tenant: String = row.get(1)?;
    let manifest: Option<String> = row.get(2)?;
    let manifest = manifest
        .map(|m| serde_json::from_str(&m).map_err(|e| corrupt(&e)))
        .transpose()?;
    Ok(SnapshotRecord {
        name: name.parse().map_err(|e| corrupt(&e))?,
        tenant: tenant.parse::<TenantId>().map_err(|e| corrupt(&e))?,
        manifest,
        created_at: Timestamp::from_millis(row.get(3)?),
    })
}

fn corrupt(e: &dyn std::fmt::Display) -> Fail {
    Fail::Store(StoreError::Corrupt(format!("a snapshot row: {e}")))
}
