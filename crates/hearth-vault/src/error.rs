//! What can go wrong in the vault. Every error names the credential
//! (tenant/user/provider and version) or the key file it is about, and
//! says what to do; none ever holds a key or a byte of plaintext.

use std::fmt;
use std::path::PathBuf;

use hearth_store::{CredentialOwner, StoreError};

/// One version of one credential, for messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CredentialId {
    pub owner: CredentialOwner,
    pub version: u64,
}

impl fmt::Display for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "credential {} version {}", self.owner, self.version)
    }
}

/// Which part of an envelope failed to authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The wrapped data key or its nonce.
    WrappedKey,
    /// The files' ciphertext or their nonce.
    Ciphertext,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::WrappedKey => "its wrapped data key (or that key's nonce)",
            Part::Ciphertext => "its ciphertext (or its nonce)",
        })
    }
}

const RECAPTURE: &str = "delete it (`DELETE /v1/users/USER/credentials/PROVIDER`) and log in \
                         again, which captures a new version";

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(
        "{credential} does not open: {part} fails authentication, so it was changed or copied \
         from another user's, provider's or version's row; nothing was written. It cannot be \
         recovered: {RECAPTURE}"
    )]
    Tampered {
        credential: CredentialId,
        part: Part,
    },
    #[error(
        "{credential} was sealed under a different key than KEK version {kek_version} in {}: \
         the key file was replaced (or the row's KEK version changed); restore the one it was \
         sealed with (from a backup), or {RECAPTURE}",
        path.display()
    )]
    WrongKey {
        credential: CredentialId,
        kek_version: u32,
        path: PathBuf,
    },
    #[error(
        "{credential} cannot be opened: KEK version {kek_version} is not in the key ring at {}: \
         restore the key file that has it (from a backup), or {RECAPTURE}",
        path.display()
    )]
    MissingKey {
        credential: CredentialId,
        kek_version: u32,
        path: PathBuf,
    },
    #[error(
        "{credential} is wrapped under KEK version {kek_version}, which was retired in {} and its \
         key destroyed, so it is refused: {RECAPTURE}",
        path.display()
    )]
    RetiredKey {
        credential: CredentialId,
        kek_version: u32,
        path: PathBuf,
    },
    #[error("{credential} opened but its files are unreadable ({why}): {RECAPTURE}")]
    Malformed {
        credential: CredentialId,
        why: String,
    },
    #[error(
        "credential {owner} is at version {current}, not {base}: a newer login or refresh \
         sealed it first, so this refresh (made from version {base}) was not kept; the VM \
         gets the current version"
    )]
    Stale {
        owner: CredentialOwner,
        base: u64,
        current: u64,
    },
    #[error("the files captured for credential {owner} cannot be sealed: {why}")]
    Invalid { owner: CredentialOwner, why: String },

    #[error(
        "the vault's key file {} does not exist: restore it, or unset {} to let hearth keep \
         its own in the data directory",
        path.display(), crate::KEY_FILE_ENV
    )]
    KeyFileMissing { path: PathBuf },
    #[error(
        "the vault's key file {} is missing, but the store holds {count} sealed credential \
         versions that only its keys open: restore the key file from a backup (hearth will not \
         make a new one over them)",
        path.display()
    )]
    KeyFileLost { path: PathBuf, count: u64 },
    #[error(
        "the vault's key file {} has mode {mode:04o}: group or others may read or write it, so \
         it is refused. Run `chmod 600 {}` (and ask who could have read it; if anyone, run \
         `hearth vault rotate` and then retire the old versions)",
        path.display(), path.display()
    )]
    KeyFilePermissions { path: PathBuf, mode: u32 },
    #[error("could not read the vault's key file {}", path.display())]
    KeyFileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the vault's key file {} is not a key ring hearth can read ({why}): restore it from a \
         backup",
        path.display()
    )]
    KeyFileCorrupt { path: PathBuf, why: String },
    #[error("could not write the vault's key file {}", path.display())]
    KeyFileWrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "KEK version {version} is not in the key ring at {}: `hearth vault status` lists the \
         versions",
        path.display()
    )]
    UnknownVersion { version: u32, path: PathBuf },
    #[error(
        "KEK version {version} is the active one and cannot be retired: run `hearth vault rotate` \
         first"
    )]
    RetireActive { version: u32 },
    #[error(
        "KEK version {version} still wraps {count} credential versions and cannot be retired: run \
         `hearth vault rotate`, which rewraps them under a new version, then retire it"
    )]
    RetireInUse { version: u32, count: u64 },
    #[error(
        "credentials kept changing while they were rewrapped under KEK version {kek_version}: \
         run `hearth vault rotate` again"
    )]
    Busy { kek_version: u32 },

    #[error("the store failed while {doing}")]
    Store {
        doing: String,
        #[source]
        source: StoreError,
    },
}

impl VaultError {
    pub(crate) fn store(doing: impl fmt::Display) -> impl FnOnce(StoreError) -> VaultError {
        let doing = doing.to_string();
        move |source| VaultError::Store { doing, source }
    }
}
