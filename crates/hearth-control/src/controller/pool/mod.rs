//! Warm pools: per image, VMs booted ahead of demand with no tenant's
//! configuration (the agent link holds it back), so that a create that
//! fits takes one that is already up and only waits for its services.
//!
//! - `fit`: which creates a pooled VM can serve (pure).
//! - `handout`: the compare-and-set that gives a waiting VM to a tenant,
//!   then its configuration to its agent.
//! - `fill`: the reconciler that expires and refills pools, behind the
//!   explicit creates.
//! - `nic`: the closed NIC of a pooled VM on a server whose default
//!   network is NAT, opened to the create's policy at the hand-out.
//! - `source`: makes one pooled VM, a cold boot or a restore of the pool's
//!   template snapshot, and fingerprints what it is made from.

mod fill;
mod fit;
mod handout;
mod nic;
mod source;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hearth_store::{PoolRecord, PoolVmRecord};
use hearth_types::pool::{Pool, PoolSpec, PoolVmState, PooledVm};
use hearth_types::{BackendKind, SnapshotName, Timestamp};

pub use self::fit::Misfit;
pub(super) use self::source::add_to_pool;
use super::{ControlError, Controller};

pub(super) use self::fill::reconcile;
pub(super) use self::handout::hand_out;

/// What the pools did since the server started, per image.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolCounts {
    /// Creates served by a pooled VM.
    pub handed_out: u64,
    /// Creates for a pooled image that booted cold (none waiting, or the
    /// create did not fit).
    pub cold: u64,
    /// Pooled VMs started.
    pub boots: u64,
    /// Pooled VMs removed (time to live, changed assets, pool shrunk or
    /// removed, never warm).
    pub expired: u64,
}

/// The pools' moving parts that live in memory: counters and the time of
/// each pool's last boot (its refill rate).
#[derive(Debug, Default)]
pub(super) struct Pools {
    counts: Mutex<BTreeMap<String, PoolCounts>>,
    last_boot: Mutex<BTreeMap<String, std::time::Instant>>,
}

impl Pools {
    fn count(&self, image: &str, f: impl FnOnce(&mut PoolCounts)) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(image.to_owned()).or_default());
    }
}

impl Controller {
    /// Creates or changes the pool of `image`; the reconciler fills it.
    pub async fn set_pool(&self, image: &str, spec: &PoolSpec) -> Result<Pool, ControlError> {
        let settings = spec.settings().map_err(ControlError::Invalid)?;
        self.check_poolable(image)?;
        if let Some(name) = &settings.template {
            self.check_template(image, name).await?;
        }
        let record = PoolRecord {
            image: image.to_owned(),
            settings,
            updated_at: Timestamp::now(),
        };
        self.store.put_pool(&record).await?;
        tracing::info!(
            image,
            size = record.settings.size,
            max = record.settings.max,
            "pool set"
        );
        self.pool(image).await
    }

    /// One pool and its VMs; `Invalid` naming the fix when there is none.
    pub async fn pool(&self, image: &str) -> Result<Pool, ControlError> {
        self.list_pools()
            .await?
            .into_iter()
            .find(|p| p.image == image)
            .ok_or_else(|| no_pool(image))
    }

    /// Every pool with its VMs, by image.
    pub async fn list_pools(&self) -> Result<Vec<Pool>, ControlError> {
        let vms = self.store.pool_vms().await?;
        let pools = self.store.pools().await?;
        Ok(pools.into_iter().map(|p| self.describe(p, &vms)).collect())
    }

    /// Removes the pool of `image` and destroys its waiting VMs (through
    /// the one deletion path); the pool as it was.
    pub async fn remove_pool(self: &Arc<Self>, image: &str) -> Result<Pool, ControlError> {
        let pool = self.pool(image).await?;
        self.store.delete_pool(image).await?;
        fill::sweep(self).await;
        tracing::info!(image, "pool removed");
        Ok(pool)
    }

    /// What the pools did, per image, since the server started.
    pub fn pool_counts(&self) -> BTreeMap<String, PoolCounts> {
        self.pools
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A pooled VM gets its configuration from its agent at hand-out: the
    /// image must carry one, and agent readiness must be on.
    fn check_poolable(&self, image: &str) -> Result<(), ControlError> {
        hearth_guestkit::image::find_image(&self.config.data, image)
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        if !(self.config.agent_readiness && super::agent::image_has_agent(self, image)) {
            return Err(ControlError::Invalid(format!(
                "image {image:?} has no guest agent (or this server runs without agent \
                 readiness): a pooled VM is configured by its agent when it is handed out; \
                 build the image with the agent"
            )));
        }
        Ok(())
    }

    /// A pool's template must be a finished template snapshot (made from
    /// an image, no VM's configuration in it: pooled VMs carry nothing of
    /// any tenant) of the pool's image, on QEMU.
    async fn check_template(&self, image: &str, name: &SnapshotName) -> Result<(), ControlError> {
        let Some(manifest) = self.store.snapshot(name).await?.and_then(|s| s.manifest) else {
            return Err(ControlError::SnapshotNotFound(name.clone()));
        };
        let wrong = if !manifest.template {
            Some(format!(
                "it was taken of VM {}, whose configuration is in it",
                manifest.source_vm
            ))
        } else if manifest.image != image {
            Some(format!("it is of image {:?}", manifest.image))
        } else if manifest.backend != BackendKind::Qemu {
            Some(format!(
                "it runs on {}; pooled VMs run on qemu",
                manifest.backend
            ))
        } else {
            None
        };
        match wrong {
            Some(why) => Err(ControlError::Invalid(format!(
                "template: snapshot {name} cannot fill the pool of {image:?}: {why}; make one with \
                 `hearth snapshot create --image {image} NAME`"
            ))),
            None => Ok(()),
        }
    }

    fn describe(&self, p: PoolRecord, vms: &[PoolVmRecord]) -> Pool {
        let ttl = std::time::Duration::from_secs(p.settings.ttl_secs);
        let counts = self
            .pool_counts()
            .get(&p.image)
            .copied()
            .unwrap_or_default();
        let vms = vms
            .iter()
            .filter(|v| v.image == p.image)
            .map(|v| PooledVm {
                id: v.vm.clone(),
                state: state_of(v),
                created_at: v.created_at,
                expires_at: v.warm_since.map(|since| since.plus(ttl)),
            })
            .collect();
        Pool {
            image: p.image,
            settings: p.settings,
            updated_at: p.updated_at,
            vms,
            handed_out: counts.handed_out,
        }
    }
}

fn state_of(v: &PoolVmRecord) -> PoolVmState {
    if v.warm {
        PoolVmState::Waiting
    } else {
        PoolVmState::Booting
    }
}

fn no_pool(image: &str) -> ControlError {
    ControlError::NoPool(image.to_owned())
}

/// `image`'s pool, if it has one.
fn pool_of<'a>(pools: &'a [PoolRecord], image: &str) -> Option<&'a PoolRecord> {
    pools.iter().find(|p| p.image == image)
}
