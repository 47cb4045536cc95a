//! hearth's state, behind the [`Store`] trait. The lifecycle code only sees
//! the trait; SQLite (a file in the data directory) is the default
//! implementation, and Postgres can be added beside it without touching the
//! lifecycle. Nothing outside this crate writes SQL.

pub mod agent;
pub mod cli_vms;
pub mod credentials;
pub mod egress_refusals;
pub mod egress_settings;
pub mod net_slots;
pub mod pools;
pub mod records;
pub mod sessions;
pub mod snapshots;
pub mod sqlite;
pub mod tenant_network;

use async_trait::async_trait;
use hearth_types::guest::GuestConfig;
use hearth_types::{Timestamp, VmId, VmState};

pub use agent::{
    AgentEntry, AgentHello, AgentRecord, AgentStatus, NewAgentRecord, ServiceLine,
    MAX_LINES_PER_SERVICE, MAX_RECORDS_PER_VM,
};
pub use cli_vms::{CliVmRecord, CliVmStore};
pub use credentials::{
    CredentialMeta, CredentialOwner, CredentialRecord, CredentialStore, Rewrap, SealedParts,
    KEEP_CREDENTIAL_VERSIONS,
};
pub use egress_refusals::{EgressRefusalStore, EgressRefusals};
pub use egress_settings::{EgressSettingsRecord, EgressSettingsStore};
pub use net_slots::{NetSlot, NetSlotStore, SlotClaim};
pub use pools::{PoolRecord, PoolStore, PoolTake, PoolVmRecord};
pub use records::*;
pub use sessions::{SessionChange, SessionFilter, SessionRecord, SessionStore};
pub use snapshots::{SnapshotRecord, SnapshotRole, SnapshotStore};
pub use sqlite::SqliteStore;
pub use tenant_network::TenantNetworkStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("VM {0} not found")]
    NotFound(VmId),
    #[error("VM {id} is {actual}, not {expected}: someone else changed it first")]
    Conflict {
        id: VmId,
        expected: VmState,
        actual: VmState,
    },
    #[error("{what} already exists")]
    Duplicate { what: String },
    /// A conditional write found its rows changed since they were read.
    #[error("{what} changed while it was being updated: read it again and retry")]
    Changed { what: String },
    #[error("the store's data is corrupt: {0}")]
    Corrupt(String),
    #[error("the store failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// All of hearth's persistent state. The sealed credentials are behind
/// their own narrow trait, so the vault is given only those (an
/// `Arc<dyn Store>` upcasts to `&dyn CredentialStore`).
#[async_trait]
pub trait Store:
    CredentialStore
    + SessionStore
    + EgressSettingsStore
    + NetSlotStore
    + TenantNetworkStore
    + EgressRefusalStore
    // Warm pools (issue 11).
    + PoolStore
    // Snapshots.
    + SnapshotStore
    + CliVmStore
    + Send
    + Sync
    + std::fmt::Debug
{
    // VMs
    async fn insert_vm(&self, vm: &VmRecord) -> Result<(), StoreError>;
    async fn vm(&self, id: &VmId) -> Result<Option<VmRecord>, StoreError>;
    async fn list_vms(&self, filter: &VmFilter) -> Result<Vec<VmRecord>, StoreError>;
    /// Moves a VM from `expected` to `change.to` atomically and appends the
    /// event; `Conflict` when its state is no longer `expected`.
    async fn transition(
        &self,
        id: &VmId,
        expected: VmState,
        change: &StateChange,
    ) -> Result<VmRecord, StoreError>;
    /// Records (or clears) the hypervisor process of a VM.
    async fn set_process(&self, id: &VmId, process: Option<ProcessRef>) -> Result<(), StoreError>;
    async fn set_held(&self, id: &VmId, held: bool, at: Timestamp) -> Result<VmRecord, StoreError>;
    /// Drops a persistent VM's planned restart (a stop asked for while it
    /// waited), with `message` as its event when there was one; the VM.
    async fn cancel_restart(
        &self,
        id: &VmId,
        at: Timestamp,
        message: &str,
    ) -> Result<VmRecord, StoreError>;
    /// An event that is not a state change (a note, a hold, ...).
    async fn add_event(&self, id: &VmId, at: Timestamp, message: &str) -> Result<(), StoreError>;
    /// Events in order.
    async fn events(&self, id: &VmId) -> Result<Vec<hearth_types::api::VmEvent>, StoreError>;

    // Tokens
    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Every token, oldest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Deletes token `id`, so it authenticates nothing from now on: the
    /// record it had, or `None` when there is no such token.
    async fn revoke_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Records that token `id` authenticated a request at `at` (a revoked
    /// one is left revoked).
    async fn token_used(&self, id: &str, at: Timestamp) -> Result<(), StoreError>;

    // Viewer links
    async fn insert_viewer_link(&self, link: &ViewerLinkRecord) -> Result<(), StoreError>;
    async fn viewer_link_by_hash(&self, hash: &str)
        -> Result<Option<ViewerLinkRecord>, StoreError>;
    /// VM `vm`'s links (revoked and expired ones too), oldest first.
    async fn viewer_links(&self, vm: &VmId) -> Result<Vec<ViewerLinkRecord>, StoreError>;
    /// Marks link `id` of VM `vm` revoked at `at` (the first time only);
    /// the link as it is now, or `None` when the VM has no such link.
    async fn revoke_viewer_link(
        &self,
        vm: &VmId,
        id: &str,
        at: Timestamp,
    ) -> Result<Option<ViewerLinkRecord>, StoreError>;

    // Cleanup jobs
    /// Adds a job; when one of the same kind is already pending for the VM,
    /// only moves its due time earlier if this one is due sooner.
    async fn enqueue_job(&self, job: &NewJob) -> Result<(), StoreError>;
    /// Jobs due at `now` and not leased by someone else, leased to `owner`
    /// until `lease_until`, at most `limit`.
    async fn lease_due_jobs(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        owner: &str,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError>;
    async fn finish_job(&self, id: i64) -> Result<(), StoreError>;
    /// Releases a leased job to run again at `due`, noting the error.
    async fn retry_job(&self, id: i64, error: &str, due: Timestamp) -> Result<(), StoreError>;
    /// Pending jobs of a VM (e.g. to postpone them while it is held).
    async fn jobs_for(&self, vm: &VmId) -> Result<Vec<Job>, StoreError>;
    async fn count_pending_jobs(&self) -> Result<u64, StoreError>;

    // Log archives
    async fn insert_archive(&self, archive: &ArchiveRecord) -> Result<(), StoreError>;
    async fn archive(&self, vm: &VmId) -> Result<Option<ArchiveRecord>, StoreError>;
    /// Oldest first.
    async fn archives(&self) -> Result<Vec<ArchiveRecord>, StoreError>;
    async fn delete_archive(&self, vm: &VmId) -> Result<(), StoreError>;

    // The guest agent
    /// The configuration the agent gets after each handshake.
    async fn set_guest_config(&self, vm: &VmId, config: &GuestConfig) -> Result<(), StoreError>;
    /// The VM's configuration; the empty one when none was set.
    async fn guest_config(&self, vm: &VmId) -> Result<GuestConfig, StoreError>;
    /// Records a hello; answers the highest seq stored for its instance.
    async fn agent_hello(&self, vm: &VmId, hello: &AgentHello) -> Result<u64, StoreError>;
    async fn agent_heartbeat(&self, vm: &VmId, at: Timestamp) -> Result<(), StoreError>;
    async fn agent_disconnected(&self, vm: &VmId, at: Timestamp) -> Result<(), StoreError>;
    /// Stores the records not stored yet (by seq, per instance), in one
    /// transaction, trimming the oldest beyond the caps; answers the
    /// instance's highest stored seq, the one to ack.
    async fn store_agent_records(
        &self,
        vm: &VmId,
        instance: &str,
        records: &[NewAgentRecord],
    ) -> Result<u64, StoreError>;
    /// `None` when the agent never said hello and no config was set.
    async fn agent_status(&self, vm: &VmId) -> Result<Option<AgentStatus>, StoreError>;
    /// Every stored record but log lines, oldest first.
    async fn agent_records(&self, vm: &VmId) -> Result<Vec<AgentRecord>, StoreError>;
    /// The newest stored record of `kind`.
    async fn latest_agent_record(
        &self,
        vm: &VmId,
        kind: &str,
    ) -> Result<Option<AgentRecord>, StoreError>;
    /// The last `tail` lines of a service's output, oldest first.
    async fn service_lines(
        &self,
        vm: &VmId,
        service: &str,
        tail: usize,
    ) -> Result<Vec<ServiceLine>, StoreError>;
}
