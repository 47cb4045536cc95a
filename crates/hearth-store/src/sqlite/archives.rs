//! The `archives` table: where each destroyed VM's logs went, so that the
//! oldest can be pruned when the archive grows too big.

use std::path::PathBuf;

use hearth_types::VmId;
use rusqlite::{Connection, Row};

use super::cells::{all, first, Cells};
use super::error::{to_i64, Fail};
use crate::ArchiveRecord;

const COLUMNS: &str = "vm_id, tenant, path, bytes, created_at";

/// Records the archive, replacing an earlier record for the same VM.
pub(super) fn insert(conn: &Connection, archive: &ArchiveRecord) -> Result<(), Fail> {
    let path = archive
        .path
        .to_str()
        .ok_or_else(|| rusqlite::Error::InvalidPath(archive.path.clone()))?;
    conn.execute(
        "INSERT INTO archives (vm_id, tenant, path, bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (vm_id) DO UPDATE SET \
             tenant = excluded.tenant, path = excluded.path, bytes = excluded.bytes, created_at = excluded.created_at",
        (
            archive.vm.as_str(),
            archive.tenant.as_str(),
            path,
            to_i64(archive.bytes)?,
            archive.created_at.as_millis(),
        ),
    )?;
    Ok(())
}

pub(super) fn get(conn: &Connection, vm: &VmId) -> Result<Option<ArchiveRecord>, Fail> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM archives WHERE vm_id = ?1"))?;
    first(&mut stmt, [vm.as_str()], decode)
}

/// Oldest first.
pub(super) fn list(conn: &Connection) -> Result<Vec<ArchiveRecord>, Fail> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM archives ORDER BY created_at, vm_id"
    ))?;
    all(&mut stmt, [], decode)
}

/// Deleting an archive that is not recorded does nothing.
pub(super) fn delete(conn: &Connection, vm: &VmId) -> Result<(), Fail> {
    conn.execute("DELETE FROM archives WHERE vm_id = ?1", [vm.as_str()])?;
    Ok(())
}

fn decode(row: &Row<'_>) -> Result<ArchiveRecord, Fail> {
    let mut cells = Cells::new(row, "an archive row");
    let vm: VmId = cells.word("vm_id")?;
    cells.name(format!("the archive of VM {vm}"));
    Ok(ArchiveRecord {
        tenant: cells.word("tenant")?,
        path: PathBuf::from(cells.get::<String>("path")?),
        bytes: cells.unsigned("bytes")?,
        created_at: cells.time("created_at")?,
        vm,
    })
}
