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
