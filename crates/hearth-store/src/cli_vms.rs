//! Where users' CLI VMs are kept: which VM is a tenant's user's CLI VM,
//! and which credential version each provider's files in it are based on
//! (what a refresh made there is sealed over). No credential content.

use std::collections::BTreeMap;

use async_trait::async_trait;
use hearth_types::{ProviderId, TenantId, Timestamp, UserName, VmId};

use crate::StoreError;

/// One user's CLI VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CliVmRecord {
    pub tenant: TenantId,
    pub user: UserName,
    pub vm: VmId,
    pub image: String,
    pub created_at: Timestamp,
    /// Per provider, the credential version the VM's files are at.
    pub bases: BTreeMap<ProviderId, u64>,
}

#[async_trait]
pub trait CliVmStore: Send + Sync {
    /// `Duplicate` when the user has one already.
    async fn insert_cli_vm(&self, record: &CliVmRecord) -> Result<(), StoreError>;
    async fn cli_vm(
        &self,
        tenant: &TenantId,
        user: &UserName,
    ) -> Result<Option<CliVmRecord>, StoreError>;
    /// Every tenant's, for the server's start.
    async fn list_cli_vms(&self) -> Result<Vec<CliVmRecord>, StoreError>;
    /// Records that `provider`'s files in the user's CLI VM are at
    /// `version`; `Changed` when the user has no CLI VM `vm` any more.
    async fn set_cli_base(
        &self,
        tenant: &TenantId,
        user: &UserName,
        vm: &VmId,
        provider: &ProviderId,
        version: u64,
    ) -> Result<(), StoreError>;
    /// The record removed, if there was one.
    async fn delete_cli_vm(
        &self,
        tenant: &TenantId,
        user: &UserName,
    ) -> Result<Option<CliVmRecord>, StoreError>;
}
