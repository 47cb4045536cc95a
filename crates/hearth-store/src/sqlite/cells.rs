//! Reading rows back into records. Whatever the code cannot understand (an
//! unknown state word, a negative pid, a half-recorded failure) becomes a
//! [`StoreError::Corrupt`] that names the row and the column, never a panic.

use std::fmt;
use std::str::FromStr;

use hearth_types::Timestamp;
use rusqlite::types::FromSql;
use rusqlite::{Params, Row, Statement};

use super::error::Fail;
use crate::StoreError;

/// One row being decoded, and how to name it in an error.
pub(crate) struct Cells<'a, 'r> {
    row: &'a Row<'r>,
    what: String,
}

impl<'a, 'r> Cells<'a, 'r> {
    /// `what` names the row until [`Cells::name`] knows better: "a VM row".
    pub(crate) fn new(row: &'a Row<'r>, what: &str) -> Self {
        Cells {
            row,
            what: what.to_owned(),
        }
    }

    /// Names the row once its key has been read: "VM vm-3f9a".
    pub(crate) fn name(&mut self, what: String) {
        self.what = what;
    }

    pub(crate) fn get<T: FromSql>(&self, column: &str) -> Result<T, StoreError> {
        self.row.get(column).map_err(|e| self.corrupt(column, e))
    }

    /// A column holding one of a type's words (`ready`, `qemu`, `vm-...`).
    pub(crate) fn word<T>(&self, column: &str) -> Result<T, StoreError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let text: String = self.get(column)?;
        text.parse().map_err(|e| self.corrupt(column, e))
    }

    pub(crate) fn opt_word<T>(&self, column: &str) -> Result<Option<T>, StoreError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let text: Option<String> = self.get(column)?;
        text.map(|t| t.parse().map_err(|e| self.corrupt(column, e)))
            .transpose()
    }

    /// An INTEGER column of a `u64` (SQLite's integers are signed).
    pub(crate) fn unsigned(&self, column: &str) -> Result<u64, StoreError> {
        let value: i64 = self.get(column)?;
        u64::try_from(value).map_err(|_| self.corrupt(column, format_args!("{value} is negative")))
    }

    pub(crate) fn opt_unsigned(&self, column: &str) -> Result<Option<u64>, StoreError> {
        let value: Option<i64> = self.get(column)?;
        let unsigned = value.map(|v| {
            u64::try_from(v).map_err(|_| self.corrupt(column, format_args!("{v} is negative")))
        });
        unsigned.transpose()
    }

    pub(crate) fn time(&self, column: &str) -> Result<Timestamp, StoreError> {
        self.get(column).map(Timestamp::from_millis)
    }

    pub(crate) fn opt_time(&self, column: &str) -> Result<Option<Timestamp>, StoreError> {
        self.get::<Option<i64>>(column)
            .map(|ms| ms.map(Timestamp::from_millis))
    }

    pub(crate) fn json<T: serde::de::DeserializeOwned>(
        &self,
        column: &str,
    ) -> Result<T, StoreError> {
        let text: String = self.get(column)?;
        serde_json::from_str(&text).map_err(|e| self.corrupt(column, e))
    }

    pub(crate) fn opt_json<T: serde::de::DeserializeOwned>(
        &self,
        column: &str,
    ) -> Result<Option<T>, StoreError> {
        let text: Option<String> = self.get(column)?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| self.corrupt(column, e)))
            .transpose()
    }

    pub(crate) fn corrupt(&self, column: &str, problem: impl fmt::Display) -> StoreError {
        StoreError::Corrupt(format!("{}: column {column}: {problem}", self.what))
    }
}

/// Runs a query and decodes every row it returns.
pub(crate) fn all<T>(
    stmt: &mut Statement<'_>,
    params: impl Params,
    decode: Decode<T>,
) -> Result<Vec<T>, Fail> {
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// Runs a query and decodes the first row it returns, if any.
pub(crate) fn first<T>(
    stmt: &mut Statement<'_>,
    params: impl Params,
    decode: Decode<T>,
) -> Result<Option<T>, Fail> {
    let mut rows = stmt.query(params)?;
    rows.next()?.map(decode).transpose()
}

/// Turns one row into a record.
pub(crate) type Decode<T> = fn(&Row<'_>) -> Result<T, Fail>;
