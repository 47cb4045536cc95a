//! Where warm pools are kept: the narrow [`PoolStore`] trait, a supertrait
//! of `Store`. The one operation that matters is [`PoolStore::take_pool_vm`]:
//! a compare-and-set that removes a waiting VM from its pool and gives it
//! to a tenant in one transaction, so two creates never get the same VM.

use std::fmt;

use async_trait::async_trait;
use hearth_types::guest::GuestConfig;
use hearth_types::pool::PoolSettings;
use hearth_types::{TenantId, Timestamp, VmId};

use crate::{StoreError, VmRecord};

/// A pool's row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolRecord {
    pub image: String,
    pub settings: PoolSettings,
    pub updated_at: Timestamp,
}

/// One pooled VM, as the pool sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolVmRecord {
    pub vm: VmId,
    pub image: String,
    /// What it booted from (see [`PoolTake::assets`]).
    pub assets: String,
    pub created_at: Timestamp,
    /// Its agent is connected (said hello and has not dropped since).
    pub warm: bool,
    /// Since when, while it is: its time to live counts from here.
    pub warm_since: Option<Timestamp>,
}

/// What a create that fits a pool asks for, and what the VM becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolTake {
    pub image: String,
    pub vcpus: u8,
    pub memory_mib: u32,
    /// The fingerprint of the image, kernel and hypervisor a VM must have
    /// booted from to be handed out.
    pub assets: String,
    /// Only VMs waiting since this or later (now minus the time to live).
    pub born_after: Timestamp,
    pub tenant: TenantId,
    pub config: GuestConfig,
    pub at: Timestamp,
    pub ready_deadline: Timestamp,
    /// The hand-out's event, in plain words.
    pub message: String,
}

#[async_trait]
pub trait PoolStore: Send + Sync + fmt::Debug {
    /// Creates or changes the pool of `pool.image`.
    async fn put_pool(&self, pool: &PoolRecord) -> Result<(), StoreError>;
    /// Every pool, by image.
    async fn pools(&self) -> Result<Vec<PoolRecord>, StoreError>;
    /// Deletes the pool of `image` (its VMs stay rows of `pool_vms` until
    /// they are destroyed); the pool it was, if any.
    async fn delete_pool(&self, image: &str) -> Result<Option<PoolRecord>, StoreError>;
    /// Records `vm` (already inserted, tenant `_pool`) as pooled.
    async fn add_pool_vm(&self, vm: &PoolVmRecord) -> Result<(), StoreError>;
    /// Every pooled VM, oldest first.
    async fn pool_vms(&self) -> Result<Vec<PoolVmRecord>, StoreError>;
    /// Takes the oldest warm, booting VM that fits `take`: removes it from
    /// its pool and gives it `take.tenant`, its configuration, a new
    /// creation time and readiness deadline, and the event, in one
    /// transaction. `None` when none fits.
    async fn take_pool_vm(&self, take: &PoolTake) -> Result<Option<VmRecord>, StoreError>;
    /// Removes `vm` from its pool unless someone took it first: true when
    /// this call removed it (the caller may then destroy it).
    async fn remove_pool_vm(&self, vm: &VmId) -> Result<bool, StoreError>;
}
