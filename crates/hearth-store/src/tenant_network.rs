//! Where tenants' network policies are kept: one row per tenant, the
//! policy as the API gave it (checked by the caller).

use async_trait::async_trait;
use hearth_types::api::{NetworkPolicy, TenantNetworkPolicy};
use hearth_types::{TenantId, VmId};

use crate::StoreError;

#[async_trait]
pub trait TenantNetworkStore: Send + Sync {
    /// Replaces the record's tenant's policy.
    async fn put_tenant_network(&self, record: &TenantNetworkPolicy) -> Result<(), StoreError>;
    async fn tenant_network(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<TenantNetworkPolicy>, StoreError>;
    /// The policy removed, if there was one.
    async fn delete_tenant_network(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<TenantNetworkPolicy>, StoreError>;
    /// Replaces VM `vm`'s NIC policy (narrowed to its tenant's changed
    /// one); `NotFound` when there is no such VM.
    async fn set_vm_network_policy(
        &self,
        vm: &VmId,
        policy: &NetworkPolicy,
    ) -> Result<(), StoreError>;
}
