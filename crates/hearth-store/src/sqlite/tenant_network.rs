//! The `tenant_network_policies` table.

use hearth_types::api::TenantNetworkPolicy;
use hearth_types::TenantId;
use rusqlite::{params, Connection, Row};

use super::cells::{first, Cells};
use super::error::Fail;

pub(super) fn put(conn: &Connection, r: &TenantNetworkPolicy) -> Result<(), Fail> {
    let policy = serde_json::to_string(&r.policy)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.execute(
        "INSERT OR REPLACE INTO tenant_network_policies (tenant, policy, updated_at) \
         VALUES (?1, ?2, ?3)",
        params![r.tenant.as_str(), policy, r.updated_at.as_millis()],
    )?;
    Ok(())
}

pub(super) fn get(
    conn: &Connection,
    tenant: &TenantId,
) -> Result<Option<TenantNetworkPolicy>, Fail> {
    let mut stmt = conn.prepare_cached(
        "SELECT tenant, policy, updated_at FROM tenant_network_policies WHERE tenant = ?1",
    )?;
    first(&mut stmt, [tenant.as_str()], decode)
}

pub(super) fn delete(
    conn: &Connection,
    tenant: &TenantId,
) -> Result<Option<TenantNetworkPolicy>, Fail> {
    let found = get(conn, tenant)?;
    conn.execute(
        "DELETE FROM tenant_network_policies WHERE tenant = ?1",
        [tenant.as_str()],
    )?;
    Ok(found)
}

fn decode(row: &Row<'_>) -> Result<TenantNetworkPolicy, Fail> {
    let c = Cells::new(row, "a tenant network policy row");
    Ok(TenantNetworkPolicy {
        tenant: c.word("tenant")?,
        policy: c.json("policy")?,
        updated_at: c.time("updated_at")?,
    })
}
