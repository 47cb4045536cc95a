//! [`Network`]: VM networks with their slots kept in the store. A slot is
//! claimed before anything is made in the kernel and released only after
//! everything is removed, so the kernel never holds a hearth-named object
//! without a slot row the reconciler can see.

use std::sync::Arc;
use std::time::Duration;

use hearth_store::{NetSlot, NetSlotStore, SlotClaim};
use hearth_types::{Timestamp, VmId};

use crate::host::{NetHost, VmNic};
use crate::names::Slot;
use crate::policy::NicPolicy;
use crate::NetError;

/// How long a released slot waits before another VM may take it.
pub const SLOT_GRACE: Duration = Duration::from_secs(60);

/// VM networks on one host, against one store.
#[derive(Debug)]
pub struct Network<S: ?Sized> {
    host: NetHost,
    store: Arc<S>,
    slot_grace: Duration,
}

impl<S: NetSlotStore + ?Sized> Network<S> {
    pub fn new(host: NetHost, store: Arc<S>) -> Network<S> {
        Network {
            host,
            store,
            slot_grace: SLOT_GRACE,
        }
    }

    /// The same, with another reuse grace for released slots.
    pub fn with_slot_grace(mut self, grace: Duration) -> Network<S> {
        self.slot_grace = grace;
        self
    }

    pub fn host(&self) -> &NetHost {
        &self.host
    }

    /// Gives VM `vm` its network: claims its slot (the one it holds, if
    /// any), removes whatever the kernel still has of that slot (an orphan
    /// the reconciler has not reached yet: the slot is this VM's now), then
    /// makes the slot's objects. A failure removes what was made and
    /// releases the slot. For a VM being created: a running VM's network
    /// (adopted after a restart) is left as it is, its TAP held by its
    /// hypervisor.
    pub async fn attach(&self, vm: &VmId, policy: &NicPolicy) -> Result<VmNic, NetError> {
        let slot = self.claim(vm).await?;
        let made = match self.host.destroy(slot).await {
            Ok(_) => self.host.create(slot, policy).await,
            Err(e) => Err(e),
        };
        match made {
            Ok(nic) => Ok(nic),
            Err(e) => {
                if let Err(undo) = self.remove(vm, slot).await {
                    tracing::warn!(%vm, %slot, error = %undo, "undoing a failed network; the reconciler will retry");
                }
                Err(e)
            }
        }
    }

    /// How many of VM `vm`'s packets its namespace refused; `None` when it
    /// has no network.
    pub async fn refused_packets(&self, vm: &VmId) -> Result<Option<u64>, NetError> {
        let held = self.store.net_slots().await.map_err(NetError::Store)?;
        let Some(mine) = held.into_iter().find(|s| &s.vm == vm) else {
            return Ok(None);
        };
        let slot = to_slot(mine.slot)?;
        self.host.refused_packets(slot).await.map(Some)
    }

    /// Removes VM `vm`'s network and releases its slot; `false` when it had
    /// none. Idempotent: the one deletion path calls it for every VM.
    pub async fn detach(&self, vm: &VmId) -> Result<bool, NetError> {
        let held = self.store.net_slots().await.map_err(NetError::Store)?;
        let Some(mine) = held.into_iter().find(|s| &s.vm == vm) else {
            return Ok(false);
        };
        self.remove(vm, to_slot(mine.slot)?).await?;
        Ok(true)
    }

    /// Every slot the store says is held.
    pub async fn held(&self) -> Result<Vec<NetSlot>, NetError> {
        self.store.net_slots().await.map_err(NetError::Store)
    }

    async fn claim(&self, vm: &VmId) -> Result<Slot, NetError> {
        let now = Timestamp::now();
        let claim = SlotClaim {
            pool_size: self.host.pool().size(),
            now,
            released_before: Timestamp::from_millis(
                now.as_millis() - self.slot_grace.as_millis() as i64,
            ),
        };
        let slot = self.store.claim_net_slot(vm, claim).await;
        let slot = slot.map_err(NetError::Store)?;
        to_slot(slot.ok_or_else(|| NetError::PoolFull(vm.clone()))?)
    }

    pub(crate) async fn remove(&self, vm: &VmId, slot: Slot) -> Result<(), NetError> {
        self.host.destroy(slot).await?;
        let released = self.store.release_net_slot(vm, Timestamp::now()).await;
        released.map(drop).map_err(NetError::Store)
    }
}

pub(crate) fn to_slot(n: u32) -> Result<Slot, NetError> {
    Slot::new(n).ok_or(NetError::SlotOutOfRange(n))
}
