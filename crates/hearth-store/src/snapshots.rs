//! Where snapshots are recorded: the narrow [`SnapshotStore`] trait. A
//! snapshot's row is written before its files and removed after them, so
//! a name is never given twice and a half-made snapshot is found by its
//! `creating` state.

use std::fmt;

use async_trait::async_trait;
use hearth_types::{SnapshotManifest, SnapshotName, TenantId, Timestamp, VmId};

use crate::StoreError;

/// One snapshot's row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub name: SnapshotName,
    pub tenant: TenantId,
    /// `None` while its files are being written.
    pub manifest: Option<SnapshotManifest>,
    pub created_at: Timestamp,
}

/// What a VM is to a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotRole {
    /// Booted from an image to be snapshotted: it gets no configuration.
    Template,
    /// Restored from the snapshot: its agent is greeted as restored.
    Restored,
}

impl SnapshotRole {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotRole::Template => "template",
            SnapshotRole::Restored => "restored",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "template" => Some(SnapshotRole::Template),
            "restored" => Some(SnapshotRole::Restored),
            _ => None,
        }
    }
}

#[async_trait]
pub trait SnapshotStore: Send + Sync + fmt::Debug {
    /// Records a new snapshot being made; `Duplicate` when the name is taken.
    async fn insert_snapshot(&self, snap: &SnapshotRecord) -> Result<(), StoreError>;
    /// The snapshot's files are complete: its manifest.
    async fn finish_snapshot(
        &self,
        name: &SnapshotName,
        manifest: &SnapshotManifest,
    ) -> Result<(), StoreError>;
    async fn snapshot(&self, name: &SnapshotName) -> Result<Option<SnapshotRecord>, StoreError>;
    async fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>, StoreError>;
    /// Removes the row (and the VMs' links to it).
    async fn delete_snapshot(&self, name: &SnapshotName) -> Result<(), StoreError>;
    async fn set_snapshot_role(
        &self,
        vm: &VmId,
        snapshot: &SnapshotName,
        role: SnapshotRole,
    ) -> Result<(), StoreError>;
    async fn snapshot_role(
        &self,
        vm: &VmId,
    ) -> Result<Option<(SnapshotName, SnapshotRole)>, StoreError>;
    /// The VMs made from or for `snapshot` that are not destroyed.
    async fn snapshot_users(&self, snapshot: &SnapshotName) -> Result<Vec<VmId>, StoreError>;
}
