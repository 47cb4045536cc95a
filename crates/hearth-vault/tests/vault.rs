//! The vault over a real SQLite store and a real key file: what is sealed
//! opens exactly; tampered, moved or unkeyed ciphertexts are refused with
//! errors that name the credential and the fix; rotation rewraps every
//! data key and retirement destroys only unused keys; no secret shows in
//! `Debug`, errors or metadata.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;

use hearth_store::{CredentialOwner, CredentialRecord, CredentialStore, SqliteStore};
use hearth_vault::{
    envelope, CredentialFile, CredentialFiles, CredentialId, KeyFile, Part, Secret, Vault,
    VaultError,
};
use tempfile::TempDir;

const SECRET: &str = "sk-ant-oat01-VERY-SECRET-TOKEN";

fn files() -> CredentialFiles {
    CredentialFiles {
        files: vec![
            CredentialFile {
                path: ".claude/.credentials.json".to_owned(),
                mode: 0o600,
                contents: Secret::new(format!("{{\"accessToken\":\"{SECRET}\"}}").into_bytes()),
            },
            CredentialFile {
                path: ".claude/session.bin".to_owned(),
                mode: 0o400,
                contents: Secret::new((0..=255u8).rev().chain([0; 7]).collect()),
            },
            CredentialFile {
                path: ".claude.json".to_owned(),
                mode: 0o644,
                contents: Secret::new(b"{}".to_vec()),
            },
        ],
    }
}

fn owner(user: &str, provider: &str) -> CredentialOwner {
    CredentialOwner {
        tenant: "team-a".parse().unwrap(),
        user: user.parse().unwrap(),
        provider: provider.parse().unwrap(),
    }
}

struct Fixture {
    dir: TempDir,
    store: Arc<SqliteStore>,
    vault: Vault,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("hearth.db")).unwrap());
    let vault = Vault::new(KeyFile::in_data_dir(dir.path()), store.clone());
    Fixture { dir, store, vault }
}

impl Fixture {
    async fn record(&self, owner: &CredentialOwner) -> CredentialRecord {
        self.store.current_credential(owner).await.unwrap().unwrap()
    }

    /// Puts `record` in place of its owner's rows, through the trait: what
    /// someone with write access to the database could do.
    async fn replace(&self, record: &CredentialRecord) {
        self.store
            .delete_credentials(&record.meta.owner)
            .await
            .unwrap();
        self.store.insert_credential(record).await.unwrap();
    }

    fn key_file(&self) -> &Path {
        self.vault.key_file().path()
    }
}

/// Every rendering of `err` (message, source chain, Debug) names the
/// credential and holds no secret byte.
fn assert_clean(err: &VaultError, names: &str) {
    let mut text = format!("{err:?}");
    let mut e: Option<&dyn std::error::Error> = Some(err);
    while let Some(inner) = e {
        text.push_str(&inner.to_string());
        e = inner.source();
    }
    assert!(text.contains(names), "{names} is not named: {text}");
    assert!(!text.contains(SECRET), "a secret is in an error: {text}");
}

#[tokio::test]
async fn what_is_sealed_opens_exactly_and_each_version_has_a_fresh_key() {
    let f = fixture();
    let alice = owner("alice", "claude");
    let v1 = f.vault.seal(&alice, &files()).await.unwrap();
    assert_eq!(
        (v1.version, v1.kek_version, v1.size),
        (1, 1, files().size())
    );
    assert_eq!(v1.files.len(), 3);
    let first = f.record(&alice).await;
    let v2 = f.vault.seal(&alice, &files()).await.unwrap();
    assert_eq!(v2.version, 2);
    let second = f.record(&alice).await;
    let opened = f.vault.open_current(&alice).await.unwrap().unwrap();
    assert_eq!(opened.files, files());
    assert_eq!(opened.meta, v2);
    let older = f.vault.open_version(&alice, 1).await.unwrap().unwrap();
    assert_eq!(older.files, files());
    // The same plaintext sealed twice shares nothing.
    assert_ne!(first.sealed.ciphertext, second.sealed.ciphertext);
    assert_ne!(first.sealed.wrapped_key, second.sealed.wrapped_key);
    assert_ne!(first.sealed.nonce, second.sealed.nonce);
    assert_ne!(first.sealed.key_nonce, second.sealed.key_nonce);
    assert!(!contains(&second.sealed.ciphertext, SECRET.as_bytes()));
    assert_eq!(
        f.vault.open_current(&owner("bob", "claude")).await.unwrap(),
        None
    );
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every byte of the ciphertext, both nonces and the wrapped key, flipped
/// one at a time: each is refused with an error naming the credential, and
/// the stored row is left as it was.
#[tokio::test]
async fn tampering_with_any_byte_is_refused_and_overwrites_nothing() {
    let f = fixture();
    let alice = owner("alice", "claude");
    f.vault.seal(&alice, &files()).await.unwrap();
    let stored = f.record(&alice).await;
    let ring = f.vault.key_file().load().unwrap();
    let id = CredentialId {
        owner: alice.clone(),
        version: 1,
    };
    let sealed = hearth_vault::Sealed {
        kek_version: 1,
        wrapped_key: stored.sealed.wrapped_key.clone(),
        key_nonce: stored.sealed.key_nonce.clone(),
        nonce: stored.sealed.nonce.clone(),
        ciphertext: stored.sealed.ciphertext.clone(),
    };
    assert!(envelope::open(&ring, &id, &sealed).is_ok());
    type Field = fn(&mut hearth_vault::Sealed) -> &mut Vec<u8>;
    let fields: [(Field, Part); 4] = [
        (|s| &mut s.ciphertext, Part::Ciphertext),
        (|s| &mut s.nonce, Part::Ciphertext),
        (|s| &mut s.wrapped_key, Part::WrappedKey),
        (|s| &mut s.key_nonce, Part::WrappedKey),
    ];
    for (field, part) in fields {
        let len = field(&mut sealed.clone()).len();
        for i in 0..len {
            let mut bad = sealed.clone();
            field(&mut bad)[i] ^= 0x01;
            let err = envelope::open(&ring, &id, &bad).unwrap_err();
            match &err {
                VaultError::Tampered { part: p, .. } => assert_eq!(*p, part),
                // The wrapped key's first 8 bytes are the KEK's fingerprint.
                VaultError::WrongKey { .. } if part == Part::WrappedKey && i < 8 => {}
                other => panic!("byte {i}: {other:?}"),
            }
            assert_clean(&err, "team-a/alice/claude version 1");
        }
        // Truncated or emptied: an error too, never a panic.
        for cut in [0, len / 2] {
            let mut short = sealed.clone();
            field(&mut short).truncate(cut);
            assert!(envelope::open(&ring, &id, &short).is_err());
        }
    }
    // Through the store: a tampered row fails to open and stays as it is.
    let mut bad = stored.clone();
    bad.sealed.ciphertext[3] ^= 0x80;
    f.replace(&bad).await;
    let err = f.vault.open_current(&alice).await.unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::Tampered {
                part: Part::Ciphertext,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("log in again"), "{err}");
    assert_eq!(
        f.record(&alice).await,
        bad,
        "the failed open changed the row"
    );
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_row_does_not_open() {
    let f = fixture();
    let alice = owner("alice", "claude");
    f.vault.seal(&alice, &files()).await.unwrap();
    let alices = f.record(&alice).await;
    for other in [owner("bob", "claude"), owner("alice", "codex")] {
        f.vault.seal(&other, &files()).await.unwrap();
        let mut moved = f.record(&other).await;
        moved.sealed = alices.sealed.clone();
        f.replace(&moved).await;
        let err = f.vault.open_current(&other).await.unwrap_err();
        assert!(matches!(err, VaultError::Tampered { .. }), "{err:?}");
        assert_clean(&err, &format!("credential {other} version 1"));
    }
    // Version 1's envelope put in version 2's row.
    f.vault.seal(&alice, &files()).await.unwrap();
    let mut v2 = f.record(&alice).await;
    assert_eq!(v2.meta.version, 2);
    v2.sealed = alices.sealed.clone();
    f.replace(&v2).await;
    let err = f.vault.open_current(&alice).await.unwrap_err();
    assert!(matches!(err, VaultError::Tampered { .. }), "{err:?}");
    assert_clean(&err, "team-a/alice/claude version 2");

    // A rotation will not rewrap it either: it stops, naming the row.
    let err = f.vault.rotate().await.unwrap_err();
    assert_clean(&err, "team-a/alice/claude version 2");
}

#[tokio::test]
async fn a_row_relabelled_with_another_kek_version_does_not_open() {
    let f = fixture();
    let bob = owner("bob", "claude");
    f.vault.seal(&bob, &files()).await.unwrap();
    let under_v1 = f.record(&bob).await;
    f.vault.rotate().await.unwrap();
    let mut relabelled = under_v1.clone();
    relabelled.meta.kek_version = 2;
    f.replace(&relabelled).await;
    let err = f.vault.open_current(&bob).await.unwrap_err();
    assert!(
        matches!(err, VaultError::WrongKey { kek_version: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("KEK version changed"), "{err}");
}

#[tokio::test]
async fn rotation_rewraps_every_data_key_and_the_old_version_can_be_retired() {
    let f = fixture();
    let owners = [
        owner("alice", "claude"),
        owner("bob", "claude"),
        owner("bob", "codex"),
    ];
    for o in &owners {
        f.vault.seal(o, &files()).await.unwrap();
    }
    let before: Vec<_> = futures(&f, &owners).await;
    let rotation = f.vault.rotate().await.unwrap();
    assert_eq!((rotation.kek_version, rotation.rewrapped), (2, 3));
    for (o, old) in owners.iter().zip(&before) {
        let now = f.record(o).await;
        assert_eq!(now.meta.kek_version, 2);
        assert_eq!(
            now.sealed.ciphertext, old.sealed.ciphertext,
            "the files were re-encrypted"
        );
        assert_ne!(now.sealed.wrapped_key, old.sealed.wrapped_key);
        let opened = f.vault.open_current(o).await.unwrap().unwrap();
        assert_eq!(opened.files, files());
    }
    let status = f.vault.status().await.unwrap();
    assert_eq!(status.active, Some(2));
    let counts: Vec<_> = status
        .versions
        .iter()
        .map(|v| (v.version, v.credentials))
        .collect();
    assert_eq!(counts, [(1, 0), (2, 3)]);

    f.vault.retire(1).await.unwrap();
    let status = f.vault.status().await.unwrap();
    assert!(status.versions[0].retired_at.is_some());
    let text = std::fs::read_to_string(f.key_file()).unwrap();
    let ring: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        ring["keys"][0]["key"].is_null(),
        "a retired key was kept: {ring}"
    );
    // New captures go under the active version; the active one is not retired.
    assert_eq!(
        f.vault
            .seal(&owners[0], &files())
            .await
            .unwrap()
            .kek_version,
        2
    );
    let err = f.vault.retire(2).await.unwrap_err();
    assert!(
        matches!(err, VaultError::RetireActive { version: 2 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("hearth vault rotate"), "{err}");
}

async fn futures(f: &Fixture, owners: &[CredentialOwner]) -> Vec<CredentialRecord> {
    let mut out = Vec::new();
    for o in owners {
        out.push(f.record(o).await);
    }
    out
}

/// A row still under version 1 (put back from before the rotation, as a
/// restored backup would): retiring 1 is refused while it is there, and
/// once 1 is retired (after the row went and came back) it is refused to
/// open.
#[tokio::test]
async fn a_version_in_use_is_not_retired_and_a_retired_one_opens_nothing() {
    let f = fixture();
    let alice = owner("alice", "claude");
    f.vault.seal(&alice, &files()).await.unwrap();
    let under_v1 = f.record(&alice).await;
    f.vault.rotate().await.unwrap();
    f.replace(&under_v1).await;
    let err = f.vault.retire(1).await.unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::RetireInUse {
                version: 1,
                count: 1
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("hearth vault rotate"), "{err}");
    assert!(
        f.vault.open_current(&alice).await.unwrap().is_some(),
        "1 still opens"
    );

    f.vault.rotate().await.unwrap();
    f.vault.retire(1).await.unwrap();
    f.replace(&under_v1).await;
    let err = f.vault.open_current(&alice).await.unwrap_err();
    assert!(
        matches!(err, VaultError::RetiredKey { kek_version: 1, .. }),
        "{err:?}"
    );
    assert_clean(&err, "team-a/alice/claude version 1");
    // A rotation cannot rewrap it either, and says which one stops it.
    let err = f.vault.rotate().await.unwrap_err();
    assert!(matches!(err, VaultError::RetiredKey { .. }), "{err:?}");
}

#[tokio::test]
async fn a_missing_or_replaced_key_file_is_named_with_the_fix() {
    let f = fixture();
    let alice = owner("alice", "claude");
    f.vault.seal(&alice, &files()).await.unwrap();
    let saved = std::fs::read(f.key_file()).unwrap();

    // Gone: the credential and its KEK version are named, and no new ring
    // is made over the sealed credentials.
    std::fs::remove_file(f.key_file()).unwrap();
    let err = f.vault.open_current(&alice).await.unwrap_err();
    assert!(
        matches!(err, VaultError::MissingKey { kek_version: 1, .. }),
        "{err:?}"
    );
    assert_clean(&err, "team-a/alice/claude version 1");
    let text = err.to_string();
    assert!(
        text.contains("KEK version 1 is not in the key ring at"),
        "{text}"
    );
    assert!(text.contains("restore the key file"), "{text}");
    let err = f.vault.seal(&alice, &files()).await.unwrap_err();
    assert!(
        matches!(err, VaultError::KeyFileLost { count: 1, .. }),
        "{err:?}"
    );
    assert!(!f.key_file().exists());

    // Replaced by another ring: a wrong key, not tampering.
    let other = tempfile::tempdir().unwrap();
    let other_keys = KeyFile::in_data_dir(other.path());
    other_keys.load_or_create(0).unwrap();
    std::fs::copy(other_keys.path(), f.key_file()).unwrap();
    let err = f.vault.open_current(&alice).await.unwrap_err();
    assert!(
        matches!(err, VaultError::WrongKey { kek_version: 1, .. }),
        "{err:?}"
    );
    assert_clean(&err, "team-a/alice/claude version 1");
    assert!(
        err.to_string()
            .contains("restore the one it was sealed with"),
        "{err}"
    );

    // A ring without the version the credential needs.
    std::fs::write(f.key_file(), &saved).unwrap();
    f.vault.rotate().await.unwrap();
    std::fs::copy(other_keys.path(), f.key_file()).unwrap();
    let err = f.vault.open_current(&alice).await.unwrap_err();
    assert!(
        matches!(err, VaultError::MissingKey { kek_version: 2, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("KEK version 2 is not in the key ring"),
        "{err}"
    );
}

#[tokio::test]
async fn the_key_file_is_0600_and_a_loose_one_is_refused() {
    let f = fixture();
    let alice = owner("alice", "claude");
    f.vault.seal(&alice, &files()).await.unwrap();
    let mode = std::fs::metadata(f.key_file())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    std::fs::set_permissions(f.key_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = f.vault.open_current(&alice).await.unwrap_err();
    assert!(
        matches!(err, VaultError::KeyFilePermissions { mode: 0o644, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("chmod 600"), "{err}");
    let err = f.vault.seal(&alice, &files()).await.unwrap_err();
    assert!(
        matches!(err, VaultError::KeyFilePermissions { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_operator_provided_key_file_is_used_and_never_made() {
    let f = fixture();
    let path = f.dir.path().join("ops-keys.json");
    let vault = Vault::new(KeyFile::provided(path.clone()), f.store.clone());
    let err = vault
        .seal(&owner("alice", "claude"), &files())
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::KeyFileMissing { .. }), "{err:?}");
    assert!(!path.exists());
    // One the operator put there (made elsewhere by hearth) is used.
    let made = tempfile::tempdir().unwrap();
    let keys = KeyFile::in_data_dir(made.path());
    keys.load_or_create(0).unwrap();
    std::fs::copy(keys.path(), &path).unwrap();
    vault
        .seal(&owner("alice", "claude"), &files())
        .await
        .unwrap();
    assert!(vault
        .open_current(&owner("alice", "claude"))
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn no_secret_shows_in_debug_or_metadata() {
    let f = fixture();
    let alice = owner("alice", "claude");
    let meta = f.vault.seal(&alice, &files()).await.unwrap();
    let opened = f.vault.open_current(&alice).await.unwrap().unwrap();
    let key = std::fs::read_to_string(f.key_file()).unwrap();
    let key: serde_json::Value = serde_json::from_str(&key).unwrap();
    let key = key["keys"][0]["key"].as_str().unwrap().to_owned();
    let listed = f
        .store
        .list_credentials(&alice.tenant, &alice.user)
        .await
        .unwrap();
    let ring = f.vault.key_file().load().unwrap();
    let status = f.vault.status().await.unwrap();
    for text in [
        format!("{opened:?}"),
        format!("{meta:?}"),
        format!("{listed:?}"),
        format!("{:?}", f.record(&alice).await),
        format!("{ring:?}"),
        format!("{status:?}"),
        format!("{:?}", f.vault),
    ] {
        assert!(!text.contains(SECRET), "a secret: {text}");
        assert!(!text.contains(&key), "a key: {text}");
    }
    let first = opened.files.files[0].contents.len();
    assert!(format!("{opened:?}").contains(&format!("Secret({first} bytes)")));
}

#[tokio::test]
async fn a_bad_capture_is_refused_before_anything_is_stored() {
    let f = fixture();
    let alice = owner("alice", "claude");
    let err = f
        .vault
        .seal(&alice, &CredentialFiles::default())
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("team-a/alice/claude"), "{err}");
    assert_eq!(f.store.current_credential(&alice).await.unwrap(), None);
}

#[tokio::test]
async fn a_refresh_from_a_stale_version_loses_and_names_both_versions() {
    let f = fixture();
    let alice = owner("alice", "codex");
    // No credential yet: only a base of 0 may seal.
    let v1 = f.vault.seal_over(&alice, 0, &files()).await.unwrap();
    assert_eq!(v1.version, 1);
    let v2 = f.vault.seal_over(&alice, 1, &files()).await.unwrap();
    assert_eq!(v2.version, 2);
    // A second refresh from version 1 (another VM's) loses: 2 is current.
    let err = f.vault.seal_over(&alice, 1, &files()).await.unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::Stale {
                base: 1,
                current: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_clean(&err, "team-a/alice/codex");
    assert!(err.to_string().contains("version 2, not 1"), "{err}");
    assert_eq!(f.record(&alice).await.meta.version, 2);
    // Two refreshes of the same base racing: exactly one wins.
    let (one, two) = (files(), files());
    let (a, b) = tokio::join!(
        f.vault.seal_over(&alice, 2, &one),
        f.vault.seal_over(&alice, 2, &two)
    );
    assert_eq!(a.is_ok() as u8 + b.is_ok() as u8, 1, "{a:?} {b:?}");
    assert_eq!(f.record(&alice).await.meta.version, 3);
}
