//! Where `hearth-net` keeps its address slots: the narrow [`NetSlotStore`]
//! trait. A slot number names everything a VM's network is made of in the
//! kernel, so it is recorded here before any of it exists, and a released
//! number is given out again only after a grace period.

use std::fmt;

use async_trait::async_trait;
use hearth_types::{Timestamp, VmId};

use crate::StoreError;

/// One slot a VM holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetSlot {
    pub slot: u32,
    pub vm: VmId,
    pub claimed_at: Timestamp,
}

/// How a claim picks its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotClaim {
    /// Slots are numbered `0..pool_size`.
    pub pool_size: u32,
    pub now: Timestamp,
    /// A released slot is free again when it was released at or before
    /// this time (`now` minus the grace period).
    pub released_before: Timestamp,
}

/// The slots of VM networks.
#[async_trait]
pub trait NetSlotStore: Send + Sync + fmt::Debug {
    /// VM `vm`'s slot: the one it holds, or else the lowest free one,
    /// claimed in one transaction. `None` when all of the pool is held or
    /// still in its grace period.
    async fn claim_net_slot(&self, vm: &VmId, claim: SlotClaim) -> Result<Option<u32>, StoreError>;
    /// Releases VM `vm`'s slot; the slot it held, `None` when it held none.
    async fn release_net_slot(&self, vm: &VmId, at: Timestamp) -> Result<Option<u32>, StoreError>;
    /// Every held slot, by number.
    async fn net_slots(&self) -> Result<Vec<NetSlot>, StoreError>;
}
