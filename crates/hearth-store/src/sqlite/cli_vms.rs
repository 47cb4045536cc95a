//! The `cli_vms` table.

use hearth_types::{ProviderId, TenantId, UserName, VmId};
use rusqlite::{params, Connection, Row};

use super::cells::{first, Cells};
use super::error::{constraint, Constraint, Fail};
use crate::{CliVmRecord, StoreError};

const COLUMNS: &str = "tenant, user_name, vm_id, image, created_at, bases";

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, Fail> {
    serde_json::to_string(value)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)).into())
}

pub(super) fn insert(conn: &Connection, r: &CliVmRecord) -> Result<(), Fail> {
    let inserted = conn.execute(
        &format!("INSERT INTO cli_vms ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![
            r.tenant.as_str(),
            r.user.as_str(),
            r.vm.as_str(),
            r.image,
            r.created_at.as_millis(),
            to_json(&r.bases)?,
        ],
    );
    match inserted {
        Err(e) if constraint(&e) == Some(Constraint::PrimaryKey) => Err(StoreError::Duplicate {
            what: format!("a CLI VM of user {} of tenant {}", r.user, r.tenant),
        }
        .into()),
        other => other.map(|_| ()).map_err(Fail::from),
    }
}

pub(super) fn get(
    conn: &Connection,
    tenant: &TenantId,
    user: &UserName,
) -> Result<Option<CliVmRecord>, Fail> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM cli_vms WHERE tenant = ?1 AND user_name = ?2"
    ))?;
    first(&mut stmt, [tenant.as_str(), user.as_str()], decode)
}

pub(super) fn list(conn: &Connection) -> Result<Vec<CliVmRecord>, Fail> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM cli_vms ORDER BY created_at"
    ))?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(row)?);
    }
    Ok(out)
}

pub(super) fn set_base(
    conn: &mut Connection,
    who: (&TenantId, &UserName, &VmId),
    provider: &ProviderId,
    version: u64,
) -> Result<(), Fail> {
    let (tenant, user, vm) = who;
    let tx = conn.transaction()?;
    let mut record = match get(&tx, tenant, user)? {
        Some(r) if &r.vm == vm => r,
        _ => {
            return Err(StoreError::Changed {
                what: format!("the CLI VM {vm} of user {user}"),
            }
            .into())
        }
    };
    record.bases.insert(provider.clone(), version);
    tx.execute(
        "UPDATE cli_vms SET bases = ?3 WHERE tenant = ?1 AND user_name = ?2",
        params![tenant.as_str(), user.as_str(), to_json(&record.bases)?],
    )?;
    tx.commit()?;
    Ok(())
}

pub(super) fn delete(
    conn: &Connection,
    tenant: &TenantId,
    user: &UserName,
) -> Result<Option<CliVmRecord>, Fail> {
    let found = get(conn, tenant, user)?;
    conn.execute(
        "DELETE FROM cli_vms WHERE tenant = ?1 AND user_name = ?2",
        [tenant.as_str(), user.as_str()],
    )?;
    Ok(found)
}

fn decode(row: &Row<'_>) -> Result<CliVmRecord, Fail> {
    let c = Cells::new(row, "a CLI VM row");
    Ok(CliVmRecord {
        tenant: c.word("tenant")?,
        user: c.word("user_name")?,
        vm: c.word("vm_id")?,
        image: c.get("image")?,
        created_at: c.time("created_at")?,
        bases: c.json("bases")?,
    })
}
