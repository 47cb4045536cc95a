//! The schema, as numbered migrations in `src/migrations/NNNN_name.sql`.
//! Each is applied once, in numeric order, inside its own transaction, and
//! recorded in `schema_migrations`; a database already past the last one
//! this build knows is refused rather than misread.

use hearth_types::Timestamp;
use rusqlite::{params, Connection, TransactionBehavior};

use super::error::Fail;
use crate::StoreError;

/// One step of the schema.
#[derive(Debug)]
pub(crate) struct Migration {
    pub(crate) version: u32,
    /// The file's name without `.sql`: `0001_initial`.
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

/// Every migration, oldest first. Add new ones at the end; never edit one
/// that has shipped.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_initial",
        sql: include_str!("../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "0002_agent",
        sql: include_str!("../migrations/0002_agent.sql"),
    },
    Migration {
        version: 3,
        name: "0003_token_lifecycle",
        sql: include_str!("../migrations/0003_token_lifecycle.sql"),
    },
    Migration {
        version: 4,
        name: "0004_viewer_links",
        sql: include_str!("../migrations/0004_viewer_links.sql"),
    },
    Migration {
        version: 5,
        name: "0005_credentials",
        sql: include_str!("../migrations/0005_credentials.sql"),
    },
    Migration {
        version: 6,
        name: "0006_sessions",
        sql: include_str!("../migrations/0006_sessions.sql"),
    },
    Migration {
        version: 7,
        name: "0007_net_slots",
        sql: include_str!("../migrations/0007_net_slots.sql"),
    },
    Migration {
        version: 8,
        name: "0008_egress_settings",
        sql: include_str!("../migrations/0008_egress_settings.sql"),
    },
    // Persistent VMs.
    Migration {
        version: 9,
        name: "0009_persistent_vms",
        sql: include_str!("../migrations/0009_persistent_vms.sql"),
    },
    // Users' CLI VMs.
    Migration {
        version: 10,
        name: "0010_cli_vms",
        sql: include_str!("../migrations/0010_cli_vms.sql"),
    },
    // Snapshots.
    Migration {
        version: 11,
        name: "0011_snapshots",
        sql: include_str!("../migrations/0011_snapshots.sql"),
    },
    // Warm pools.
    Migration {
        version: 12,
        name: "0012_pools",
        sql: include_str!("../migrations/0012_pools.sql"),
    },
    // A VM's NIC policy.
    Migration {
        version: 13,
        name: "0013_vm_network",
        sql: include_str!("../migrations/0013_vm_network.sql"),
    },
    // Pools filled from template snapshots.
    Migration {
        version: 14,
        name: "0014_pool_templates",
        sql: include_str!("../migrations/0014_pool_templates.sql"),
    },
    // Tenants' network policies.
    Migration {
        version: 15,
        name: "0015_tenant_network",
        sql: include_str!("../migrations/0015_tenant_network.sql"),
    },
    // What networked VMs' resolvers and proxies refused, across restarts.
    Migration {
        version: 16,
        name: "0016_egress_refusals",
        sql: include_str!("../migrations/0016_egress_refusals.sql"),
    },
];

/// The schema version this build writes: the last migration's number.
pub const SCHEMA_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

const BOOTSTRAP: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
) STRICT";

/// The newest migration applied to `conn`; 0 for a new database.
pub(crate) fn current_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |row| row.get(0),
    )
}

/// Brings the database at `location` (for messages) up to the last of
/// `migrations`, which must be in ascending order.
pub(crate) fn migrate(
    conn: &mut Connection,
    location: &str,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let found = bootstrap(conn).map_err(|e| {
        Fail::from(e).into_store(format_args!("reading the schema version of {location}"))
    })?;
    let known = migrations.last().map_or(0, |m| m.version);
    if found > known {
        return Err(StoreError::Corrupt(format!(
            "the store at {location} was written by a newer hearth (schema {found}, this one knows {known}); \
             run that hearth, or point this one at another data directory"
        )));
    }
    for migration in migrations {
        apply(conn, migration).map_err(|f| {
            f.into_store(format_args!(
                "applying migration {} to {location}",
                migration.name
            ))
        })?;
    }
    Ok(())
}

/// The migrations table, made if missing, and the version it records:
/// under `BEGIN IMMEDIATE` like every migration, so a second process
/// opening the store waits for the write lock (the busy timeout) rather
/// than failing when it would have to upgrade a read.
fn bootstrap(conn: &mut Connection) -> rusqlite::Result<u32> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(BOOTSTRAP)?;
    let found = current_version(&tx)?;
    tx.commit()?;
    Ok(found)
}

/// Applies one migration unless it already was. `BEGIN IMMEDIATE`: two
/// processes opening a new store at once take turns, and the second finds
/// the migration recorded.
fn apply(conn: &mut Connection, migration: &Migration) -> Result<(), Fail> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let applied: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
        [migration.version],
        |row| row.get(0),
    )?;
    if !applied {
        tx.execute_batch(migration.sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![
                migration.version,
                migration.name,
                Timestamp::now().as_millis()
            ],
        )?;
        tracing::info!(migration = migration.name, "store schema migrated");
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_in_order_and_match_the_files() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{} is out of order", m.name);
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{} does not start with its number",
                m.name
            );
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/migrations");
        let files: BTreeSet<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        let listed: BTreeSet<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{}.sql", m.name))
            .collect();
        assert_eq!(
            files, listed,
            "every file in {dir} must be listed in MIGRATIONS, and only those"
        );
        assert_eq!(SCHEMA_VERSION as usize, MIGRATIONS.len());
    }

    /// Each fake migration depends on the one before and logs its number,
    /// so running them out of order would fail or log the wrong order.
    const FAKE: &[Migration] = &[
        Migration {
            version: 1,
            name: "0001_a",
            sql: "CREATE TABLE log (n INTEGER);",
        },
        Migration {
            version: 2,
            name: "0002_b",
            sql: "ALTER TABLE log ADD COLUMN m INTEGER; INSERT INTO log VALUES (2, 2);",
        },
        Migration {
            version: 3,
            name: "0003_c",
            sql: "INSERT INTO log (n, m) SELECT 3, m + 1 FROM log;",
        },
    ];

    fn log(conn: &Connection) -> Vec<(i64, i64)> {
        let mut stmt = conn.prepare("SELECT n, m FROM log ORDER BY rowid").unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    fn versions(conn: &Connection) -> Vec<u32> {
        let mut stmt = conn
            .prepare("SELECT version FROM schema_migrations ORDER BY applied_at, version")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn migrations_are_applied_in_numeric_order_each_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, "test", &FAKE[..2]).unwrap();
        assert_eq!(current_version(&conn).unwrap(), 2);
        migrate(&mut conn, "test", FAKE).unwrap();
        migrate(&mut conn, "test", FAKE).unwrap();
        assert_eq!(versions(&conn), [1, 2, 3]);
        assert_eq!(log(&conn), [(2, 2), (3, 3)]);
    }

    #[test]
    fn a_failing_migration_leaves_the_schema_as_it_was() {
        let broken = [
            Migration {
                version: 1,
                name: "0001_a",
                sql: "CREATE TABLE log (n INTEGER);",
            },
            Migration {
                version: 2,
                name: "0002_b",
                sql: "CREATE TABLE half (n INTEGER); SELECT nonsense FROM;",
            },
        ];
        let mut conn = Connection::open_in_memory().unwrap();
        let err = migrate(&mut conn, "test", &broken).unwrap_err();
        let text = chain(&err).join(": ");
        assert!(text.contains("applying migration 0002_b to test"), "{text}");
        assert_eq!(current_version(&conn).unwrap(), 1);
        let half: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'half')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!half, "the failed migration's first statement was kept");
    }

    fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        std::iter::successors(Some(e), |e| e.source())
            .map(ToString::to_string)
            .collect()
    }
}
