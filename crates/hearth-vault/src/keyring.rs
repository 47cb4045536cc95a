//! The key ring: versioned key-encryption keys (KEKs), one of them active
//! (new data keys are wrapped under it), retired ones kept as a record
//! with their key destroyed. On disk it is one JSON file, mode 0600 in a
//! 0700 directory, replaced atomically (a temporary file, fsync, rename)
//! and refused when group or others may read it.
//!
//! ```json
//! {"format": 1, "active": 2, "keys": [
//!   {"version": 1, "created_at": 1764633600000, "retired_at": 1764720000000, "key": null},
//!   {"version": 2, "created_at": 1764700000000, "retired_at": null, "key": "<base64 of 32 bytes>"}]}
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hearth_types::Timestamp;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize as _, Zeroizing};

use crate::VaultError;

/// The environment variable naming a key file the operator provides.
pub const KEY_FILE_ENV: &str = "HEARTH_VAULT_KEY_FILE";
const FORMAT: u32 = 1;

/// A 256-bit key-encryption key. Wiped when dropped; `Debug` shows its
/// fingerprint only.
#[derive(Clone)]
pub(crate) struct Kek(Zeroizing<[u8; 32]>);

impl Kek {
    fn generate() -> Kek {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        Kek(key)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 8 bytes that tell one key from another without revealing it: the
    /// start of SHA-256 over a label and the key. Stored with each wrapped
    /// data key, so a replaced key file is told apart from tampering.
    pub(crate) fn fingerprint(&self) -> [u8; 8] {
        let mut h = Sha256::new();
        h.update(b"hearth-vault kek fingerprint v1\0");
        h.update(self.0.as_ref());
        let digest = h.finalize();
        let mut out = [0; 8];
        out.copy_from_slice(&digest[..8]);
        out
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek(fingerprint {})", hex8(&self.fingerprint()))
    }
}

fn hex8(b: &[u8; 8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One version of the ring.
#[derive(Clone, Debug)]
pub struct KeyVersion {
    pub version: u32,
    pub created_at: Timestamp,
    /// Set once retired; its key is gone from then on.
    pub retired_at: Option<Timestamp>,
    pub(crate) key: Option<Kek>,
}

/// The key ring, as read from its file (named for messages).
#[derive(Clone, Debug)]
pub struct KeyRing {
    path: PathBuf,
    active: u32,
    versions: BTreeMap<u32, KeyVersion>,
}

/// What looking a version up in the ring found.
pub(crate) enum Lookup<'a> {
    Key(&'a Kek),
    Retired,
    Missing,
}

impl KeyRing {
    /// A new ring with one version, 1, active.
    pub(crate) fn new(path: PathBuf) -> KeyRing {
        let mut ring = KeyRing {
            path,
            active: 0,
            versions: BTreeMap::new(),
        };
        ring.add_version();
        ring
    }

    /// Where the ring was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn active(&self) -> u32 {
        self.active
    }

    /// Every version, oldest first, retired ones included.
    pub fn versions(&self) -> impl Iterator<Item = &KeyVersion> {
        self.versions.values()
    }

    /// The active version's key. `load` and `add_version` never leave the
    /// active one keyless, and `retire` refuses it; still an error, not a
    /// panic, if that ever changed.
    pub(crate) fn active_key(&self) -> Result<&Kek, VaultError> {
        match self.lookup(self.active) {
            Lookup::Key(k) => Ok(k),
            Lookup::Retired | Lookup::Missing => Err(VaultError::KeyFileCorrupt {
                path: self.path.clone(),
                why: format!("the active version {} has no key", self.active),
            }),
        }
    }

    pub(crate) fn lookup(&self, version: u32) -> Lookup<'_> {
        match self.versions.get(&version) {
            Some(KeyVersion { key: Some(k), .. }) => Lookup::Key(k),
            Some(_) => Lookup::Retired,
            None => Lookup::Missing,
        }
    }

    /// Makes a new version, one above the highest, and makes it active.
    pub(crate) fn add_version(&mut self) -> u32 {
        let version = self.versions.keys().next_back().map_or(1, |v| v + 1);
        self.versions.insert(
            version,
            KeyVersion {
                version,
                created_at: Timestamp::now(),
                retired_at: None,
                key: Some(Kek::generate()),
            },
        );
        self.active = version;
        version
    }

    /// Destroys version `version`'s key, keeping the record that it was.
    /// The caller has checked that nothing is wrapped under it.
    pub(crate) fn retire(&mut self, version: u32) -> Result<(), VaultError> {
        if version == self.active {
            return Err(VaultError::RetireActive { version });
        }
        let entry = self
            .versions
            .get_mut(&version)
            .ok_or_else(|| VaultError::UnknownVersion {
                version,
                path: self.path.clone(),
            })?;
        entry.key = None;
        entry.retired_at.get_or_insert_with(Timestamp::now);
        Ok(())
    }
}

/// Where the key ring is kept, and whether hearth may make it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    path: PathBuf,
    /// Given by the operator: never made by hearth, only read and updated.
    provided: bool,
}

impl KeyFile {
    /// `<data>/vault/keys.json`, made at first use.
    pub fn in_data_dir(data_root: &Path) -> KeyFile {
        KeyFile {
            path: data_root.join("vault").join("keys.json"),
            provided: false,
        }
    }

    /// A file the operator made (or restored); hearth never creates it.
    pub fn provided(path: PathBuf) -> KeyFile {
        KeyFile {
            path,
            provided: true,
        }
    }

    /// [`KEY_FILE_ENV`] when set (and not empty), else the data
    /// directory's.
    pub fn from_env(data_root: &Path) -> KeyFile {
        match std::env::var_os(KEY_FILE_ENV).filter(|v| !v.is_empty()) {
            Some(path) => KeyFile::provided(PathBuf::from(path)),
            None => KeyFile::in_data_dir(data_root),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Reads the ring. A missing file is [`VaultError::KeyFileMissing`]; a
    /// file group or others may read or write is refused.
    pub fn load(&self) -> Result<KeyRing, VaultError> {
        let read_err = |source| VaultError::KeyFileRead {
            path: self.path.clone(),
            source,
        };
        let meta = match fs::metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VaultError::KeyFileMissing {
                    path: self.path.clone(),
                })
            }
            other => other.map_err(read_err)?,
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(VaultError::KeyFilePermissions {
                path: self.path.clone(),
                mode,
            });
        }
        let text = Zeroizing::new(fs::read(&self.path).map_err(read_err)?);
        parse(&text, &self.path)
    }

    /// Reads the ring, or, when there is no file and hearth may make it
    /// (and `sealed_count`, the credentials in the store, is 0), makes a
    /// new ring with one version and writes it.
    pub fn load_or_create(&self, sealed_count: u64) -> Result<KeyRing, VaultError> {
        match self.load() {
            Err(VaultError::KeyFileMissing { .. }) if !self.provided => {}
            other => return other,
        }
        let _lock = self.lock()?;
        self.create_locked(sealed_count)
    }

    /// [`load_or_create`](Self::load_or_create) for a caller that holds
    /// [`lock`](Self::lock).
    pub(crate) fn create_locked(&self, sealed_count: u64) -> Result<KeyRing, VaultError> {
        // Someone else may have made it while we waited for the lock.
        if self.exists() || self.provided {
            return self.load();
        }
        if sealed_count > 0 {
            return Err(VaultError::KeyFileLost {
                path: self.path.clone(),
                count: sealed_count,
            });
        }
        let ring = KeyRing::new(self.path.clone());
        self.save(&ring)?;
        tracing::info!(path = %self.path.display(), "vault key file created");
        Ok(ring)
    }

    /// Replaces the file with `ring`, atomically: a reader sees the old
    /// ring or the new one, never half of either.
    pub(crate) fn save(&self, ring: &KeyRing) -> Result<(), VaultError> {
        let write_err = |source| VaultError::KeyFileWrite {
            path: self.path.clone(),
            source,
        };
        let dir = self.dir();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(write_err)?;
        let text = render(ring);
        let tmp = dir.join(format!(
            ".{}.tmp-{}-{:08x}",
            file_name(&self.path),
            std::process::id(),
            rand::random::<u32>()
        ));
        let written = write_new(&tmp, text.as_bytes()).and_then(|()| fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(write_err(e));
        }
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err)
    }

    /// An exclusive lock on `<file>.lock` beside the key file, held while
    /// the ring is read, changed and written, so two rotations (a CLI and
    /// another) take turns.
    pub(crate) fn lock(&self) -> Result<File, VaultError> {
        let write_err = |source| VaultError::KeyFileWrite {
            path: self.path.clone(),
            source,
        };
        let dir = self.dir();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(write_err)?;
        let lock_path = dir.join(format!("{}.lock", file_name(&self.path)));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(lock_path)
            .map_err(write_err)?;
        file.lock().map_err(write_err)?;
        Ok(file)
    }

    fn dir(&self) -> &Path {
        self.path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or("keys.json".into(), |n| n.to_string_lossy().into_owned())
}

fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RingFile {
    format: u32,
    active: u32,
    keys: Vec<VersionFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionFile {
    version: u32,
    created_at: i64,
    retired_at: Option<i64>,
    /// Base64 of the 32 bytes; null once retired.
    key: Option<String>,
}

impl Drop for VersionFile {
    fn drop(&mut self) {
        if let Some(k) = &mut self.key {
            k.zeroize();
        }
    }
}

fn render(ring: &KeyRing) -> Zeroizing<String> {
    let file = RingFile {
        format: FORMAT,
        active: ring.active,
        keys: ring
            .versions
            .values()
            .map(|v| VersionFile {
                version: v.version,
                created_at: v.created_at.as_millis(),
                retired_at: v.retired_at.map(Timestamp::as_millis),
                key: v.key.as_ref().map(|k| BASE64.encode(k.bytes())),
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
    text.push('\n');
    Zeroizing::new(text)
}

fn parse(text: &[u8], path: &Path) -> Result<KeyRing, VaultError> {
    let corrupt = |why: String| VaultError::KeyFileCorrupt {
        path: path.to_owned(),
        why,
    };
    // serde_json's messages quote no input, only positions.
    let file: RingFile = serde_json::from_slice(text).map_err(|e| corrupt(e.to_string()))?;
    if file.format != FORMAT {
        return Err(corrupt(format!(
            "format {}, this hearth reads {FORMAT}",
            file.format
        )));
    }
    let mut versions = BTreeMap::new();
    for v in &file.keys {
        let entry = version_of(v).map_err(corrupt)?;
        if versions.insert(v.version, entry).is_some() {
            return Err(corrupt(format!("version {} is listed twice", v.version)));
        }
    }
    match versions.get(&file.active) {
        Some(KeyVersion { key: Some(_), .. }) => {}
        _ => {
            return Err(corrupt(format!(
                "the active version {} is missing or retired",
                file.active
            )))
        }
    }
    Ok(KeyRing {
        path: path.to_owned(),
        active: file.active,
        versions,
    })
}

fn version_of(v: &VersionFile) -> Result<KeyVersion, String> {
    let key = match (&v.key, v.retired_at) {
        (Some(_), Some(_)) => {
            return Err(format!("version {} is retired but has a key", v.version))
        }
        (None, None) => return Err(format!("version {} has no key", v.version)),
        (None, Some(_)) => None,
        (Some(text), None) => Some(decode_key(text).ok_or_else(|| {
            format!("the key of version {} is not base64 of 32 bytes", v.version)
        })?),
    };
    Ok(KeyVersion {
        version: v.version,
        created_at: Timestamp::from_millis(v.created_at),
        retired_at: v.retired_at.map(Timestamp::from_millis),
        key,
    })
}

fn decode_key(text: &str) -> Option<Kek> {
    let bytes = Zeroizing::new(BASE64.decode(text).ok()?);
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != key.len() {
        return None;
    }
    key.copy_from_slice(&bytes);
    Some(Kek(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_file_is_0600_in_a_0700_directory_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::in_data_dir(dir.path());
        let made = file.load_or_create(0).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(file.path()), 0o600);
        assert_eq!(mode(file.path().parent().unwrap()), 0o700);
        let read = file.load().unwrap();
        assert_eq!(read.active(), 1);
        assert_eq!(
            read.active_key().unwrap().fingerprint(),
            made.active_key().unwrap().fingerprint()
        );
    }

    #[test]
    fn a_key_file_others_may_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::in_data_dir(dir.path());
        file.load_or_create(0).unwrap();
        for loose in [0o640, 0o604, 0o660, 0o666] {
            fs::set_permissions(file.path(), fs::Permissions::from_mode(loose)).unwrap();
            let err = file.load().unwrap_err();
            assert!(
                matches!(err, VaultError::KeyFilePermissions { mode, .. } if mode == loose),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(text.contains("chmod 600"), "{text}");
            assert!(text.contains(&file.path().display().to_string()), "{text}");
        }
    }

    #[test]
    fn a_provided_file_is_never_made_and_a_lost_one_is_not_remade() {
        let dir = tempfile::tempdir().unwrap();
        let provided = KeyFile::provided(dir.path().join("ops.json"));
        let err = provided.load_or_create(0).unwrap_err();
        assert!(matches!(err, VaultError::KeyFileMissing { .. }), "{err:?}");
        assert!(err.to_string().contains(KEY_FILE_ENV), "{err}");
        assert!(!provided.exists());
        let ours = KeyFile::in_data_dir(dir.path());
        let err = ours.load_or_create(3).unwrap_err();
        assert!(
            matches!(err, VaultError::KeyFileLost { count: 3, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("restore"), "{err}");
        assert!(!ours.exists());
    }

    #[test]
    fn a_malformed_file_is_named_without_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::provided(dir.path().join("k.json"));
        for bad in [
            "not json",
            r#"{"format": 2, "active": 1, "keys": []}"#,
            r#"{"format": 1, "active": 1, "keys": []}"#,
            r#"{"format": 1, "active": 1, "keys": [{"version": 1, "created_at": 0, "retired_at": null, "key": "c2hvcnQ="}]}"#,
        ] {
            write_new(file.path(), bad.as_bytes()).unwrap();
            let err = file.load().unwrap_err();
            assert!(matches!(err, VaultError::KeyFileCorrupt { .. }), "{err:?}");
            assert!(!err.to_string().contains("c2hvcnQ"), "{err}");
            fs::remove_file(file.path()).unwrap();
        }
    }

    #[test]
    fn debug_of_a_ring_shows_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::in_data_dir(dir.path());
        let ring = file.load_or_create(0).unwrap();
        let text = fs::read_to_string(file.path()).unwrap();
        let stored: serde_json::Value = serde_json::from_str(&text).unwrap();
        let key = stored["keys"][0]["key"].as_str().unwrap().to_owned();
        let debug = format!("{ring:?}");
        assert!(!debug.contains(&key), "{debug}");
        let raw = BASE64.decode(&key).unwrap();
        assert!(!debug.contains(&format!("{:?}", &raw[..4])), "{debug}");
    }
}
