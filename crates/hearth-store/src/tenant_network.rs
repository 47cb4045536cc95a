//! Where tenants' network policies are kept: one row per tenant, the
//! policy as the API gave it (checked by the caller).

use async_trait::async_trait;
use hearth_types::api::TenantNetworkPolicy;
use hearth_types::TenantId;

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
}
