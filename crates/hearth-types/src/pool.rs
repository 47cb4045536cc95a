//! Warm pools: per image, VMs booted ahead of demand with no tenant's
//! configuration, handed out to the create that fits one. These are the
//! words the API, the store and the CLI share: a pool's settings, what it
//! holds now, and the reserved tenant that owns a VM while it waits.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use crate::{SnapshotName, TenantId};

/// The owner of a VM waiting in a pool. It starts with `_`, which no
/// token's tenant may (see [`TenantId::is_reserved`]), so no caller but an
/// admin ever sees a pooled VM.
pub const POOL_TENANT: &str = "_pool";

impl TenantId {
    /// The reserved tenant of pooled VMs.
    pub fn pool() -> TenantId {
        POOL_TENANT
            .parse()
            .expect("the pool tenant is a valid tenant")
    }

    /// Whether the name is reserved for hearth itself (starts with `_`):
    /// tokens are refused for it.
    pub fn is_reserved(&self) -> bool {
        self.as_str().starts_with('_')
    }
}

/// `PUT /v1/pools/{image}`: how many VMs of the image to keep waiting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// VMs to keep waiting, 0 to `max`.
    pub size: u32,
    /// The most pooled VMs (waiting and booting) at once, 1 to 64;
    /// default: `size` (at least 1).
    #[serde(default)]
    pub max: Option<u32>,
    /// A VM waiting longer than this is replaced, 10 to 604800 seconds;
    /// default: 3600.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// Boots the pool may start per minute, 1 to 600; default: 6.
    #[serde(default)]
    pub refill_per_min: Option<u32>,
    /// A template snapshot of the image (`hearth snapshot create --image`)
    /// to restore pooled VMs from, their services already up; default:
    /// none, each pooled VM boots cold.
    #[serde(default)]
    pub template: Option<SnapshotName>,
}

impl PoolSpec {
    pub const MAX_VMS: u32 = 64;
    pub const DEFAULT_TTL_SECS: u64 = 3600;
    pub const TTL_SECS: std::ops::RangeInclusive<u64> = 10..=604_800;
    pub const DEFAULT_REFILL_PER_MIN: u32 = 6;
    pub const REFILL_PER_MIN: std::ops::RangeInclusive<u32> = 1..=600;

    /// The settings with their defaults filled in, or what is wrong with
    /// them (naming the field and the range to use).
    pub fn settings(&self) -> Result<PoolSettings, String> {
        let max = self.max.unwrap_or(self.size.max(1));
        if !(1..=Self::MAX_VMS).contains(&max) {
            return Err(format!(
                "max is {max}; give 1 to {} pooled VMs",
                Self::MAX_VMS
            ));
        }
        if self.size > max {
            return Err(format!(
                "size is {} but max is {max}: size may not exceed max",
                self.size
            ));
        }
        let ttl_secs = self.ttl_secs.unwrap_or(Self::DEFAULT_TTL_SECS);
        if !Self::TTL_SECS.contains(&ttl_secs) {
            return Err(format!(
                "ttl_secs is {ttl_secs}; give {} to {} seconds",
                Self::TTL_SECS.start(),
                Self::TTL_SECS.end()
            ));
        }
        let refill = self.refill_per_min.unwrap_or(Self::DEFAULT_REFILL_PER_MIN);
        if !Self::REFILL_PER_MIN.contains(&refill) {
            return Err(format!(
                "refill_per_min is {refill}; give {} to {} boots per minute",
                Self::REFILL_PER_MIN.start(),
                Self::REFILL_PER_MIN.end()
            ));
        }
        Ok(PoolSettings {
            size: self.size,
            max,
            ttl_secs,
            refill_per_min: refill,
            template: self.template.clone(),
        })
    }
}

/// A pool's settings, checked and complete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoolSettings {
    pub size: u32,
    pub max: u32,
    pub ttl_secs: u64,
    pub refill_per_min: u32,
    /// The template snapshot its VMs are restored from; `None`: cold boots.
    pub template: Option<SnapshotName>,
}

/// A pooled VM's place in its pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PoolVmState {
    /// Its hypervisor runs; its agent has not said hello yet.
    Booting,
    /// Its agent is connected and waits for a configuration: ready to be
    /// handed out.
    Waiting,
}

impl PoolVmState {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolVmState::Booting => "booting",
            PoolVmState::Waiting => "waiting",
        }
    }
}

/// One VM in a pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PooledVm {
    pub id: crate::VmId,
    pub state: PoolVmState,
    pub created_at: Timestamp,
    /// When its time to live (counted from when it started waiting) ends
    /// and it is replaced; `None` while it boots.
    pub expires_at: Option<Timestamp>,
}

/// `GET /v1/pools/{image}`: a pool's settings and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pool {
    pub image: String,
    #[serde(flatten)]
    pub settings: PoolSettings,
    pub updated_at: Timestamp,
    /// Its VMs, oldest first.
    pub vms: Vec<PooledVm>,
    /// VMs handed out since the server started.
    pub handed_out: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_fill_defaults_and_name_what_is_out_of_range() {
        let spec = PoolSpec {
            size: 2,
            max: None,
            ttl_secs: None,
            refill_per_min: None,
            template: None,
        };
        let s = spec.settings().unwrap();
        assert_eq!(
            (s.size, s.max, s.ttl_secs, s.refill_per_min),
            (2, 2, 3600, 6)
        );
        let zero = PoolSpec {
            size: 0,
            ..spec.clone()
        };
        assert_eq!(zero.settings().unwrap().max, 1);
        let over = PoolSpec {
            max: Some(1),
            ..spec.clone()
        };
        assert!(over
            .settings()
            .unwrap_err()
            .contains("size may not exceed max"));
        let ttl = PoolSpec {
            ttl_secs: Some(1),
            ..spec.clone()
        };
        assert!(ttl.settings().unwrap_err().contains("ttl_secs is 1"));
        let refill = PoolSpec {
            refill_per_min: Some(0),
            ..spec.clone()
        };
        assert!(refill.settings().unwrap_err().contains("refill_per_min"));
    }

    #[test]
    fn the_pool_tenant_is_reserved_and_others_are_not() {
        assert!(TenantId::pool().is_reserved());
        assert!(!"team-a".parse::<TenantId>().unwrap().is_reserved());
    }
}
