//! The network reconciler: compares the kernel's hearth-named namespaces
//! and links with the slots in the store and removes what no VM owns. It
//! reads the kernel before the store, and a slot's objects are made only
//! after its claim is stored, so a VM being created is never mistaken for
//! an orphan; the grace periods are a second guard (and the wait a crashed
//! creation's leftovers get before they go).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use hearth_store::NetSlotStore;
use hearth_types::{Timestamp, VmId};

use crate::names::Slot;
use crate::network::{to_slot, Network};
use crate::NetError;

/// What the reconciler remembers between passes: when it first saw each
/// kernel slot that no VM owns.
#[derive(Debug)]
pub struct Orphans {
    grace: Duration,
    first_seen: BTreeMap<Slot, Instant>,
}

impl Orphans {
    /// Orphans are removed once seen unowned for `grace`.
    pub fn new(grace: Duration) -> Orphans {
        Orphans {
            grace,
            first_seen: BTreeMap::new(),
        }
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Kernel objects of slots no VM holds, removed.
    pub removed_orphans: Vec<Slot>,
    /// Slots held by VMs that no longer live, torn down and released.
    pub released: Vec<(VmId, Slot)>,
    /// Orphans still in their grace.
    pub waiting: Vec<Slot>,
}

impl<S: NetSlotStore + ?Sized> Network<S> {
    /// One pass. `live` answers whether a VM still owns its network (not
    /// destroyed, not gone from the store); slots of VMs that do not, older
    /// than the orphans' grace, are torn down and released.
    pub async fn reconcile(
        &self,
        orphans: &mut Orphans,
        live: impl Fn(&VmId) -> bool,
    ) -> Result<ReconcileReport, NetError> {
        let kernel = self.host().kernel_slots().await?;
        let held = self.held().await?;
        let mut report = ReconcileReport::default();
        let now = Timestamp::now();
        let mut owned = BTreeSet::new();
        for slot in held {
            let number = to_slot(slot.slot)?;
            let old_enough = now.since(slot.claimed_at) >= orphans.grace;
            if live(&slot.vm) || !old_enough {
                owned.insert(number);
                continue;
            }
            self.remove(&slot.vm, number).await?;
            report.released.push((slot.vm, number));
        }
        self.remove_orphans(&kernel, &owned, orphans, &mut report)
            .await?;
        Ok(report)
    }

    async fn remove_orphans(
        &self,
        kernel: &BTreeSet<Slot>,
        owned: &BTreeSet<Slot>,
        orphans: &mut Orphans,
        report: &mut ReconcileReport,
    ) -> Result<(), NetError> {
        let now = Instant::now();
        orphans
            .first_seen
            .retain(|slot, _| kernel.contains(slot) && !owned.contains(slot));
        let released: BTreeSet<Slot> = report.released.iter().map(|(_, s)| *s).collect();
        for &slot in kernel.difference(owned).filter(|s| !released.contains(s)) {
            let seen = *orphans.first_seen.entry(slot).or_insert(now);
            if now.duration_since(seen) < orphans.grace {
                report.waiting.push(slot);
                continue;
            }
            self.host().destroy(slot).await?;
            orphans.first_seen.remove(&slot);
            report.removed_orphans.push(slot);
        }
        Ok(())
    }
}
