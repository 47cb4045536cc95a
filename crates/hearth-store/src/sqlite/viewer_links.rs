//! The `viewer_links` table: links that open one VM's screen, by the
//! SHA-256 of their secret. Revoking stamps the row; it stays listed.

use hearth_types::{Timestamp, VmId};
use rusqlite::{Connection, Row};

use super::cells::{all, first, Cells};
use super::error::{constraint, Constraint, Fail};
use crate::{StoreError, ViewerLinkRecord};

const COLUMNS: &str = "id, secret_sha256, vm_id, tenant, created_at, expires_at, revoked_at";

/// `Duplicate` if the id or the secret's hash is already stored.
pub(super) fn insert(conn: &Connection, link: &ViewerLinkRecord) -> Result<(), Fail> {
    let inserted = conn.execute(
        &format!("INSERT INTO viewer_links ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        (
            link.id.as_str(),
            link.secret_sha256.as_str(),
            link.vm.as_str(),
            link.tenant.as_str(),
            link.created_at.as_millis(),
            link.expires_at.as_millis(),
            link.revoked_at.map(Timestamp::as_millis),
        ),
    );
    let what = match inserted.as_ref().err().and_then(constraint) {
        Some(Constraint::PrimaryKey) => format!("viewer link {}", link.id),
        Some(Constraint::Unique) => "a viewer link with the same secret".to_owned(),
        _ => return inserted.map(drop).map_err(Fail::from),
    };
    Err(StoreError::Duplicate { what }.into())
}

pub(super) fn by_hash(conn: &Connection, hash: &str) -> Result<Option<ViewerLinkRecord>, Fail> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM viewer_links WHERE secret_sha256 = ?1"
    ))?;
    first(&mut stmt, [hash], decode)
}

/// VM `vm`'s links, oldest first.
pub(super) fn of_vm(conn: &Connection, vm: &VmId) -> Result<Vec<ViewerLinkRecord>, Fail> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM viewer_links WHERE vm_id = ?1 ORDER BY created_at, id"
    ))?;
    all(&mut stmt, [vm.as_str()], decode)
}

/// Stamps link `id` of VM `vm` revoked (once: a second revoke keeps the
/// first time); the link as it is now, `None` when VM `vm` has no such link.
pub(super) fn revoke(
    conn: &Connection,
    vm: &VmId,
    id: &str,
    at: Timestamp,
) -> Result<Option<ViewerLinkRecord>, Fail> {
    conn.execute(
        "UPDATE viewer_links SET revoked_at = ?3 \
         WHERE id = ?1 AND vm_id = ?2 AND revoked_at IS NULL",
        (id, vm.as_str(), at.as_millis()),
    )?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM viewer_links WHERE id = ?1 AND vm_id = ?2"
    ))?;
    first(&mut stmt, [id, vm.as_str()], decode)
}

fn decode(row: &Row<'_>) -> Result<ViewerLinkRecord, Fail> {
    let mut cells = Cells::new(row, "a viewer link row");
    let id: String = cells.get("id")?;
    cells.name(format!("viewer link {id}"));
    Ok(ViewerLinkRecord {
        id,
        secret_sha256: cells.get("secret_sha256")?,
        vm: cells.word("vm_id")?,
        tenant: cells.word("tenant")?,
        created_at: cells.time("created_at")?,
        expires_at: cells.time("expires_at")?,
        revoked_at: cells.opt_time("revoked_at")?,
    })
}
