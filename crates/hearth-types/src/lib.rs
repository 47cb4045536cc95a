//! Types every hearth crate shares: typed ids, the description a hypervisor
//! backend boots from, the VM lifecycle's words, the API bodies, and the
//! lines the guest prints to tell the host what happened. Nothing here
//! performs I/O.

pub mod api;
pub mod console;
pub mod guest;
pub mod histogram;
pub mod id;
pub mod lifecycle;
pub mod limits;
pub mod persistence;
pub mod pool;
pub mod report;
pub mod session;
pub mod snapshot;
pub mod time;
pub mod vm;

pub use id::{
    IdError, ProviderError, ProviderId, TenantError, TenantId, UserName, UserNameError, VmId,
    PROVIDER_RULE, USER_NAME_RULE,
};
pub use lifecycle::{Failure, FailureCode, VmState};
pub use persistence::RestartPolicy;
pub use report::error_chain;
pub use session::{SessionId, SessionState};
pub use snapshot::{SnapshotManifest, SnapshotName};
pub use time::Timestamp;
pub use vm::{
    Accel, BackendKind, Channel, Disk, DiskKey, MemoryFile, MemoryMapping, ProcessRef, SpecError,
    VmDescription,
};
