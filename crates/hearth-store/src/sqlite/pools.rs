//! The `pools` and `pool_vms` tables behind [`PoolStore`].

use async_trait::async_trait;
use hearth_types::pool::PoolSettings;
use hearth_types::{TenantId, VmId};
use rusqlite::{named_params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::cells::{all, Cells};
use super::error::{constraint, to_i64, Constraint, Fail};
use super::SqliteStore;
use crate::{PoolRecord, PoolStore, PoolTake, PoolVmRecord, StoreError, VmRecord};

#[async_trait]
impl PoolStore for SqliteStore {
    async fn put_pool(&self, pool: &PoolRecord) -> Result<(), StoreError> {
        self.run(format_args!("storing the pool of {}", pool.image), |c| {
            put(c, pool)
        })
    }

    async fn pools(&self) -> Result<Vec<PoolRecord>, StoreError> {
        self.run("listing pools", |c| {
            let mut stmt = c.prepare_cached(
                "SELECT image, size, max, ttl_secs, refill_per_min, template, updated_at FROM pools ORDER BY image",
            )?;
            all(&mut stmt, [], decode_pool)
        })
    }

    async fn delete_pool(&self, image: &str) -> Result<Option<PoolRecord>, StoreError> {
        self.run(format_args!("deleting the pool of {image}"), |c| {
            delete(c, image)
        })
    }

    async fn add_pool_vm(&self, vm: &PoolVmRecord) -> Result<(), StoreError> {
        self.run(format_args!("pooling VM {}", vm.vm), |c| add(c, vm))
    }

    async fn pool_vms(&self) -> Result<Vec<PoolVmRecord>, StoreError> {
        self.run("listing pooled VMs", |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT p.vm_id, p.image, p.assets, p.created_at, {WARM} AS warm, \
                 CASE WHEN {WARM} THEN a.connected_at END AS warm_since \
                 FROM pool_vms p LEFT JOIN vm_agents a ON a.vm_id = p.vm_id \
                 ORDER BY p.created_at, p.vm_id"
            ))?;
            all(&mut stmt, [], decode_vm)
        })
    }

    async fn take_pool_vm(&self, take: &PoolTake) -> Result<Option<VmRecord>, StoreError> {
        self.run(format_args!("taking a pooled VM of {}", take.image), |c| {
            take_one(c, take)
        })
    }

    async fn remove_pool_vm(&self, vm: &VmId) -> Result<bool, StoreError> {
        self.run(format_args!("removing VM {vm} from its pool"), |c| {
            Ok(c.execute("DELETE FROM pool_vms WHERE vm_id = ?1", [vm.as_str()])? == 1)
        })
    }
}

/// A pooled VM is warm while its agent is connected: it said hello and has
/// not dropped since.
const WARM: &str = "(a.connected_at IS NOT NULL AND \
     (a.disconnected_at IS NULL OR a.disconnected_at < a.connected_at))";

fn put(conn: &Connection, pool: &PoolRecord) -> Result<(), Fail> {
    let s = &pool.settings;
    conn.execute(
        "INSERT INTO pools (image, size, max, ttl_secs, refill_per_min, template, updated_at) \
         VALUES (:image, :size, :max, :ttl, :refill, :template, :at) ON CONFLICT (image) DO UPDATE SET \
         size = :size, max = :max, ttl_secs = :ttl, refill_per_min = :refill, \
         template = :template, updated_at = :at",
        named_params! {
            ":image": pool.image,
            ":size": s.size,
            ":max": s.max,
            ":ttl": to_i64(s.ttl_secs)?,
            ":refill": s.refill_per_min,
            ":template": s.template.as_ref().map(|t| t.as_str()),
            ":at": pool.updated_at.as_millis(),
        },
    )?;
    Ok(())
}

fn delete(conn: &mut Connection, image: &str) -> Result<Option<PoolRecord>, Fail> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let pool = tx
        .prepare_cached(
            "SELECT image, size, max, ttl_secs, refill_per_min, template, updated_at FROM pools WHERE image = ?1",
        )?
        .query_row([image], |row| Ok(decode_pool(row)))
        .optional()?
        .transpose()?;
    tx.execute("DELETE FROM pools WHERE image = ?1", [image])?;
    tx.commit()?;
    Ok(pool)
}

fn add(conn: &Connection, vm: &PoolVmRecord) -> Result<(), Fail> {
    let added = conn.execute(
        "INSERT INTO pool_vms (vm_id, image, assets, created_at) VALUES (?1, ?2, ?3, ?4)",
        (
            vm.vm.as_str(),
            vm.image.as_str(),
            vm.assets.as_str(),
            vm.created_at.as_millis(),
        ),
    );
    match added.as_ref().err().and_then(constraint) {
        Some(Constraint::PrimaryKey) => Err(StoreError::Duplicate {
            what: format!("pooled VM {}", vm.vm),
        }
        .into()),
        Some(Constraint::ForeignKey) => Err(StoreError::NotFound(vm.vm.clone()).into()),
        _ => added.map(drop).map_err(Into::into),
    }
}

/// The compare-and-set of a hand-out: under `BEGIN IMMEDIATE`, the oldest
/// fitting VM still pooled, warm, booting and owned by the pool tenant is
/// removed from the pool and given to the tenant before anyone else reads.
fn take_one(conn: &mut Connection, take: &PoolTake) -> Result<Option<VmRecord>, Fail> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: Option<String> = tx
        .query_row(
            &format!(
                "SELECT p.vm_id FROM pool_vms p JOIN vms v ON v.id = p.vm_id \
                 JOIN vm_agents a ON a.vm_id = p.vm_id \
                 WHERE p.image = :image AND p.assets = :assets AND a.connected_at >= :born \
                 AND v.state = 'booting' AND v.tenant = :pool AND v.vcpus = :vcpus \
                 AND v.memory_mib = :memory AND {WARM} \
                 ORDER BY p.created_at, p.vm_id LIMIT 1"
            ),
            named_params! {
                ":image": take.image,
                ":assets": take.assets,
                ":born": take.born_after.as_millis(),
                ":pool": TenantId::pool().as_str(),
                ":vcpus": take.vcpus,
                ":memory": take.memory_mib,
            },
            |row| row.get(0),
        )
        .optional()?;
    let Some(id) = found else {
        return Ok(None);
    };
    let id: VmId = id
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("pooled VM id {id:?}: {e}")))?;
    let config = serde_json::to_string(&take.config)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
    tx.execute("DELETE FROM pool_vms WHERE vm_id = ?1", [id.as_str()])?;
    tx.execute(
        "UPDATE vms SET tenant = ?2, created_at = ?3, updated_at = ?3, ready_deadline = ?4 \
         WHERE id = ?1",
        (
            id.as_str(),
            take.tenant.as_str(),
            take.at.as_millis(),
            take.ready_deadline.as_millis(),
        ),
    )?;
    super::agent::set_config(&tx, &id, &config)?;
    super::vms::add_event(&tx, &id, take.at, &take.message)?;
    let record = super::vms::get(&tx, &id)?.ok_or_else(|| StoreError::NotFound(id.clone()))?;
    tx.commit()?;
    Ok(Some(record))
}

fn decode_pool(row: &Row<'_>) -> Result<PoolRecord, Fail> {
    let cells = Cells::new(row, "pool");
    Ok(PoolRecord {
        image: cells.get("image")?,
        settings: PoolSettings {
            size: cells.get("size")?,
            max: cells.get("max")?,
            ttl_secs: cells.unsigned("ttl_secs")?,
            refill_per_min: cells.get("refill_per_min")?,
            template: cells.opt_word("template")?,
        },
        updated_at: cells.time("updated_at")?,
    })
}

fn decode_vm(row: &Row<'_>) -> Result<PoolVmRecord, Fail> {
    let cells = Cells::new(row, "pooled VM");
    Ok(PoolVmRecord {
        vm: cells.word("vm_id")?,
        image: cells.get("image")?,
        assets: cells.get("assets")?,
        created_at: cells.time("created_at")?,
        warm: cells.get("warm")?,
        warm_since: cells
            .get::<Option<i64>>("warm_since")?
            .map(hearth_types::Timestamp::from_millis),
    })
}
