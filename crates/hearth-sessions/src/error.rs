//! Why a session call was refused or failed, in words that name the fix.

use hearth_control::controller::ControlError;
use hearth_store::StoreError;
use hearth_types::{ProviderId, SessionId, UserName};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Also what another tenant's session answers.
    #[error("no session {0}")]
    NotFound(SessionId),
    #[error("unknown provider {name:?}: give one of {known} (`GET /v1/providers`)")]
    UnknownProvider { name: ProviderId, known: String },
    #[error("user {user} already has a live {provider} session ({existing}): wait for it to end, or cancel it (`hearth session cancel {existing}`)")]
    AlreadyLive {
        user: UserName,
        provider: ProviderId,
        existing: SessionId,
    },
    /// Also what another tenant's user answers.
    #[error("user {0} has no CLI VM: start one (`hearth cli start {0}`)")]
    CliNotFound(UserName),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("session {id} has already ended ({state})")]
    Ended { id: SessionId, state: String },
    #[error("the session's browser VM could not be created: {0}")]
    Vm(ControlError),
    #[error("the store failed")]
    Store(#[from] StoreError),
}
