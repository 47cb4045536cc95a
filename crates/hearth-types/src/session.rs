//! Login sessions: a user of a tenant logs in to an AI CLI tool in a
//! browser VM, and hearth captures the credential. These are the words the
//! API, the store and the CLI share: the session's id, its states and the
//! bodies of `/v1/sessions`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::api::{Diagnosis, ViewerLink};
use crate::time::Timestamp;
use crate::{ProviderId, TenantId, UserName, VmId};

/// The id of one session: `ses-` and 12 hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^ses-[0-9a-f]{12}$"))]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "session id {0:?} is malformed: ids look like `ses-3f9a1c2b7d4e` (`ses-` and 12 hex digits)"
)]
pub struct SessionIdError(pub String);

impl SessionId {
    /// A fresh random id.
    pub fn generate() -> Self {
        let n: u64 = rand::random();
        SessionId(format!("ses-{:012x}", n & 0xffff_ffff_ffff))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SessionId {
    type Err = SessionIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        match s.strip_prefix("ses-") {
            Some(rest) if rest.len() == 12 && rest.bytes().all(hex) => Ok(SessionId(s.to_owned())),
            _ => Err(SessionIdError(s.chars().take(80).collect())),
        }
    }
}

impl TryFrom<String> for SessionId {
    type Error = SessionIdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> String {
        id.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a session is. The first three are live (at most one live session
/// per tenant, user and provider); the other four are ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// The browser VM boots.
    Starting,
    /// The login page is up: the person logs in through the viewer.
    WaitingForUser,
    /// The credential is sealed in the vault; the VM is being destroyed.
    Captured,
    /// The credential is sealed and the VM is gone.
    Completed,
    /// Nobody finished the login in time; the VM is destroyed.
    Expired,
    /// Cancelled by its caller; the VM is destroyed.
    Cancelled,
    /// Something broke: `message` and `diagnosis` say what.
    Failed,
}

impl SessionState {
    pub const ALL: [SessionState; 7] = [
        SessionState::Starting,
        SessionState::WaitingForUser,
        SessionState::Captured,
        SessionState::Completed,
        SessionState::Expired,
        SessionState::Cancelled,
        SessionState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Starting => "starting",
            SessionState::WaitingForUser => "waiting_for_user",
            SessionState::Captured => "captured",
            SessionState::Completed => "completed",
            SessionState::Expired => "expired",
            SessionState::Cancelled => "cancelled",
            SessionState::Failed => "failed",
        }
    }

    /// Still going: it holds its VM and blocks another session of the
    /// same user and provider.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            SessionState::Starting | SessionState::WaitingForUser | SessionState::Captured
        )
    }

    /// Whether a session may go from `self` to `to`.
    pub fn may_become(self, to: SessionState) -> bool {
        use SessionState::*;
        matches!(
            (self, to),
            (Starting, WaitingForUser)
                | (Starting | WaitingForUser, Captured)
                | (Captured, Completed | Failed)
                | (Starting | WaitingForUser, Expired | Cancelled | Failed)
        )
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SessionState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown session state {s:?}"))
    }
}

/// `POST /v1/sessions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StartSession {
    /// Whose login this is: a name inside the caller's tenant.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub user: UserName,
    /// A provider of `GET /v1/providers` (`claude`, `codex`, `gemini`, or
    /// one the operator defined).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub provider: ProviderId,
    /// Seconds until the session expires, 60 to 3600; default: the
    /// server's (600).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 60, maximum = 3600))]
    pub ttl_secs: Option<u64>,
}

impl StartSession {
    pub const MIN_TTL_SECS: u64 = 60;
    pub const MAX_TTL_SECS: u64 = 3600;

    /// The lifetime asked for (`None`: the server's default), or what is
    /// wrong with it.
    pub fn ttl(&self) -> Result<Option<std::time::Duration>, String> {
        match self.ttl_secs {
            None => Ok(None),
            Some(secs @ Self::MIN_TTL_SECS..=Self::MAX_TTL_SECS) => {
                Ok(Some(std::time::Duration::from_secs(secs)))
            }
            Some(secs) => Err(format!(
                "ttl_secs {secs} is out of range: give {} to {} seconds, or leave it out for the server's default",
                Self::MIN_TTL_SECS,
                Self::MAX_TTL_SECS
            )),
        }
    }
}

/// A session as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub id: SessionId,
    pub tenant: TenantId,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub user: UserName,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub provider: ProviderId,
    pub state: SessionState,
    /// The browser VM; null before it is made.
    pub vm: Option<VmId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Past this, a live session expires and its VM is destroyed.
    pub expires_at: Timestamp,
    /// In words: why it failed, expired or was cancelled.
    pub message: Option<String>,
    /// A failed session's diagnosis of its VM, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<Diagnosis>,
    /// The vault's version of the credential this session captured.
    pub credential_version: Option<u64>,
    /// The last lines the login command printed (its URL, a code to
    /// paste, an error): never a credential.
    #[serde(default)]
    pub login_output: Vec<String>,
    /// The link that opens the VM's screen: only in the answer that
    /// started the session (its key is stored hashed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewer: Option<ViewerLink>,
}

/// One transition of a session, or a notable happening in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SessionEvent {
    pub seq: i64,
    pub at: Timestamp,
    /// The state after the event.
    pub state: SessionState,
    pub message: String,
}

/// One connection a session's VM made through the egress proxy: where to,
/// whether it was allowed, how many bytes; never what was in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EgressConnection {
    pub at: Timestamp,
    /// `tunnel` (CONNECT) or `forward` (plain HTTP); null: no request.
    pub kind: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// `allowed`, `denied`, `failed` or `bad_request`.
    pub outcome: String,
    /// Why it was denied or failed, naming the rule.
    pub reason: Option<String>,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// A provider as `GET /v1/providers` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProviderInfo {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub name: ProviderId,
    pub description: String,
    /// The image its browser VM boots.
    pub image: String,
    /// What the VM runs to log in.
    pub login: Vec<String>,
    /// The credential's files, relative to the user's home.
    pub files: Vec<String>,
    /// The domains its login may reach.
    pub domains: Vec<String>,
    /// `builtin` or the file it was read from.
    pub source: String,
}

/// `PUT /v1/tenants/{tenant}/egress` (admin: what a tenant's sessions may
/// reach besides their provider's domains, and its upstream proxy) and
/// `PUT /v1/users/{user}/egress` (a user's own upstream proxy, the old
/// controller's per-user proxy; no domains).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PutEgress {
    /// More allowed domains (`name` or `*.name`), for a tenant only.
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub upstream: Option<UpstreamSetting>,
}

/// An upstream HTTP proxy; its password is sealed in the vault, never
/// shown again and never given to a VM.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpstreamSetting {
    /// `IP:PORT`.
    pub address: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

/// No password in any `Debug`.
impl fmt::Debug for PutEgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutEgress")
            .field("domains", &self.domains)
            .field("upstream", &self.upstream)
            .finish()
    }
}

impl fmt::Debug for UpstreamSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamSetting")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Egress settings as the API shows them: never a password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EgressSettingsInfo {
    pub tenant: TenantId,
    /// Null: the tenant's own settings.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub user: Option<UserName>,
    pub domains: Vec<String>,
    /// The upstream proxy's `IP:PORT`.
    pub upstream: Option<String>,
    /// Whether the upstream proxy has credentials (sealed in the vault).
    pub upstream_credentials: bool,
    pub updated_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        let id = SessionId::generate();
        assert_eq!(id.as_str().parse::<SessionId>(), Ok(id.clone()));
        for bad in [
            "",
            "ses-",
            "ses-12",
            "vm-3f9a1c2b7d4e",
            "ses-3F9A1C2B7D4E",
            "ses-3f9a1c2b7d4e0",
        ] {
            assert!(bad.parse::<SessionId>().is_err(), "{bad:?} was taken");
        }
    }

    #[test]
    fn states_round_trip_and_only_live_ones_move_on() {
        for state in SessionState::ALL {
            assert_eq!(state.as_str().parse::<SessionState>(), Ok(state));
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{state}\""));
            if !state.is_live() {
                for to in SessionState::ALL {
                    assert!(!state.may_become(to), "{state} -> {to}");
                }
            }
        }
        assert!(SessionState::Starting.may_become(SessionState::WaitingForUser));
        assert!(!SessionState::WaitingForUser.may_become(SessionState::Starting));
        assert!(!SessionState::Captured.may_become(SessionState::Expired));
    }

    #[test]
    fn ttl_is_bounded() {
        let body = |ttl_secs| StartSession {
            user: "alice".parse().unwrap(),
            provider: "codex".parse().unwrap(),
            ttl_secs,
        };
        assert_eq!(body(None).ttl(), Ok(None));
        assert!(body(Some(600)).ttl().unwrap().is_some());
        let err = body(Some(5)).ttl().unwrap_err();
        assert!(err.contains("ttl_secs 5"), "{err}");
        assert!(body(Some(100_000)).ttl().is_err());
    }

    #[test]
    fn a_body_without_a_user_names_the_field() {
        let err = serde_json::from_str::<StartSession>(r#"{"provider":"codex"}"#).unwrap_err();
        assert!(err.to_string().contains("`user`"), "{err}");
        let err = serde_json::from_str::<StartSession>(r#"{"user":"a b","provider":"codex"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("user name"), "{err}");
    }
}
