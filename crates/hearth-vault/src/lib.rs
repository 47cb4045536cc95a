//! Sealed credentials. A login session captures an AI CLI tool's credential
//! files for a (tenant, user, provider); the [`Vault`] seals them
//! ([`envelope`]: a fresh data key per version, wrapped by a versioned
//! key-encryption key), keeps the ciphertext in the [`CredentialStore`] it
//! is given, and opens the current version when a user's VM needs it.
//! [`keyring`] keeps the keys in one file (0600), made at first use or
//! given by the operator; `rotate` makes a new version and rewraps every
//! data key under it, `retire` destroys an old version's key once nothing
//! is wrapped under it.
//!
//! Nothing but this crate sees a key. Plaintext lives in [`Secret`]s,
//! wiped on drop and never shown by `Debug`; errors name credentials and
//! files, never their bytes; nothing here logs a secret. The vault knows
//! nothing of VMs, HTTP or SQL. `docs/vault.md` is the design.

pub mod envelope;
mod error;
pub mod keyring;
mod secret;

use std::collections::BTreeMap;
use std::sync::Arc;

use hearth_store::{
    CredentialMeta, CredentialOwner, CredentialRecord, CredentialStore, Rewrap, SealedParts,
    StoreError,
};
use hearth_types::api::CredentialFileInfo;
use hearth_types::Timestamp;

pub use self::envelope::Sealed;
pub use self::error::{CredentialId, Part, VaultError};
pub use self::keyring::{KeyFile, KeyRing, KeyVersion, KEY_FILE_ENV};
pub use self::secret::{CredentialFile, CredentialFiles, Secret, MAX_BYTES, MAX_FILES, MAX_PATH};

/// How often a seal or a rotation that lost a race is tried again.
const ATTEMPTS: usize = 5;

/// Seals and opens credentials with the key ring in one file, keeping the
/// ciphertexts in a [`CredentialStore`]. The ring is read again for every
/// call, so a rotation or retirement made by another process (`hearth
/// vault rotate` beside `hearth serve`) counts at once.
#[derive(Debug, Clone)]
pub struct Vault {
    keys: KeyFile,
    store: Arc<dyn CredentialStore>,
}

/// An opened credential: its metadata and its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub meta: CredentialMeta,
    pub files: CredentialFiles,
}

/// What `hearth vault status` shows: never a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultStatus {
    pub path: std::path::PathBuf,
    /// `None` while there is no key file yet (none made, none needed).
    pub active: Option<u32>,
    pub versions: Vec<VersionStatus>,
    /// Credential versions under a KEK version the ring does not have.
    pub orphaned: BTreeMap<u32, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionStatus {
    pub version: u32,
    pub created_at: Timestamp,
    pub retired_at: Option<Timestamp>,
    /// How many stored credential versions its key wraps.
    pub credentials: u64,
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The version made and made active.
    pub kek_version: u32,
    /// Credential versions whose data key was rewrapped under it.
    pub rewrapped: u64,
}

impl Vault {
    pub fn new(keys: KeyFile, store: Arc<dyn CredentialStore>) -> Vault {
        Vault { keys, store }
    }

    pub fn key_file(&self) -> &KeyFile {
        &self.keys
    }

    /// Seals `files` as the next version of `owner`'s credential, which
    /// becomes the current one: what a login session calls with a capture
    /// (and a refresh inside a VM, later). Answers what was stored.
    pub async fn seal(
        &self,
        owner: &CredentialOwner,
        files: &CredentialFiles,
    ) -> Result<CredentialMeta, VaultError> {
        files.check().map_err(|why| VaultError::Invalid {
            owner: owner.clone(),
            why,
        })?;
        let ring = self.ring().await?;
        let plaintext = files.encode();
        for _ in 0..ATTEMPTS {
            let current = self.current_record(owner).await?;
            let id = CredentialId {
                owner: owner.clone(),
                version: current.map_or(1, |c| c.meta.version + 1),
            };
            let sealed = envelope::seal(&ring, &id, &plaintext)?;
            let record = record(&id, files, sealed);
            match self.store.insert_credential(&record).await {
                Ok(()) => {
                    tracing::info!(credential = %id, kek_version = ring.active(), "credential sealed");
                    self.follow_rotation(&ring, &record).await?;
                    return Ok(record.meta);
                }
                // Another capture took this version first: seal the next.
                Err(StoreError::Duplicate { .. }) => continue,
                Err(e) => return Err(VaultError::store(format_args!("storing {id}"))(e)),
            }
        }
        Err(VaultError::Store {
            doing: format!("storing credential {owner}"),
            source: StoreError::Changed {
                what: format!("credential {owner}"),
            },
        })
    }

    /// Seals `files` as version `base + 1`, but only while `base` is the
    /// current version (`0`: there is none): a refresh made inside a VM
    /// from version `base`. A credential that moved on meanwhile (a new
    /// login, another VM's refresh) wins: `Stale` names both versions and
    /// nothing is written. The version's unique key makes the check and
    /// the insert one step, so two refreshes of one base cannot both win.
    pub async fn seal_over(
        &self,
        owner: &CredentialOwner,
        base: u64,
        files: &CredentialFiles,
    ) -> Result<CredentialMeta, VaultError> {
        files.check().map_err(|why| VaultError::Invalid {
            owner: owner.clone(),
            why,
        })?;
        let ring = self.ring().await?;
        let current = self
            .current_record(owner)
            .await?
            .map_or(0, |c| c.meta.version);
        let stale = |current| VaultError::Stale {
            owner: owner.clone(),
            base,
            current,
        };
        if current != base {
            return Err(stale(current));
        }
        let id = CredentialId {
            owner: owner.clone(),
            version: base + 1,
        };
        let record = record(&id, files, envelope::seal(&ring, &id, &files.encode())?);
        match self.store.insert_credential(&record).await {
            Ok(()) => {
                tracing::info!(credential = %id, kek_version = ring.active(), "credential refreshed");
                self.follow_rotation(&ring, &record).await?;
                Ok(record.meta)
            }
            Err(StoreError::Duplicate { .. }) => Err(stale(base + 1)),
            Err(e) => Err(VaultError::store(format_args!("storing {id}"))(e)),
        }
    }

    /// Deletes every version of `owner`'s credential (its ciphertexts and
    /// wrapped keys): the current one's metadata, `None` when there was none.
    pub async fn delete(
        &self,
        owner: &CredentialOwner,
    ) -> Result<Option<CredentialMeta>, VaultError> {
        self.store
            .delete_credentials(owner)
            .await
            .map_err(VaultError::store(format_args!("deleting {owner}")))
    }

    /// The current version of `owner`'s credential, opened: what a user's
    /// VM gets at boot. `None` when there is none.
    pub async fn open_current(
        &self,
        owner: &CredentialOwner,
    ) -> Result<Option<Opened>, VaultError> {
        let Some(record) = self.current_record(owner).await? else {
            return Ok(None);
        };
        self.open_record(&record).await.map(Some)
    }

    /// One version of `owner`'s credential, opened (the current one and
    /// the one before it are kept).
    pub async fn open_version(
        &self,
        owner: &CredentialOwner,
        version: u64,
    ) -> Result<Option<Opened>, VaultError> {
        let id = CredentialId {
            owner: owner.clone(),
            version,
        };
        let found = self.store.credential_version(owner, version).await;
        let Some(record) = found.map_err(VaultError::store(format_args!("reading {id}")))? else {
            return Ok(None);
        };
        self.open_record(&record).await.map(Some)
    }

    /// The versions of the ring and how many credentials each wraps.
    pub async fn status(&self) -> Result<VaultStatus, VaultError> {
        let mut counts = self.counts().await?;
        let ring = if self.keys.exists() {
            Some(self.keys.load()?)
        } else {
            None
        };
        let versions = ring
            .iter()
            .flat_map(KeyRing::versions)
            .map(|v| VersionStatus {
                version: v.version,
                created_at: v.created_at,
                retired_at: v.retired_at,
                credentials: counts.remove(&v.version).unwrap_or(0),
            })
            .collect();
        Ok(VaultStatus {
            path: self.keys.path().to_owned(),
            active: ring.as_ref().map(KeyRing::active),
            versions,
            orphaned: counts,
        })
    }

    /// Makes a new KEK version, makes it active and rewraps every stored
    /// data key under it (the files' ciphertexts are not touched). The
    /// rewraps are written in one transaction; one that raced a capture or
    /// a delete is read again and retried. A credential that does not
    /// open stops the rotation before anything is written, naming it.
    pub async fn rotate(&self) -> Result<Rotation, VaultError> {
        let count: u64 = self.counts().await?.values().sum();
        let _lock = self.keys.lock()?;
        let ring = if self.keys.exists() {
            let mut ring = self.keys.load()?;
            ring.add_version();
            self.keys.save(&ring)?;
            ring
        } else {
            // The first key file: its one version is the rotation.
            self.keys.create_locked(count)?
        };
        let kek_version = ring.active();
        tracing::info!(kek_version, path = %self.keys.path().display(), "vault key rotated");
        let rewrapped = self.rewrap_all(&ring).await?;
        Ok(Rotation {
            kek_version,
            rewrapped,
        })
    }

    /// Retires KEK version `version`: its key is destroyed, and anything
    /// still wrapped under it could never open again, so it is refused
    /// while any credential is (and for the active version).
    pub async fn retire(&self, version: u32) -> Result<(), VaultError> {
        let _lock = self.keys.lock()?;
        let mut ring = self.keys.load()?;
        if version == ring.active() {
            return Err(VaultError::RetireActive { version });
        }
        let in_use = self.counts().await?.get(&version).copied().unwrap_or(0);
        if in_use > 0 {
            return Err(VaultError::RetireInUse {
                version,
                count: in_use,
            });
        }
        ring.retire(version)?;
        self.keys.save(&ring)?;
        tracing::info!(kek_version = version, "vault key retired");
        Ok(())
    }

    /// A rotation (and even a retirement of the version just used) may
    /// have happened between reading the ring and storing `record`: then
    /// its data key, unwrapped with the key still in memory, is rewrapped
    /// under the version active now. Once the ring read here shows the
    /// version used still active, any later rotation's scan sees the row.
    async fn follow_rotation(
        &self,
        sealed_with: &KeyRing,
        record: &CredentialRecord,
    ) -> Result<(), VaultError> {
        let now = self.keys.load()?;
        if now.active() == sealed_with.active() {
            return Ok(());
        }
        let id = CredentialId {
            owner: record.meta.owner.clone(),
            version: record.meta.version,
        };
        let (wrapped_key, key_nonce) =
            envelope::rewrap(sealed_with, &now, &id, &sealed_of(record))?;
        let rewrap = Rewrap {
            owner: id.owner.clone(),
            version: id.version,
            from_kek_version: sealed_with.active(),
            kek_version: now.active(),
            wrapped_key,
            key_nonce,
        };
        match self.store.rewrap_credentials(&[rewrap]).await {
            // Changed: a rotation got to it first.
            Ok(_) | Err(StoreError::Changed { .. }) => Ok(()),
            Err(e) => Err(VaultError::store(format_args!("rewrapping {id}"))(e)),
        }
    }

    async fn rewrap_all(&self, ring: &KeyRing) -> Result<u64, VaultError> {
        let target = ring.active();
        for _ in 0..ATTEMPTS {
            let pending = self.store.credentials_not_under(target).await;
            let pending = pending.map_err(VaultError::store("reading credentials to rewrap"))?;
            let rewraps = pending
                .iter()
                .map(|r| rewrap_one(ring, r))
                .collect::<Result<Vec<_>, _>>()?;
            match self.store.rewrap_credentials(&rewraps).await {
                Ok(n) => return Ok(n),
                Err(StoreError::Changed { .. }) => continue,
                Err(e) => return Err(VaultError::store("writing rewrapped data keys")(e)),
            }
        }
        Err(VaultError::Busy {
            kek_version: target,
        })
    }

    async fn open_record(&self, record: &CredentialRecord) -> Result<Opened, VaultError> {
        let id = CredentialId {
            owner: record.meta.owner.clone(),
            version: record.meta.version,
        };
        let ring = match self.keys.load() {
            // Without the file, no version is in the ring: say which one
            // this credential needs.
            Err(VaultError::KeyFileMissing { path }) => {
                return Err(VaultError::MissingKey {
                    credential: id,
                    kek_version: record.meta.kek_version,
                    path,
                })
            }
            other => other?,
        };
        let plaintext = envelope::open(&ring, &id, &sealed_of(record))?;
        let files =
            CredentialFiles::decode(plaintext.expose()).map_err(|why| VaultError::Malformed {
                credential: id.clone(),
                why,
            })?;
        Ok(Opened {
            meta: record.meta.clone(),
            files,
        })
    }

    /// The ring, made now if this is the first use.
    async fn ring(&self) -> Result<KeyRing, VaultError> {
        if self.keys.exists() {
            return self.keys.load();
        }
        let count = self.counts().await?.values().sum();
        self.keys.load_or_create(count)
    }

    async fn current_record(
        &self,
        owner: &CredentialOwner,
    ) -> Result<Option<CredentialRecord>, VaultError> {
        let found = self.store.current_credential(owner).await;
        found.map_err(VaultError::store(format_args!(
            "reading credential {owner}"
        )))
    }

    async fn counts(&self) -> Result<BTreeMap<u32, u64>, VaultError> {
        let counts = self.store.credential_counts_by_kek().await;
        counts.map_err(VaultError::store("counting credentials by key version"))
    }
}

fn rewrap_one(ring: &KeyRing, record: &CredentialRecord) -> Result<Rewrap, VaultError> {
    let id = CredentialId {
        owner: record.meta.owner.clone(),
        version: record.meta.version,
    };
    let (wrapped_key, key_nonce) = envelope::rewrap(ring, ring, &id, &sealed_of(record))?;
    Ok(Rewrap {
        owner: id.owner,
        version: id.version,
        from_kek_version: record.meta.kek_version,
        kek_version: ring.active(),
        wrapped_key,
        key_nonce,
    })
}

fn sealed_of(record: &CredentialRecord) -> Sealed {
    let s = &record.sealed;
    Sealed {
        kek_version: record.meta.kek_version,
        wrapped_key: s.wrapped_key.clone(),
        key_nonce: s.key_nonce.clone(),
        nonce: s.nonce.clone(),
        ciphertext: s.ciphertext.clone(),
    }
}

/// The row to store for `sealed`: the envelope, and metadata that says
/// nothing of the files' contents.
fn record(id: &CredentialId, files: &CredentialFiles, sealed: Sealed) -> CredentialRecord {
    CredentialRecord {
        meta: CredentialMeta {
            owner: id.owner.clone(),
            version: id.version,
            created_at: Timestamp::now(),
            size: files.size(),
            files: files
                .files
                .iter()
                .map(|f| CredentialFileInfo {
                    path: f.path.clone(),
                    mode: f.mode,
                    size: f.contents.len() as u64,
                })
                .collect(),
            kek_version: sealed.kek_version,
        },
        sealed: SealedParts {
            wrapped_key: sealed.wrapped_key,
            key_nonce: sealed.key_nonce,
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext,
        },
    }
}

#[cfg(test)]
mod tests {
    use hearth_store::SqliteStore;

    use super::*;

    fn files() -> CredentialFiles {
        CredentialFiles {
            files: vec![CredentialFile {
                path: ".codex/auth.json".to_owned(),
                mode: 0o600,
                contents: Secret::new(b"{\"k\":\"v\"}".to_vec()),
            }],
        }
    }

    /// A capture that read the ring before a rotation and the retirement
    /// of the version it used, and stored its row after both: the row is
    /// rewrapped under the active version with the key it still held, so
    /// it is neither lost nor left under a destroyed key.
    #[tokio::test]
    async fn a_seal_that_raced_a_rotation_and_retirement_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let vault = Vault::new(KeyFile::in_data_dir(dir.path()), store.clone());
        let owner = CredentialOwner {
            tenant: "team-a".parse().unwrap(),
            user: "alice".parse().unwrap(),
            provider: "codex".parse().unwrap(),
        };
        let stale = vault.ring().await.unwrap();
        vault.rotate().await.unwrap();
        vault.retire(1).await.unwrap();
        let id = CredentialId {
            owner: owner.clone(),
            version: 1,
        };
        let sealed = envelope::seal(&stale, &id, &files().encode()).unwrap();
        let row = record(&id, &files(), sealed);
        store.insert_credential(&row).await.unwrap();
        vault.follow_rotation(&stale, &row).await.unwrap();
        let opened = vault.open_current(&owner).await.unwrap().unwrap();
        assert_eq!(opened.files, files());
        assert_eq!(opened.meta.kek_version, 2);
    }
}
