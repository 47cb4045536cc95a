//! The `tokens` table: API tokens, by the SHA-256 of their secret, with
//! their expiry and last use. Revoking deletes the row.

use hearth_types::Timestamp;
use rusqlite::{Connection, Row, TransactionBehavior};

use super::cells::{all, first, Cells};
use super::error::{constraint, Constraint, Fail};
use crate::{StoreError, TokenRecord};

const COLUMNS: &str = "id, secret_sha256, tenant, admin, created_at, expires_at, last_used_at";

/// `Duplicate` if the id or the secret's hash is already stored.
pub(super) fn insert(conn: &Connection, token: &TokenRecord) -> Result<(), Fail> {
    let inserted = conn.execute(
        &format!("INSERT INTO tokens ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        (
            token.id.as_str(),
            token.secret_sha256.as_str(),
            token.tenant.as_str(),
            token.admin,
            token.created_at.as_millis(),
            token.expires_at.map(Timestamp::as_millis),
            token.last_used_at.map(Timestamp::as_millis),
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
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tokens WHERE secret_sha256 = ?1"
    ))?;
    first(&mut stmt, [hash], decode)
}

/// Oldest first; ties by id, so the order is stable.
pub(super) fn list(conn: &Connection) -> Result<Vec<TokenRecord>, Fail> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tokens ORDER BY created_at, id"
    ))?;
    all(&mut stmt, [], decode)
}

/// The deleted token, read and deleted in one transaction.
pub(super) fn revoke(conn: &mut Connection, id: &str) -> Result<Option<TokenRecord>, Fail> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found = {
        let mut stmt = tx.prepare_cached(&format!("SELECT {COLUMNS} FROM tokens WHERE id = ?1"))?;
        first(&mut stmt, [id], decode)?
    };
    if found.is_some() {
        tx.execute("DELETE FROM tokens WHERE id = ?1", [id])?;
    }
    tx.commit()?;
    Ok(found)
}

/// A token that is gone (revoked meanwhile) is not an error: nothing to do.
pub(super) fn used(conn: &Connection, id: &str, at: Timestamp) -> Result<(), Fail> {
    conn.execute(
        "UPDATE tokens SET last_used_at = ?2 WHERE id = ?1",
        (id, at.as_millis()),
    )?;
    Ok(())
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
        expires_at: cells.opt_time("expires_at")?,
        last_used_at: cells.opt_time("last_used_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::migrate::{migrate, MIGRATIONS};
    use super::*;

    /// A store of schema 2 (tokens without expiry or last use) with a token
    /// in it upgrades, and the token reads back as never expiring, unused.
    #[test]
    fn a_schema_2_store_with_tokens_upgrades() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, "test", &MIGRATIONS[..2]).unwrap();
        conn.execute(
            "INSERT INTO tokens (id, secret_sha256, tenant, admin, created_at) \
             VALUES ('hth_00000001', 'ab', 'team-a', 0, 5)",
            [],
        )
        .unwrap();
        migrate(&mut conn, "test", MIGRATIONS).unwrap();
        let token = by_hash(&conn, "ab").unwrap().unwrap();
        assert_eq!(token.id, "hth_00000001");
        assert_eq!((token.expires_at, token.last_used_at), (None, None));
        used(&conn, "hth_00000001", Timestamp::from_millis(9)).unwrap();
        let token = by_hash(&conn, "ab").unwrap().unwrap();
        assert_eq!(token.last_used_at, Some(Timestamp::from_millis(9)));
    }
}
