//! Where sealed credentials are kept: the narrow [`CredentialStore`] trait
//! that `hearth-vault` is given, and the records it reads and writes. The
//! store never sees a key or a plaintext: the sealed parts are opaque bytes
//! here, and the rest is metadata that may be listed (paths, modes, sizes,
//! which key-encryption key version wraps the data key).

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use hearth_types::api::CredentialFileInfo;
use hearth_types::{ProviderId, TenantId, Timestamp, UserName};

use crate::StoreError;

/// How many versions of one credential are kept: the current one and the
/// one before it. An insert deletes older ones in its transaction.
pub const KEEP_CREDENTIAL_VERSIONS: u64 = 2;

/// Whose credential: a tenant's user, for one provider.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialOwner {
    pub tenant: TenantId,
    pub user: UserName,
    pub provider: ProviderId,
}

impl fmt::Display for CredentialOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.user, self.provider)
    }
}

/// What may be shown of one version of a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialMeta {
    pub owner: CredentialOwner,
    /// From 1, one more with each capture.
    pub version: u64,
    pub created_at: Timestamp,
    /// The files' bytes in all.
    pub size: u64,
    pub files: Vec<CredentialFileInfo>,
    /// The key-encryption key version the data key is wrapped under.
    pub kek_version: u32,
}

/// The envelope as `hearth-vault` made it; opaque bytes to the store.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedParts {
    /// The data key, sealed with the key-encryption key.
    pub wrapped_key: Vec<u8>,
    pub key_nonce: Vec<u8>,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Lengths only: ciphertext is not secret, but there is nothing to read
/// in it either.
impl fmt::Debug for SealedParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedParts")
            .field(
                "wrapped_key",
                &format_args!("{} bytes", self.wrapped_key.len()),
            )
            .field("key_nonce", &format_args!("{} bytes", self.key_nonce.len()))
            .field("nonce", &format_args!("{} bytes", self.nonce.len()))
            .field(
                "ciphertext",
                &format_args!("{} bytes", self.ciphertext.len()),
            )
            .finish()
    }
}

/// One stored version of a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialRecord {
    pub meta: CredentialMeta,
    pub sealed: SealedParts,
}

/// A data key rewrapped under another key-encryption key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrap {
    pub owner: CredentialOwner,
    pub version: u64,
    /// The version it must still be under, else nothing is written.
    pub from_kek_version: u32,
    pub kek_version: u32,
    pub wrapped_key: Vec<u8>,
    pub key_nonce: Vec<u8>,
}

/// The place `hearth-vault` keeps ciphertexts in.
#[async_trait]
pub trait CredentialStore: Send + Sync + fmt::Debug {
    /// Stores a new version. `Duplicate` when that version exists (another
    /// capture took the number first: seal again with the next). Versions
    /// older than the last [`KEEP_CREDENTIAL_VERSIONS`] are deleted in the
    /// same transaction.
    async fn insert_credential(&self, record: &CredentialRecord) -> Result<(), StoreError>;
    /// The newest version, the current one.
    async fn current_credential(
        &self,
        owner: &CredentialOwner,
    ) -> Result<Option<CredentialRecord>, StoreError>;
    async fn credential_version(
        &self,
        owner: &CredentialOwner,
        version: u64,
    ) -> Result<Option<CredentialRecord>, StoreError>;
    /// The current version of each of `user`'s credentials, by provider.
    async fn list_credentials(
        &self,
        tenant: &TenantId,
        user: &UserName,
    ) -> Result<Vec<CredentialMeta>, StoreError>;
    /// Every stored version whose data key is not wrapped under
    /// `kek_version`: what a rotation to it rewraps.
    async fn credentials_not_under(
        &self,
        kek_version: u32,
    ) -> Result<Vec<CredentialRecord>, StoreError>;
    /// How many stored versions each key-encryption key version wraps.
    async fn credential_counts_by_kek(&self) -> Result<BTreeMap<u32, u64>, StoreError>;
    /// Deletes every version of the credential: the current one's
    /// metadata, or `None` when there was none.
    async fn delete_credentials(
        &self,
        owner: &CredentialOwner,
    ) -> Result<Option<CredentialMeta>, StoreError>;
    /// Writes every rewrap in one transaction, or none: `Changed` when a
    /// row is gone or no longer under its `from_kek_version` (read again
    /// and retry). Answers how many were written.
    async fn rewrap_credentials(&self, rewraps: &[Rewrap]) -> Result<u64, StoreError>;
}
