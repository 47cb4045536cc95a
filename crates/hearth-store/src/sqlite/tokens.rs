//! The `tokens` table: API tokens, by the SHA-256 of their secret.

use rusqlite::{Connection, Row};

use super::cells::{first, Cells};
use super::error::{constraint, Constraint, Fail};
use crate::{StoreError, TokenRecord};

/// `Duplicate` if the id or the secret's hash is already stored.
pub(super) fn insert(conn: &Connection, token: &TokenRecord) -> Result<(), Fail> {
    let inserted = conn.execute(
        "INSERT INTO tokens (id, secret_sha256, tenant, admin, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        (
            token.id.as_str(),
            token.secret_sha256.as_str(),
            token.tenant.as_str(),
            token.admin,
            token.created_at.as_millis(),
        ),
    );
    let what = match inserted.as_ref().err().and_then(constraint) {
        Some(Constraint::PrimaryKey) => format!("token {}", token.id),
        Some(Constraint::Unique) => "a token with the same secret".to_owned(),
        _ => return inserted.map(drop).map_err(Fail::from),
    };
    Err(StoreError::Duplicate { what }.into())
}

pub(super) fn by_hash(conn: &Connection, hash: &str) -> Result<Option<TokenRecord>, Fail> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, secret_sha256, tenant, admin, created_at FROM tokens WHERE secret_sha256 = ?1",
    )?;
    first(&mut stmt, [hash], decode)
}

fn decode(row: &Row<'_>) -> Result<TokenRecord, Fail> {
    let mut cells = Cells::new(row, "a token row");
    let id: String = cells.get("id")?;
    cells.name(format!("token {id}"));
    Ok(TokenRecord {
        id,
        secret_sha256: cells.get("secret_sha256")?,
        tenant: cells.word("tenant")?,
        admin: cells.get("admin")?,
        created_at: cells.time("created_at")?,
    })
}
