//! Typed identifiers. A `VmId` names a directory on the host, so it is
//! validated once, here, and can never hold a path separator or `..`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The id of one VM: `vm-` followed by lowercase letters, digits or `-`,
/// at most 64 characters in all.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^vm-[a-z0-9-]{1,61}$"))]
#[serde(try_from = "String", into = "String")]
pub struct VmId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("VM id {0:?} is malformed: ids look like `vm-3f9a1c2b7d4e` (lowercase letters, digits and `-`, at most 64 characters)")]
    Malformed(String),
}

impl VmId {
    const MAX_LEN: usize = 64;

    /// A fresh random id.
    pub fn generate() -> Self {
        let n: u64 = rand::random();
        VmId(format!("vm-{:012x}", n & 0xffff_ffff_ffff))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for VmId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let body_ok = s
            .strip_prefix("vm-")
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(is_id_byte));
        if body_ok && s.len() <= Self::MAX_LEN {
            Ok(VmId(s.to_owned()))
        } else {
            Err(IdError::Malformed(s.to_owned()))
        }
    }
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
}

impl TryFrom<String> for VmId {
    type Error = IdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<VmId> for String {
    fn from(id: VmId) -> String {
        id.0
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        let id = VmId::generate();
        assert_eq!(id.as_str().parse::<VmId>(), Ok(id));
    }

    #[test]
    fn path_like_and_malformed_ids_are_rejected() {
        for bad in [
            "",
            "vm-",
            "../x",
            "vm-../x",
            "vm-A",
            "vm-a/b",
            "x-123",
            &"vm-a".repeat(20),
        ] {
            assert!(bad.parse::<VmId>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn error_names_the_expected_shape() {
        let err = "../x".parse::<VmId>().unwrap_err().to_string();
        assert!(err.contains("\"../x\"") && err.contains("vm-"), "{err}");
    }
}

/// A tenant: the owner of VMs and tokens. Lowercase letters, digits, `-`
/// and `_`, 1 to 64 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[a-z0-9_-]{1,64}$"))]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("tenant {0:?} is malformed: use 1 to 64 lowercase letters, digits, `-` or `_`")]
pub struct TenantError(pub String);

impl TenantId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TenantId {
    type Err = TenantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = (1..=64).contains(&s.len()) && s.bytes().all(|b| is_id_byte(b) || b == b'_');
        if ok {
            Ok(TenantId(s.to_owned()))
        } else {
            Err(TenantError(s.to_owned()))
        }
    }
}

impl TryFrom<String> for TenantId {
    type Error = TenantError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> String {
        id.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tenant_tests {
    use super::*;

    #[test]
    fn tenants_are_validated() {
        assert!("team-a_1".parse::<TenantId>().is_ok());
        for bad in ["", "A", "a/b", "../x", &"a".repeat(65)] {
            assert!(bad.parse::<TenantId>().is_err(), "{bad:?}");
        }
    }
}

/// A person within a tenant, whose credentials the vault keeps: 1 to 64
/// of ASCII letters, digits, `.`, `_`, `@` and `-` (an email address fits).
/// It ends up in SQL rows and in associated data, never in a path, but it
/// is checked as strictly as a path segment all the same.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "String", into = "String")]
pub struct UserName(String);

/// The rule a [`UserName`] follows, for error messages.
pub const USER_NAME_RULE: &str =
    "1 to 64 of ASCII letters, digits, `.`, `_`, `@` and `-` (e.g. alice@example.com)";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("user name {0:?} is malformed: use {USER_NAME_RULE}")]
pub struct UserNameError(pub String);

impl UserName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UserName {
    type Err = UserNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let byte_ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-');
        if (1..=64).contains(&s.len()) && s.bytes().all(byte_ok) {
            Ok(UserName(s.to_owned()))
        } else {
            Err(UserNameError(shortened(s)))
        }
    }
}

/// At most 80 characters of what was given, for a message.
fn shortened(s: &str) -> String {
    s.chars().take(80).collect()
}

impl TryFrom<String> for UserName {
    type Error = UserNameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<UserName> for String {
    fn from(u: UserName) -> String {
        u.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An AI CLI tool whose login the vault keeps (`claude`, `codex`,
/// `gemini`): 1 to 32 lowercase letters, digits, `-` and `_`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "String", into = "String")]
pub struct ProviderId(String);

/// The rule a [`ProviderId`] follows, for error messages.
pub const PROVIDER_RULE: &str =
    "1 to 32 lowercase letters, digits, `-` and `_` (e.g. claude, codex)";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("provider {0:?} is malformed: use {PROVIDER_RULE}")]
pub struct ProviderError(pub String);

impl ProviderId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ProviderId {
    type Err = ProviderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if (1..=32).contains(&s.len()) && s.bytes().all(|b| is_id_byte(b) || b == b'_') {
            Ok(ProviderId(s.to_owned()))
        } else {
            Err(ProviderError(shortened(s)))
        }
    }
}

impl TryFrom<String> for ProviderId {
    type Error = ProviderError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ProviderId> for String {
    fn from(p: ProviderId) -> String {
        p.0
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod user_tests {
    use super::*;

    #[test]
    fn user_names_follow_their_rule() {
        for good in [
            "alice",
            "a",
            "alice@example.com",
            "A.b_c-1",
            &"u".repeat(64),
        ] {
            assert!(good.parse::<UserName>().is_ok(), "{good:?}");
        }
        for bad in ["", "a/b", "../x", "a b", "é", "a\0", &"u".repeat(65)] {
            let err = bad.parse::<UserName>().unwrap_err().to_string();
            assert!(err.contains("1 to 64"), "{err}");
        }
    }

    #[test]
    fn providers_follow_their_rule() {
        assert!("claude".parse::<ProviderId>().is_ok());
        for bad in ["", "Claude", "a/b", "x.y", &"p".repeat(33)] {
            assert!(bad.parse::<ProviderId>().is_err(), "{bad:?}");
        }
    }
}
