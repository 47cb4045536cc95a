//! The SQLite store against real database files, one per test in its own
//! temporary directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hearth_store::sqlite::SCHEMA_VERSION;
use hearth_store::{
    ArchiveRecord, JobKind, NewJob, ProcessRef, SqliteStore, StateChange, Store, StoreError,
    TokenRecord, VmFilter, VmRecord,
};
use hearth_types::api::CreateVm;
use hearth_types::{BackendKind, Failure, FailureCode, TenantId, Timestamp, VmId, VmState};
use tempfile::TempDir;

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn id(s: &str) -> VmId {
    s.parse().unwrap()
}

fn tenant(s: &str) -> TenantId {
    s.parse().unwrap()
}

/// A fresh store in `<tempdir>/state/hearth.db` (the directory does not
/// exist yet, so `open` must make it).
fn store() -> (TempDir, PathBuf, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("hearth.db");
    let store = SqliteStore::open(&path).unwrap();
    (dir, path, store)
}

fn record(vm: &str, owner: &str, created_ms: i64) -> VmRecord {
    VmRecord::requested(
        id(vm),
        tenant(owner),
        &CreateVm::default(),
        t(created_ms),
        t(created_ms + 120_000),
    )
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

fn to(state: VmState, at: i64, message: &str) -> StateChange {
    StateChange::to(state, t(at), message)
}

// Migrations

#[tokio::test]
async fn opening_twice_applies_each_migration_once() {
    let (_dir, path, store) = store();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let (applied, distinct, last): (u32, u32, u32) = raw(&path)
        .query_row(
            "SELECT COUNT(*), COUNT(DISTINCT version), MAX(version) FROM schema_migrations",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    // Every number from 1 once: no gap, none applied twice.
    assert_eq!(
        (applied, distinct, last),
        (SCHEMA_VERSION, SCHEMA_VERSION, SCHEMA_VERSION)
    );
}

#[tokio::test]
async fn the_file_is_in_wal_mode() {
    let (_dir, path, _store) = store();
    let mode: String = raw(&path)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_store_written_by_a_newer_hearth_is_refused() {
    let (_dir, path, store) = store();
    drop(store);
    raw(&path)
        .execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, 'future', 0)",
            [SCHEMA_VERSION + 1],
        )
        .unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    let text = err.to_string();
    let expected = format!(
        "the store at {} was written by a newer hearth (schema {}, this one knows {SCHEMA_VERSION})",
        path.display(),
        SCHEMA_VERSION + 1
    );
    assert!(text.contains(&expected), "{text}");
}

#[tokio::test]
async fn a_vm_written_before_reopening_reads_back() {
    let (_dir, path, store) = store();
    let vm = record("vm-1", "team-a", 1_000);
    store.insert_vm(&vm).await.unwrap();
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.vm(&id("vm-1")).await.unwrap(), Some(vm));
}

// VMs

#[tokio::test]
async fn every_vm_field_round_trips() {
    let (_dir, _path, store) = store();
    let mut rec = record("vm-every-field", "team_b-1", 1_795_000_000_123);
    let vm = &mut rec.vm;
    vm.state = VmState::Failed;
    vm.failure = Some(Failure {
        code: FailureCode::KernelPanic,
        message: "Kernel panic – not syncing: VFS ✗".into(),
    });
    vm.held = true;
    vm.image = "debian bookworm".into();
    vm.backend = BackendKind::Firecracker;
    vm.vcpus = u8::MAX;
    vm.memory_mib = u32::MAX;
    vm.command = vec![
        "sh".into(),
        "-c".into(),
        "echo 'hi there' \"ünïcødé\" 🔥".into(),
        String::new(),
    ];
    vm.updated_at = t(1_795_000_000_999);
    vm.ready_at = Some(t(1_795_000_000_500));
    vm.cleanup_after = Some(t(1_795_000_900_000));
    rec.process = Some(ProcessRef {
        pid: u32::MAX,
        start_ticks: i64::MAX as u64,
    });
    store.insert_vm(&rec).await.unwrap();

    assert_eq!(store.vm(rec.id()).await.unwrap(), Some(rec.clone()));
    let events = store.events(rec.id()).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].at, events[0].state, events[0].message.as_str()),
        (rec.vm.created_at, VmState::Failed, "requested")
    );
}

#[tokio::test]
async fn inserting_a_vm_twice_is_a_duplicate() {
    let (_dir, _path, store) = store();
    store.insert_vm(&record("vm-1", "a", 1)).await.unwrap();
    let err = store.insert_vm(&record("vm-1", "b", 2)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Duplicate { what } if what == "VM vm-1"),
        "{err:?}"
    );
    assert_eq!(
        store.vm(&id("vm-1")).await.unwrap().unwrap().vm.tenant,
        tenant("a")
    );
    assert_eq!(store.events(&id("vm-1")).await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_unknown_vm_reads_as_none_and_has_no_events() {
    let (_dir, _path, store) = store();
    assert_eq!(store.vm(&id("vm-nope")).await.unwrap(), None);
    let err = store.events(&id("vm-nope")).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound(v) if v == &id("vm-nope")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_bad_state_word_is_corrupt_naming_the_vm_and_column() {
    let (_dir, path, store) = store();
    store.insert_vm(&record("vm-1", "a", 1)).await.unwrap();
    raw(&path)
        .execute("UPDATE vms SET state = 'running'", [])
        .unwrap();
    let err = store.vm(&id("vm-1")).await.unwrap_err();
    let StoreError::Corrupt(text) = &err else {
        panic!("{err:?}")
    };
    assert!(
        text.contains("VM vm-1") && text.contains("column state") && text.contains("running"),
        "{text}"
    );
    let listed = store.list_vms(&VmFilter::default()).await.unwrap_err();
    assert!(matches!(listed, StoreError::Corrupt(_)), "{listed:?}");
}

// Transitions

#[tokio::test]
async fn a_transition_updates_the_vm_and_appends_its_event() {
    let (_dir, _path, store) = store();
    let vm = id("vm-1");
    store.insert_vm(&record("vm-1", "a", 1_000)).await.unwrap();

    let rec = store
        .transition(
            &vm,
            VmState::Requested,
            &to(VmState::Preparing, 2_000, "preparing"),
        )
        .await
        .unwrap();
    assert_eq!(
        (rec.state(), rec.vm.updated_at, rec.vm.failure.clone()),
        (VmState::Preparing, t(2_000), None)
    );

    let mut ready = to(VmState::Ready, 3_000, "the guest is ready");
    ready.ready_at = Some(t(2_900));
    store
        .transition(&vm, VmState::Preparing, &ready)
        .await
        .unwrap();

    let failure = Failure {
        code: FailureCode::HypervisorExited,
        message: "qemu exited with status 1".into(),
    };
    let mut failed = to(VmState::Failed, 4_000, "qemu exited");
    failed.failure = Some(failure.clone());
    failed.cleanup_after = Some(t(9_000));
    let rec = store
        .transition(&vm, VmState::Ready, &failed)
        .await
        .unwrap();
    assert_eq!(rec.vm.failure.as_ref(), Some(&failure));
    assert_eq!(
        (rec.vm.ready_at, rec.vm.cleanup_after),
        (Some(t(2_900)), Some(t(9_000)))
    );

    // A change without a failure, ready time or cleanup time keeps them.
    let rec = store
        .transition(
            &vm,
            VmState::Failed,
            &to(VmState::Destroyed, 10_000, "destroyed"),
        )
        .await
        .unwrap();
    assert_eq!(rec.vm.failure, Some(failure));
    assert_eq!(
        (rec.vm.ready_at, rec.vm.cleanup_after),
        (Some(t(2_900)), Some(t(9_000)))
    );
    assert_eq!(store.vm(&vm).await.unwrap(), Some(rec));

    let events = store.events(&vm).await.unwrap();
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.at.as_millis(), e.state, e.message.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (1_000, VmState::Requested, "requested"),
            (2_000, VmState::Preparing, "preparing"),
            (3_000, VmState::Ready, "the guest is ready"),
            (4_000, VmState::Failed, "qemu exited"),
            (10_000, VmState::Destroyed, "destroyed"),
        ]
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[tokio::test]
async fn a_transition_from_the_wrong_state_is_a_conflict_naming_both() {
    let (_dir, _path, store) = store();
    let vm = id("vm-1");
    store.insert_vm(&record("vm-1", "a", 1)).await.unwrap();
    let err = store
        .transition(&vm, VmState::Booting, &to(VmState::Ready, 2, "ready"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { id, expected: VmState::Booting, actual: VmState::Requested } if id == &vm),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("booting") && text.contains("requested"),
        "{text}"
    );
    assert_eq!(
        store.vm(&vm).await.unwrap().unwrap().state(),
        VmState::Requested
    );
    assert_eq!(store.events(&vm).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_transition_of_an_unknown_vm_is_not_found() {
    let (_dir, _path, store) = store();
    let err = store
        .transition(
            &id("vm-x"),
            VmState::Requested,
            &to(VmState::Preparing, 1, ""),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound(v) if v == &id("vm-x")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transitions_from_one_state_have_one_winner() {
    let (_dir, _path, store) = store();
    let store = Arc::new(store);
    store.insert_vm(&record("vm-1", "a", 1)).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let change = to(VmState::Preparing, 10 + i, &format!("reconciler {i}"));
                store
                    .transition(&id("vm-1"), VmState::Requested, &change)
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(rec) => {
                wins += 1;
                assert_eq!(rec.state(), VmState::Preparing);
            }
            Err(StoreError::Conflict {
                actual: VmState::Preparing,
                ..
            }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.events(&id("vm-1")).await.unwrap().len(), 2);
}

/// Two stores on one file stand for two processes (a server and a CLI):
/// `BEGIN IMMEDIATE` and the busy timeout must still let only one win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_racing_on_one_file_have_one_winner_per_vm() {
    let (_dir, path, first) = store();
    let second = Arc::new(SqliteStore::open(&path).unwrap());
    let first = Arc::new(first);
    let vms: Vec<VmId> = (0..30).map(|i| id(&format!("vm-{i}"))).collect();
    for (i, vm) in vms.iter().enumerate() {
        first
            .insert_vm(&record(vm.as_str(), "a", i as i64))
            .await
            .unwrap();
    }
    let race = |store: Arc<SqliteStore>, vms: Vec<VmId>| {
        tokio::task::spawn_blocking(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let mut wins = 0;
            for vm in &vms {
                match rt.block_on(store.transition(
                    vm,
                    VmState::Requested,
                    &to(VmState::Preparing, 100, "go"),
                )) {
                    Ok(_) => wins += 1,
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("{e:?}"),
                }
            }
            wins
        })
    };
    let (a, b) = (race(first.clone(), vms.clone()), race(second, vms.clone()));
    let wins = a.await.unwrap() + b.await.unwrap();
    assert_eq!(wins, vms.len());
    for vm in &vms {
        assert_eq!(first.events(vm).await.unwrap().len(), 2, "{vm}");
    }
}

// Process, hold, events

#[tokio::test]
async fn the_process_is_recorded_and_cleared() {
    let (_dir, _path, store) = store();
    let vm = id("vm-1");
    store.insert_vm(&record("vm-1", "a", 1)).await.unwrap();
    let process = ProcessRef {
        pid: 4242,
        start_ticks: 987_654_321,
    };
    store.set_process(&vm, Some(process)).await.unwrap();
    assert_eq!(store.vm(&vm).await.unwrap().unwrap().process, Some(process));
    store.set_process(&vm, None).await.unwrap();
    assert_eq!(store.vm(&vm).await.unwrap().unwrap().process, None);
    let err = store
        .set_process(&id("vm-x"), Some(process))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn holding_and_releasing_are_logged() {
    let (_dir, _path, store) = store();
    let vm = id("vm-1");
    store.insert_vm(&record("vm-1", "a", 1)).await.unwrap();
    store
        .transition(
            &vm,
            VmState::Requested,
            &to(VmState::Preparing, 2, "preparing"),
        )
        .await
        .unwrap();
    let rec = store.set_held(&vm, true, t(5)).await.unwrap();
    assert!(rec.vm.held);
    assert_eq!(rec.vm.updated_at, t(5));
    let rec = store.set_held(&vm, false, t(6)).await.unwrap();
    assert!(!rec.vm.held);
    assert_eq!(store.vm(&vm).await.unwrap(), Some(rec));
    let events = store.events(&vm).await.unwrap();
    let tail: Vec<_> = events[2..]
        .iter()
        .map(|e| (e.at, e.state, e.message.as_str()))
        .collect();
    assert_eq!(
        tail,
        [
            (t(5), VmState::Preparing, "held"),
            (t(6), VmState::Preparing, "released")
        ]
    );
    let err = store.set_held(&id("vm-x"), true, t(7)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn an_added_event_carries_the_current_state() {
    let (_dir, _path, store) = store();
    let vm = id("vm-1");
    store.insert_vm(&record("vm-1", "a", 1)).await.unwrap();
    store
        .add_event(&vm, t(3), "console: login prompt")
        .await
        .unwrap();
    let last = store.events(&vm).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.at, last.state, last.message.as_str()),
        (t(3), VmState::Requested, "console: login prompt")
    );
    let err = store.add_event(&id("vm-x"), t(3), "x").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

// Listing

#[tokio::test]
async fn vms_are_listed_by_tenant_and_state_in_creation_order() {
    let (_dir, _path, store) = store();
    for (vm, owner, created) in [
        ("vm-c", "a", 30),
        ("vm-a", "b", 10),
        ("vm-b2", "a", 20),
        ("vm-b1", "a", 20),
    ] {
        store.insert_vm(&record(vm, owner, created)).await.unwrap();
    }
    store
        .transition(
            &id("vm-c"),
            VmState::Requested,
            &to(VmState::Preparing, 40, ""),
        )
        .await
        .unwrap();
    let list = |tenant: Option<&str>, states: &[VmState]| {
        let filter = VmFilter {
            tenant: tenant.map(self::tenant),
            states: states.to_vec(),
        };
        let store = &store;
        async move {
            let vms = store.list_vms(&filter).await.unwrap();
            vms.iter().map(|r| r.id().to_string()).collect::<Vec<_>>()
        }
    };
    assert_eq!(list(None, &[]).await, ["vm-a", "vm-b1", "vm-b2", "vm-c"]);
    assert_eq!(list(Some("a"), &[]).await, ["vm-b1", "vm-b2", "vm-c"]);
    assert_eq!(list(None, &[VmState::Preparing]).await, ["vm-c"]);
    assert_eq!(
        list(Some("a"), &[VmState::Requested, VmState::Ready]).await,
        ["vm-b1", "vm-b2"]
    );
    assert_eq!(
        list(Some("b"), &[VmState::Preparing, VmState::Requested]).await,
        ["vm-a"]
    );
    assert!(list(Some("nobody"), &[]).await.is_empty());
    assert!(list(None, &[VmState::Destroyed]).await.is_empty());
}

// Tokens

fn token(token_id: &str, hash: &str) -> TokenRecord {
    TokenRecord {
        id: token_id.into(),
        secret_sha256: hash.into(),
        tenant: tenant("team-a"),
        admin: true,
        created_at: t(77),
        expires_at: None,
        last_used_at: None,
    }
}

#[tokio::test]
async fn tokens_are_listed_oldest_first_used_and_revoked() {
    let (_dir, path, store) = store();
    let old = token("hth_old", &"01".repeat(32));
    let new = TokenRecord {
        created_at: t(99),
        expires_at: Some(t(1_000)),
        ..token("hth_new", &"02".repeat(32))
    };
    store.insert_token(&new).await.unwrap();
    store.insert_token(&old).await.unwrap();
    assert!(new.is_expired(t(1_000)) && !new.is_expired(t(999)));
    assert!(!old.is_expired(t(i64::MAX)));

    store.token_used("hth_old", t(500)).await.unwrap();
    let listed = store.list_tokens().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["hth_old", "hth_new"]);
    assert_eq!(listed[0].last_used_at, Some(t(500)));
    assert_eq!(listed[1].expires_at, Some(t(1_000)));

    assert_eq!(
        store.revoke_token("hth_old").await.unwrap().map(|r| r.id),
        Some("hth_old".to_owned())
    );
    assert_eq!(store.revoke_token("hth_old").await.unwrap(), None);
    assert_eq!(store.token_by_hash(&old.secret_sha256).await.unwrap(), None);
    // Using a revoked token does not bring it back.
    store.token_used("hth_old", t(600)).await.unwrap();
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.list_tokens().await.unwrap(), [new]);
}

#[tokio::test]
async fn tokens_are_found_by_hash_and_duplicates_refused() {
    let (_dir, _path, store) = store();
    let tok = token("hth_1", &"ab".repeat(32));
    store.insert_token(&tok).await.unwrap();
    assert_eq!(
        store.token_by_hash(&tok.secret_sha256).await.unwrap(),
        Some(tok.clone())
    );
    assert_eq!(store.token_by_hash(&"cd".repeat(32)).await.unwrap(), None);

    let same_id = store
        .insert_token(&token("hth_1", &"ef".repeat(32)))
        .await
        .unwrap_err();
    assert!(
        matches!(&same_id, StoreError::Duplicate { what } if what == "token hth_1"),
        "{same_id:?}"
    );
    let same_hash = store
        .insert_token(&token("hth_2", &tok.secret_sha256))
        .await
        .unwrap_err();
    assert!(
        matches!(&same_hash, StoreError::Duplicate { what } if what.contains("same secret")),
        "{same_hash:?}"
    );
}

// Jobs

fn destroy(vm: &str, due: i64) -> NewJob {
    NewJob {
        kind: JobKind::Destroy,
        vm: id(vm),
        due: t(due),
    }
}

async fn store_with_vms(names: &[&str]) -> (TempDir, PathBuf, SqliteStore) {
    let (dir, path, store) = store();
    for name in names {
        store.insert_vm(&record(name, "a", 1)).await.unwrap();
    }
    (dir, path, store)
}

#[tokio::test]
async fn a_sooner_enqueue_moves_the_pending_job_earlier_and_a_later_one_does_not() {
    let (_dir, _path, store) = store_with_vms(&["vm-1"]).await;
    store.enqueue_job(&destroy("vm-1", 900)).await.unwrap();
    store.enqueue_job(&destroy("vm-1", 100)).await.unwrap();
    store.enqueue_job(&destroy("vm-1", 500)).await.unwrap();
    let pending = store.jobs_for(&id("vm-1")).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].due, t(100));
}

#[tokio::test]
async fn enqueueing_is_idempotent_while_a_job_is_pending() {
    let (_dir, _path, store) = store_with_vms(&["vm-1"]).await;
    store.enqueue_job(&destroy("vm-1", 100)).await.unwrap();
    store.enqueue_job(&destroy("vm-1", 200)).await.unwrap();
    let pending = store.jobs_for(&id("vm-1")).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (
            pending[0].due,
            pending[0].attempts,
            pending[0].lease_owner.clone()
        ),
        (t(100), 0, None)
    );
    assert_eq!(store.count_pending_jobs().await.unwrap(), 1);

    store.finish_job(pending[0].id).await.unwrap();
    store.enqueue_job(&destroy("vm-1", 300)).await.unwrap();
    let again = store.jobs_for(&id("vm-1")).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].id, pending[0].id);

    let err = store
        .enqueue_job(&destroy("vm-unknown", 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound(v) if v == &id("vm-unknown")),
        "{err:?}"
    );
    assert!(store.jobs_for(&id("vm-unknown")).await.unwrap().is_empty());
}

#[tokio::test]
async fn only_due_jobs_are_leased_earliest_first() {
    let (_dir, _path, store) = store_with_vms(&["vm-1", "vm-2", "vm-3"]).await;
    for (vm, due) in [("vm-3", 300), ("vm-2", 200), ("vm-1", 100)] {
        store.enqueue_job(&destroy(vm, due)).await.unwrap();
    }
    let leased = store
        .lease_due_jobs(t(200), t(1_000), "worker-a", 10)
        .await
        .unwrap();
    let got: Vec<_> = leased
        .iter()
        .map(|j| (j.vm.to_string(), j.attempts))
        .collect();
    assert_eq!(got, [("vm-1".to_owned(), 1), ("vm-2".to_owned(), 1)]);
    assert!(leased
        .iter()
        .all(|j| j.lease_owner.as_deref() == Some("worker-a") && j.lease_until == Some(t(1_000))));

    let limited = store
        .lease_due_jobs(t(300), t(1_000), "worker-b", 1)
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].vm, id("vm-3"));
    assert!(store
        .lease_due_jobs(t(300), t(1_000), "worker-b", 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_leased_job_is_leased_again_only_after_its_lease_expires() {
    let (_dir, _path, store) = store_with_vms(&["vm-1"]).await;
    store.enqueue_job(&destroy("vm-1", 100)).await.unwrap();
    let first = store
        .lease_due_jobs(t(100), t(1_000), "worker-a", 10)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert!(store
        .lease_due_jobs(t(500), t(2_000), "worker-b", 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .lease_due_jobs(t(1_000), t(2_000), "worker-b", 10)
        .await
        .unwrap()
        .is_empty());

    let second = store
        .lease_due_jobs(t(1_001), t(2_000), "worker-b", 10)
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, first[0].id);
    assert_eq!(
        (second[0].attempts, second[0].lease_owner.as_deref()),
        (2, Some("worker-b"))
    );
}

#[tokio::test]
async fn a_retried_job_is_released_until_its_new_due_time() {
    let (_dir, _path, store) = store_with_vms(&["vm-1"]).await;
    store.enqueue_job(&destroy("vm-1", 100)).await.unwrap();
    let job = store
        .lease_due_jobs(t(100), t(1_000), "worker-a", 10)
        .await
        .unwrap()
        .remove(0);
    store
        .retry_job(job.id, "the disk was busy", t(5_000))
        .await
        .unwrap();

    let pending = store.jobs_for(&id("vm-1")).await.unwrap().remove(0);
    assert_eq!(pending.due, t(5_000));
    assert_eq!(pending.last_error.as_deref(), Some("the disk was busy"));
    assert_eq!((pending.lease_owner, pending.lease_until), (None, None));

    assert!(store
        .lease_due_jobs(t(4_999), t(9_000), "worker-a", 10)
        .await
        .unwrap()
        .is_empty());
    let again = store
        .lease_due_jobs(t(5_000), t(9_000), "worker-a", 10)
        .await
        .unwrap();
    assert_eq!((again[0].id, again[0].attempts), (job.id, 2));
    assert_eq!(again[0].last_error.as_deref(), Some("the disk was busy"));
}

#[tokio::test]
async fn a_finished_job_is_no_longer_pending() {
    let (_dir, _path, store) = store_with_vms(&["vm-1", "vm-2"]).await;
    store.enqueue_job(&destroy("vm-1", 100)).await.unwrap();
    store.enqueue_job(&destroy("vm-2", 100)).await.unwrap();
    assert_eq!(store.count_pending_jobs().await.unwrap(), 2);
    let job = store.jobs_for(&id("vm-1")).await.unwrap().remove(0);
    store.finish_job(job.id).await.unwrap();
    store.finish_job(job.id).await.unwrap();
    assert_eq!(store.count_pending_jobs().await.unwrap(), 1);
    assert!(store.jobs_for(&id("vm-1")).await.unwrap().is_empty());
    let leased = store
        .lease_due_jobs(t(10_000), t(20_000), "worker-a", 10)
        .await
        .unwrap();
    assert_eq!(
        leased.iter().map(|j| j.vm.clone()).collect::<Vec<_>>(),
        [id("vm-2")]
    );
}

// Archives

fn archive(vm: &str, created_ms: i64, bytes: u64) -> ArchiveRecord {
    ArchiveRecord {
        vm: id(vm),
        tenant: tenant("a"),
        path: PathBuf::from(format!("/var/lib/hearth/archive/{vm} (logs)")),
        bytes,
        created_at: t(created_ms),
    }
}

#[tokio::test]
async fn archives_are_listed_oldest_first_replaced_and_deleted() {
    let (_dir, _path, store) = store();
    for a in [
        archive("vm-c", 30, 3),
        archive("vm-b", 10, 2),
        archive("vm-a", 10, 1),
    ] {
        store.insert_archive(&a).await.unwrap();
    }
    let order = |list: Vec<ArchiveRecord>| {
        list.into_iter()
            .map(|a| a.vm.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        order(store.archives().await.unwrap()),
        ["vm-a", "vm-b", "vm-c"]
    );

    let newer = archive("vm-a", 40, u64::MAX >> 1);
    store.insert_archive(&newer).await.unwrap();
    assert_eq!(store.archive(&id("vm-a")).await.unwrap(), Some(newer));
    assert_eq!(
        order(store.archives().await.unwrap()),
        ["vm-b", "vm-c", "vm-a"]
    );

    store.delete_archive(&id("vm-b")).await.unwrap();
    store.delete_archive(&id("vm-b")).await.unwrap();
    assert_eq!(store.archive(&id("vm-b")).await.unwrap(), None);
    assert_eq!(order(store.archives().await.unwrap()), ["vm-c", "vm-a"]);
}

fn viewer_link(id: &str, vm: &str, hash: &str, expires_ms: i64) -> hearth_store::ViewerLinkRecord {
    hearth_store::ViewerLinkRecord {
        id: id.into(),
        secret_sha256: hash.into(),
        vm: self::id(vm),
        tenant: tenant("a"),
        created_at: t(10),
        expires_at: t(expires_ms),
        revoked_at: None,
    }
}

#[tokio::test]
async fn viewer_links_are_found_by_hash_listed_per_vm_and_revoked_once() {
    let (_dir, _path, store) = store();
    store.insert_vm(&record("vm-1", "a", 1)).await.unwrap();
    store.insert_vm(&record("vm-2", "a", 1)).await.unwrap();
    let link = viewer_link("hvl_00000001", "vm-1", "aa", 5_000);
    store.insert_viewer_link(&link).await.unwrap();
    store
        .insert_viewer_link(&viewer_link("hvl_00000002", "vm-2", "bb", 5_000))
        .await
        .unwrap();
    let dup = store
        .insert_viewer_link(&viewer_link("hvl_00000003", "vm-1", "aa", 5_000))
        .await
        .unwrap_err();
    assert!(dup.to_string().contains("same secret"), "{dup}");

    assert_eq!(
        store.viewer_link_by_hash("aa").await.unwrap(),
        Some(link.clone())
    );
    assert_eq!(store.viewer_link_by_hash("zz").await.unwrap(), None);
    let of_vm1 = store.viewer_links(&id("vm-1")).await.unwrap();
    assert_eq!(of_vm1, vec![link.clone()]);
    assert!(link.is_valid(t(4_999)) && !link.is_valid(t(5_000)));

    // Revoking through another VM finds nothing; through its own, once.
    let other = store
        .revoke_viewer_link(&id("vm-2"), "hvl_00000001", t(20))
        .await;
    assert_eq!(other.unwrap(), None);
    let revoked = store
        .revoke_viewer_link(&id("vm-1"), "hvl_00000001", t(20))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(t(20)));
    assert!(!revoked.is_valid(t(30)));
    let again = store
        .revoke_viewer_link(&id("vm-1"), "hvl_00000001", t(40))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.revoked_at, Some(t(20)));
}

#[tokio::test]
async fn a_viewer_link_for_no_vm_is_refused() {
    let (_dir, _path, store) = store();
    let link = viewer_link("hvl_00000009", "vm-9", "cc", 5_000);
    assert!(store.insert_viewer_link(&link).await.is_err());
}
