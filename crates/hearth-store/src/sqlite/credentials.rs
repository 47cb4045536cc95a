//! The `credentials` table: sealed credentials by (tenant, user, provider,
//! version). The highest version is the current one; an insert keeps
//! [`KEEP_CREDENTIAL_VERSIONS`] and deletes older ones, and a rewrap
//! replaces the wrapped data keys of many rows in one transaction.

use std::collections::BTreeMap;

use hearth_types::api::CredentialFileInfo;
use hearth_types::{TenantId, UserName};
use rusqlite::{params, Connection, Row, TransactionBehavior};

use super::cells::{all, first, Cells};
use super::error::{to_i64, Fail};
use crate::{
    CredentialMeta, CredentialOwner, CredentialRecord, Rewrap, SealedParts, StoreError,
    KEEP_CREDENTIAL_VERSIONS,
};

const META: &str =
    "tenant, user_name, provider, version, created_at, size, file_count, files, kek_version";
const SEALED: &str = "wrapped_key, key_nonce, nonce, ciphertext";
const OWNER: &str = "tenant = ?1 AND user_name = ?2 AND provider = ?3";

/// `Duplicate` unless `record`'s version is above every stored one.
pub(super) fn insert(conn: &mut Connection, record: &CredentialRecord) -> Result<(), Fail> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let m = &record.meta;
    let (tenant, user, provider) = owner_params(&m.owner);
    let newest: Option<i64> = tx.query_row(
        &format!("SELECT MAX(version) FROM credentials WHERE {OWNER}"),
        (tenant, user, provider),
        |row| row.get(0),
    )?;
    let version = to_i64(m.version)?;
    if let Some(newest) = newest.filter(|&n| n >= version) {
        return Err(StoreError::Duplicate {
            what: format!(
                "version {version} of credential {} (the current one is {newest})",
                m.owner
            ),
        }
        .into());
    }
    let files = serde_json::to_string(&m.files)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let s = &record.sealed;
    tx.execute(
        &format!(
            "INSERT INTO credentials ({META}, {SEALED}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        ),
        params![
            tenant,
            user,
            provider,
            version,
            m.created_at.as_millis(),
            to_i64(m.size)?,
            to_i64(m.files.len() as u64)?,
            files,
            m.kek_version,
            s.wrapped_key,
            s.key_nonce,
            s.nonce,
            s.ciphertext,
        ],
    )?;
    tx.execute(
        &format!(
            "DELETE FROM credentials WHERE {OWNER} AND version NOT IN \
             (SELECT version FROM credentials WHERE {OWNER} ORDER BY version DESC LIMIT ?4)"
        ),
        params![tenant, user, provider, to_i64(KEEP_CREDENTIAL_VERSIONS)?],
    )?;
    tx.commit()?;
    Ok(())
}

pub(super) fn current(
    conn: &Connection,
    owner: &CredentialOwner,
) -> Result<Option<CredentialRecord>, Fail> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {META}, {SEALED} FROM credentials WHERE {OWNER} ORDER BY version DESC LIMIT 1"
    ))?;
    first(&mut stmt, owner_params(owner), decode)
}

pub(super) fn version(
    conn: &Connection,
    owner: &CredentialOwner,
    version: u64,
) -> Result<Option<CredentialRecord>, Fail> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {META}, {SEALED} FROM credentials WHERE {OWNER} AND version = ?4"
    ))?;
    let (tenant, user, provider) = owner_params(owner);
    first(
        &mut stmt,
        params![tenant, user, provider, to_i64(version)?],
        decode,
    )
}

/// The current version of each of the user's providers, by provider; the
/// sealed columns are not even read.
pub(super) fn list(
    conn: &Connection,
    tenant: &TenantId,
    user: &UserName,
) -> Result<Vec<CredentialMeta>, Fail> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {META} FROM credentials c WHERE tenant = ?1 AND user_name = ?2 \
         AND version = (SELECT MAX(version) FROM credentials d \
             WHERE d.tenant = c.tenant AND d.user_name = c.user_name AND d.provider = c.provider) \
         ORDER BY provider"
    ))?;
    all(&mut stmt, [tenant.as_str(), user.as_str()], decode_meta)
}

pub(super) fn not_under(
    conn: &Connection,
    kek_version: u32,
) -> Result<Vec<CredentialRecord>, Fail> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {META}, {SEALED} FROM credentials WHERE kek_version != ?1 \
         ORDER BY tenant, user_name, provider, version"
    ))?;
    all(&mut stmt, [kek_version], decode)
}

pub(super) fn counts_by_kek(conn: &Connection) -> Result<BTreeMap<u32, u64>, Fail> {
    let mut stmt = conn.prepare_cached(
        "SELECT kek_version, COUNT(*) FROM credentials GROUP BY kek_version ORDER BY kek_version",
    )?;
    let rows = stmt.query_map([], |row| Ok((row.get::<_, u32>(0)?, row.get::<_, i64>(1)?)))?;
    let mut counts = BTreeMap::new();
    for row in rows {
        let (kek, n) = row?;
        counts.insert(kek, n.unsigned_abs());
    }
    Ok(counts)
}

/// Every version of `owner`'s credential; the current one's metadata.
pub(super) fn delete(
    conn: &mut Connection,
    owner: &CredentialOwner,
) -> Result<Option<CredentialMeta>, Fail> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found = {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {META} FROM credentials WHERE {OWNER} ORDER BY version DESC LIMIT 1"
        ))?;
        first(&mut stmt, owner_params(owner), decode_meta)?
    };
    tx.execute(
        &format!("DELETE FROM credentials WHERE {OWNER}"),
        owner_params(owner),
    )?;
    tx.commit()?;
    Ok(found)
}

/// All of `rewraps` or none.
pub(super) fn rewrap(conn: &mut Connection, rewraps: &[Rewrap]) -> Result<u64, Fail> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for r in rewraps {
        let (tenant, user, provider) = owner_params(&r.owner);
        let changed = tx.execute(
            &format!(
                "UPDATE credentials SET kek_version = ?6, wrapped_key = ?7, key_nonce = ?8 \
                 WHERE {OWNER} AND version = ?4 AND kek_version = ?5"
            ),
            params![
                tenant,
                user,
                provider,
                to_i64(r.version)?,
                r.from_kek_version,
                r.kek_version,
                r.wrapped_key,
                r.key_nonce,
            ],
        )?;
        if changed == 0 {
            // Dropping the transaction rolls back the rewraps before it.
            return Err(StoreError::Changed {
                what: format!(
                    "version {} of credential {} (no longer under key version {})",
                    r.version, r.owner, r.from_kek_version
                ),
            }
            .into());
        }
    }
    tx.commit()?;
    Ok(rewraps.len() as u64)
}

fn owner_params(owner: &CredentialOwner) -> (&str, &str, &str) {
    (
        owner.tenant.as_str(),
        owner.user.as_str(),
        owner.provider.as_str(),
    )
}

fn decode(row: &Row<'_>) -> Result<CredentialRecord, Fail> {
    let meta = decode_meta(row)?;
    let cells = Cells::new(
        row,
        &format!("version {} of credential {}", meta.version, meta.owner),
    );
    let sealed = SealedParts {
        wrapped_key: cells.get("wrapped_key")?,
        key_nonce: cells.get("key_nonce")?,
        nonce: cells.get("nonce")?,
        ciphertext: cells.get("ciphertext")?,
    };
    Ok(CredentialRecord { meta, sealed })
}

fn decode_meta(row: &Row<'_>) -> Result<CredentialMeta, Fail> {
    let mut cells = Cells::new(row, "a credential row");
    let owner = CredentialOwner {
        tenant: cells.word("tenant")?,
        user: cells.word("user_name")?,
        provider: cells.word("provider")?,
    };
    let version = cells.unsigned("version")?;
    cells.name(format!("version {version} of credential {owner}"));
    let files: Vec<CredentialFileInfo> = cells.json("files")?;
    let count = cells.unsigned("file_count")?;
    if count != files.len() as u64 {
        let why = format!("{count}, but `files` lists {}", files.len());
        return Err(cells.corrupt("file_count", why).into());
    }
    let kek = cells.unsigned("kek_version")?;
    let kek_version = u32::try_from(kek)
        .map_err(|_| cells.corrupt("kek_version", format_args!("{kek} is too large")))?;
    Ok(CredentialMeta {
        owner,
        version,
        created_at: cells.time("created_at")?,
        size: cells.unsigned("size")?,
        files,
        kek_version,
    })
}

#[cfg(test)]
mod tests {
    use hearth_types::Timestamp;

    use super::super::migrate::{migrate, MIGRATIONS};
    use super::*;

    /// A store at schema 4 (viewer links, no credentials) with a token in
    /// it upgrades: the token is kept and credentials can be stored.
    #[test]
    fn a_schema_4_store_upgrades_and_keeps_its_rows() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, "test", &MIGRATIONS[..4]).unwrap();
        conn.execute(
            "INSERT INTO tokens (id, secret_sha256, tenant, admin, created_at) \
             VALUES ('hth_00000001', 'ab', 'team-a', 0, 5)",
            [],
        )
        .unwrap();
        migrate(&mut conn, "test", MIGRATIONS).unwrap();
        assert_eq!(
            super::super::migrate::current_version(&conn).unwrap(),
            super::super::SCHEMA_VERSION
        );
        let kept: i64 = conn
            .query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 1);
        let owner = CredentialOwner {
            tenant: "team-a".parse().unwrap(),
            user: "alice".parse().unwrap(),
            provider: "claude".parse().unwrap(),
        };
        let record = CredentialRecord {
            meta: CredentialMeta {
                owner: owner.clone(),
                version: 1,
                created_at: Timestamp::from_millis(7),
                size: 3,
                files: vec![],
                kek_version: 1,
            },
            sealed: SealedParts {
                wrapped_key: vec![1],
                key_nonce: vec![2],
                nonce: vec![3],
                ciphertext: vec![4],
            },
        };
        insert(&mut conn, &record).unwrap();
        assert_eq!(current(&conn, &owner).unwrap(), Some(record));
    }
}
