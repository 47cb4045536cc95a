//! Where egress settings are kept: per tenant, and per user of a tenant.
//! Nothing secret: an upstream proxy's password is sealed by the vault.

use async_trait::async_trait;
use hearth_types::{TenantId, Timestamp, UserName};

use crate::StoreError;

/// One tenant's (`user: None`) or one user's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressSettingsRecord {
    pub tenant: TenantId,
    pub user: Option<UserName>,
    pub domains: Vec<String>,
    /// `IP:PORT`.
    pub upstream: Option<String>,
    pub upstream_credentials: bool,
    pub updated_at: Timestamp,
}

#[async_trait]
pub trait EgressSettingsStore: Send + Sync {
    /// Replaces the settings of the record's tenant (and user).
    async fn put_egress_settings(&self, record: &EgressSettingsRecord) -> Result<(), StoreError>;
    async fn egress_settings(
        &self,
        tenant: &TenantId,
        user: Option<&UserName>,
    ) -> Result<Option<EgressSettingsRecord>, StoreError>;
    /// The settings removed, if there were any.
    async fn delete_egress_settings(
        &self,
        tenant: &TenantId,
        user: Option<&UserName>,
    ) -> Result<Option<EgressSettingsRecord>, StoreError>;
}
