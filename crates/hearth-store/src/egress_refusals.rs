//! What each networked VM's resolver and web proxy refused: totals kept
//! so they survive a controller restart (the controller counts in memory
//! and writes the totals now and then).

use async_trait::async_trait;
use hearth_types::{Timestamp, VmId};

use crate::StoreError;

/// A VM's refusal totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EgressRefusals {
    /// DNS queries answered REFUSED.
    pub queries: u64,
    /// Proxied connections (or requests) denied by the policy.
    pub connections: u64,
}

#[async_trait]
pub trait EgressRefusalStore: Send + Sync {
    /// Replaces VM `vm`'s totals.
    async fn put_egress_refusals(
        &self,
        vm: &VmId,
        totals: EgressRefusals,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    /// VM `vm`'s totals; `None` when none were written.
    async fn egress_refusals(&self, vm: &VmId) -> Result<Option<EgressRefusals>, StoreError>;
    /// Forgets VM `vm`'s totals (its network is gone).
    async fn delete_egress_refusals(&self, vm: &VmId) -> Result<(), StoreError>;
}
