//! Where login sessions are kept: the [`SessionStore`] trait the session
//! driver is given, and its records. A session's row says whose login it
//! is, where it is and which VM it runs in; its events say how it got
//! there; its egress connections say where its VM reached. No secret is in
//! any of them.

use async_trait::async_trait;
use hearth_types::api::Diagnosis;
use hearth_types::session::{EgressConnection, SessionEvent};
use hearth_types::{ProviderId, SessionId, SessionState, TenantId, Timestamp, UserName, VmId};

use crate::StoreError;

/// One session as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: SessionId,
    pub tenant: TenantId,
    pub user: UserName,
    pub provider: ProviderId,
    pub state: SessionState,
    pub vm: Option<VmId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub expires_at: Timestamp,
    pub message: Option<String>,
    pub diagnosis: Option<Diagnosis>,
    pub credential_version: Option<u64>,
}

/// A session's move to `to` (or, with `to` equal to its state, a change of
/// its fields), with the event that says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionChange {
    pub to: SessionState,
    pub at: Timestamp,
    /// For the event log, in plain words.
    pub event: String,
    /// Set: the session's VM from now on.
    pub vm: Option<VmId>,
    /// Set: the session's `message` (why it ended).
    pub message: Option<String>,
    pub diagnosis: Option<Diagnosis>,
    pub credential_version: Option<u64>,
}

impl SessionChange {
    pub fn to(to: SessionState, at: Timestamp, event: impl Into<String>) -> Self {
        SessionChange {
            to,
            at,
            event: event.into(),
            vm: None,
            message: None,
            diagnosis: None,
            credential_version: None,
        }
    }
}

/// Which sessions to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionFilter {
    /// Only this tenant's; `None`: everyone's.
    pub tenant: Option<TenantId>,
    /// Only live ones (starting, waiting for the user, captured).
    pub live_only: bool,
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session and its first event. `Duplicate` when the
    /// tenant's user already has a live session for the provider.
    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError>;
    async fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError>;
    /// Newest first.
    async fn list_sessions(&self, filter: &SessionFilter)
        -> Result<Vec<SessionRecord>, StoreError>;
    /// Applies `change` if the session is still in `expected`, and appends
    /// its event: the session after it, or `Changed` when someone moved it
    /// first.
    async fn change_session(
        &self,
        id: &SessionId,
        expected: SessionState,
        change: &SessionChange,
    ) -> Result<SessionRecord, StoreError>;
    /// An event that is not a change (a note on the way).
    async fn add_session_event(
        &self,
        id: &SessionId,
        at: Timestamp,
        message: &str,
    ) -> Result<(), StoreError>;
    /// Events in order.
    async fn session_events(&self, id: &SessionId) -> Result<Vec<SessionEvent>, StoreError>;
    async fn add_egress_connection(
        &self,
        id: &SessionId,
        connection: &EgressConnection,
    ) -> Result<(), StoreError>;
    /// In order.
    async fn egress_connections(&self, id: &SessionId)
        -> Result<Vec<EgressConnection>, StoreError>;
}
