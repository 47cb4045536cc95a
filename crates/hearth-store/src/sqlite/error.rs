//! How SQLite's errors become [`StoreError`]s: constraint violations that
//! mean something to the caller (a duplicate id, an unknown VM) get their
//! own variants; the rest are `Backend` errors that say what the store was
//! doing.

use std::fmt;
use std::path::PathBuf;

use rusqlite::ffi;

use crate::StoreError;

/// The source of a [`StoreError::Backend`] from the SQLite store.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error("could not create the store's directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `doing` is what the store was asked to do, e.g. `inserting VM vm-1`.
    #[error("{doing}")]
    Sql {
        doing: String,
        #[source]
        source: rusqlite::Error,
    },
}

impl From<SqliteError> for StoreError {
    fn from(e: SqliteError) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

/// Why one store operation stopped: SQLite failed (context is added once,
/// by the caller that knows the operation), or the operation itself
/// decided (`NotFound`, `Conflict`, `Corrupt`, ...).
#[derive(Debug)]
pub(crate) enum Fail {
    Sql(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl Fail {
    pub(crate) fn into_store(self, doing: impl fmt::Display) -> StoreError {
        match self {
            Fail::Sql(source) => SqliteError::Sql {
                doing: doing.to_string(),
                source,
            }
            .into(),
            Fail::Store(e) => e,
        }
    }
}

/// The constraint a statement broke, for those that callers care about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Constraint {
    PrimaryKey,
    Unique,
    ForeignKey,
}

pub(crate) fn constraint(e: &rusqlite::Error) -> Option<Constraint> {
    match e.sqlite_extended_error_code()? {
        ffi::SQLITE_CONSTRAINT_PRIMARYKEY => Some(Constraint::PrimaryKey),
        ffi::SQLITE_CONSTRAINT_UNIQUE => Some(Constraint::Unique),
        ffi::SQLITE_CONSTRAINT_FOREIGNKEY => Some(Constraint::ForeignKey),
        _ => None,
    }
}

/// A `u64` for an INTEGER column, which holds at most `i64::MAX`.
pub(crate) fn to_i64(value: u64) -> Result<i64, rusqlite::Error> {
    i64::try_from(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}
