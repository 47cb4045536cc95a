//! The credentials table through the `CredentialStore` trait, on a real
//! file: round trip, the current version and pruning, listing metadata
//! only, deleting, and rewraps written all together or not at all.

use hearth_store::{
    CredentialMeta, CredentialOwner, CredentialRecord, CredentialStore, Rewrap, SealedParts,
    SqliteStore, StoreError,
};
use hearth_types::api::CredentialFileInfo;
use hearth_types::Timestamp;
use tempfile::TempDir;

fn store() -> (TempDir, std::path::PathBuf, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hearth.db");
    let store = SqliteStore::open(&path).unwrap();
    (dir, path, store)
}

fn owner(user: &str, provider: &str) -> CredentialOwner {
    CredentialOwner {
        tenant: "team-a".parse().unwrap(),
        user: user.parse().unwrap(),
        provider: provider.parse().unwrap(),
    }
}

/// A record whose sealed parts are recognisable bytes, so a test can look
/// for them where they must not be.
fn record(owner: &CredentialOwner, version: u64, kek: u32) -> CredentialRecord {
    CredentialRecord {
        meta: CredentialMeta {
            owner: owner.clone(),
            version,
            created_at: Timestamp::from_millis(1000 + version as i64),
            size: 42,
            files: vec![CredentialFileInfo {
                path: ".claude/.credentials.json".to_owned(),
                mode: 0o600,
                size: 42,
            }],
            kek_version: kek,
        },
        sealed: SealedParts {
            wrapped_key: vec![0xAA; 48],
            key_nonce: vec![0xBB; 12],
            nonce: vec![0xCC; 12],
            ciphertext: vec![0xDD, 0, 0xFF, version as u8],
        },
    }
}

#[tokio::test]
async fn a_credential_round_trips_and_the_newest_version_is_current() {
    let (_dir, path, store) = store();
    let alice = owner("alice", "claude");
    let v1 = record(&alice, 1, 1);
    store.insert_credential(&v1).await.unwrap();
    assert_eq!(
        store.current_credential(&alice).await.unwrap(),
        Some(v1.clone())
    );
    let v2 = record(&alice, 2, 1);
    store.insert_credential(&v2).await.unwrap();
    let reopened = SqliteStore::open(&path).unwrap();
    assert_eq!(reopened.current_credential(&alice).await.unwrap(), Some(v2));
    assert_eq!(
        reopened.credential_version(&alice, 1).await.unwrap(),
        Some(v1)
    );
    assert_eq!(
        reopened
            .current_credential(&owner("bob", "claude"))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_version_not_above_the_current_is_a_duplicate() {
    let (_dir, _path, store) = store();
    let alice = owner("alice", "claude");
    store
        .insert_credential(&record(&alice, 2, 1))
        .await
        .unwrap();
    for version in [1, 2] {
        let err = store
            .insert_credential(&record(&alice, version, 1))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Duplicate { .. }), "{err:?}");
        assert!(err.to_string().contains("team-a/alice/claude"), "{err}");
    }
}

#[tokio::test]
async fn only_the_last_two_versions_are_kept() {
    let (_dir, _path, store) = store();
    let alice = owner("alice", "claude");
    for v in 1..=4 {
        store
            .insert_credential(&record(&alice, v, 1))
            .await
            .unwrap();
    }
    assert_eq!(store.credential_version(&alice, 2).await.unwrap(), None);
    assert!(store.credential_version(&alice, 3).await.unwrap().is_some());
    let counts = store.credential_counts_by_kek().await.unwrap();
    assert_eq!(counts.into_iter().collect::<Vec<_>>(), [(1, 2)]);
}

#[tokio::test]
async fn a_listing_is_the_current_version_per_provider_without_sealed_bytes() {
    let (_dir, _path, store) = store();
    for (o, v) in [
        (owner("alice", "codex"), 1),
        (owner("alice", "claude"), 1),
        (owner("alice", "claude"), 2),
        (owner("bob", "claude"), 1),
    ] {
        store.insert_credential(&record(&o, v, 1)).await.unwrap();
    }
    let alice = "alice".parse().unwrap();
    let listed = store
        .list_credentials(&"team-a".parse().unwrap(), &alice)
        .await
        .unwrap();
    let seen: Vec<_> = listed
        .iter()
        .map(|m| (m.owner.provider.as_str(), m.version))
        .collect();
    assert_eq!(seen, [("claude", 2), ("codex", 1)]);
    let other = store
        .list_credentials(&"team-b".parse().unwrap(), &alice)
        .await
        .unwrap();
    assert!(other.is_empty(), "another tenant's alice sees nothing");
}

/// Only the four sealed columns hold the envelope's bytes: the metadata
/// columns, read raw, contain none of them.
#[tokio::test]
async fn nothing_sealed_is_in_a_metadata_column() {
    let (_dir, path, store) = store();
    let alice = owner("alice", "claude");
    store
        .insert_credential(&record(&alice, 1, 1))
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let meta: Vec<u8> = conn
        .query_row(
            "SELECT CAST(tenant || user_name || provider || version || created_at || size \
             || file_count || files || kek_version AS BLOB) FROM credentials",
            [],
            |r| r.get(0),
        )
        .unwrap();
    for byte in [0xAA, 0xBB, 0xCC, 0xDD, 0xFF] {
        assert!(!meta.contains(&byte), "{byte:#x} in {meta:?}");
    }
}

#[tokio::test]
async fn deleting_removes_every_version_and_answers_the_current() {
    let (_dir, _path, store) = store();
    let alice = owner("alice", "claude");
    store
        .insert_credential(&record(&alice, 1, 1))
        .await
        .unwrap();
    store
        .insert_credential(&record(&alice, 2, 1))
        .await
        .unwrap();
    let gone = store.delete_credentials(&alice).await.unwrap().unwrap();
    assert_eq!(gone.version, 2);
    assert_eq!(store.credential_version(&alice, 1).await.unwrap(), None);
    assert_eq!(store.delete_credentials(&alice).await.unwrap(), None);
}

fn rewrap(record: &CredentialRecord, from: u32, to: u32) -> Rewrap {
    Rewrap {
        owner: record.meta.owner.clone(),
        version: record.meta.version,
        from_kek_version: from,
        kek_version: to,
        wrapped_key: vec![0x11; 48],
        key_nonce: vec![0x22; 12],
    }
}

#[tokio::test]
async fn rewraps_are_written_together() {
    let (_dir, _path, store) = store();
    let a = record(&owner("alice", "claude"), 1, 1);
    let b = record(&owner("bob", "claude"), 1, 1);
    store.insert_credential(&a).await.unwrap();
    store.insert_credential(&b).await.unwrap();
    let pending = store.credentials_not_under(2).await.unwrap();
    assert_eq!(pending.len(), 2);
    let n = store
        .rewrap_credentials(&[rewrap(&a, 1, 2), rewrap(&b, 1, 2)])
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert!(store.credentials_not_under(2).await.unwrap().is_empty());
    let a2 = store
        .current_credential(&a.meta.owner)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a2.meta.kek_version, 2);
    assert_eq!(a2.sealed.wrapped_key, vec![0x11; 48]);
    assert_eq!(
        a2.sealed.ciphertext, a.sealed.ciphertext,
        "only the key is rewrapped"
    );
}

/// The second rewrap is stale (its row is under another version by now),
/// so the first, already written in the transaction, is rolled back.
#[tokio::test]
async fn a_stale_rewrap_writes_nothing_at_all() {
    let (_dir, _path, store) = store();
    let a = record(&owner("alice", "claude"), 1, 1);
    let b = record(&owner("bob", "claude"), 1, 3);
    store.insert_credential(&a).await.unwrap();
    store.insert_credential(&b).await.unwrap();
    let err = store
        .rewrap_credentials(&[rewrap(&a, 1, 2), rewrap(&b, 1, 2)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Changed { .. }), "{err:?}");
    assert!(err.to_string().contains("team-a/bob/claude"), "{err}");
    assert_eq!(
        store.current_credential(&a.meta.owner).await.unwrap(),
        Some(a),
        "the first rewrap was rolled back"
    );
}
