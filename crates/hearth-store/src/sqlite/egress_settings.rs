//! The `egress_settings` table: a tenant's row has `user_name` ''.

use hearth_types::{TenantId, UserName};
use rusqlite::{params, Connection, Row};

use super::cells::{first, Cells};
use super::error::Fail;
use crate::EgressSettingsRecord;

const COLUMNS: &str = "tenant, user_name, domains, upstream, upstream_credentials, updated_at";

fn user_key(user: Option<&UserName>) -> &str {
    user.map_or("", |u| u.as_str())
}

pub(super) fn put(conn: &Connection, r: &EgressSettingsRecord) -> Result<(), Fail> {
    let domains = serde_json::to_string(&r.domains)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.execute(
        &format!(
            "INSERT OR REPLACE INTO egress_settings ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
        ),
        params![
            r.tenant.as_str(),
            user_key(r.user.as_ref()),
            domains,
            r.upstream,
            r.upstream_credentials,
            r.updated_at.as_millis(),
        ],
    )?;
    Ok(())
}

pub(super) fn get(
    conn: &Connection,
    tenant: &TenantId,
    user: Option<&UserName>,
) -> Result<Option<EgressSettingsRecord>, Fail> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM egress_settings WHERE tenant = ?1 AND user_name = ?2"
    ))?;
    first(&mut stmt, [tenant.as_str(), user_key(user)], decode)
}

pub(super) fn delete(
    conn: &Connection,
    tenant: &TenantId,
    user: Option<&UserName>,
) -> Result<Option<EgressSettingsRecord>, Fail> {
    let found = get(conn, tenant, user)?;
    conn.execute(
        "DELETE FROM egress_settings WHERE tenant = ?1 AND user_name = ?2",
        [tenant.as_str(), user_key(user)],
    )?;
    Ok(found)
}

fn decode(row: &Row<'_>) -> Result<EgressSettingsRecord, Fail> {
    let c = Cells::new(row, "an egress settings row");
    let user: String = c.get("user_name")?;
    let user = match user.as_str() {
        "" => None,
        name => Some(name.parse().map_err(|e| c.corrupt("user_name", e))?),
    };
    Ok(EgressSettingsRecord {
        tenant: c.word("tenant")?,
        user,
        domains: c.json("domains")?,
        upstream: c.get("upstream")?,
        upstream_credentials: c.get("upstream_credentials")?,
        updated_at: c.time("updated_at")?,
    })
}
