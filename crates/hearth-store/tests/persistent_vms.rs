//! Persistent VMs in the SQLite store (migration 0009), against a real
//! database file per test: the fields round-trip, a planned restart and a
//! new boot are parts of the compare-and-set that makes them, a cancelled
//! restart is logged once, and `rm`'s job is a kind of its own.

use hearth_store::{JobKind, NewBoot, NewJob, SqliteStore, StateChange, Store, VmRecord};
use hearth_types::api::CreateVm;
use hearth_types::{Failure, FailureCode, RestartPolicy, Timestamp, VmId, VmState};
use tempfile::TempDir;

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn store() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hearth.db")).unwrap();
    (dir, store)
}

fn kept(vm: &str, restart: RestartPolicy) -> VmRecord {
    let req = CreateVm {
        persistent: true,
        restart: Some(restart),
        idle_stop_secs: Some(600),
        ..CreateVm::default()
    };
    VmRecord::requested(
        vm.parse().unwrap(),
        "default".parse().unwrap(),
        &req,
        t(1_000),
        t(31_000),
    )
}

/// Moves `id` through `states`, one compare-and-set each.
async fn walk(store: &SqliteStore, id: &VmId, states: &[VmState]) {
    let mut from = store.vm(id).await.unwrap().unwrap().vm.state;
    for (i, to) in states.iter().enumerate() {
        let change = StateChange::to(*to, t(2_000 + i as i64), to.as_str());
        store.transition(id, from, &change).await.unwrap();
        from = *to;
    }
}

#[tokio::test]
async fn a_kept_vm_reads_back_with_its_disk_policy_and_deadline() {
    let (_dir, store) = store();
    let rec = kept("vm-000000000001", RestartPolicy::OnFailure);
    store.insert_vm(&rec).await.unwrap();
    let back = store.vm(rec.id()).await.unwrap().unwrap();
    assert_eq!(back, rec);
    assert!(back.vm.persistent);
    assert_eq!(back.vm.disk_mib, Some(1024));
    assert_eq!(back.vm.restart, RestartPolicy::OnFailure);
    assert_eq!(back.vm.idle_stop_secs, Some(600));
    assert_eq!((back.readiness_secs, back.readiness_secs()), (Some(30), 30));
    let plain = VmRecord::requested(
        "vm-000000000002".parse().unwrap(),
        "default".parse().unwrap(),
        &CreateVm::default(),
        t(1_000),
        t(121_000),
    );
    store.insert_vm(&plain).await.unwrap();
    let plain = store.vm(plain.id()).await.unwrap().unwrap().vm;
    assert!(!plain.persistent && plain.disk_mib.is_none());
    assert_eq!(plain.restart, RestartPolicy::Never);
}

#[tokio::test]
async fn a_planned_restart_and_the_new_boot_are_stored_with_their_moves() {
    let (_dir, store) = store();
    let rec = kept("vm-000000000003", RestartPolicy::OnFailure);
    let id = rec.id().clone();
    store.insert_vm(&rec).await.unwrap();
    walk(&store, &id, &[VmState::Preparing, VmState::Booting]).await;
    let mut ready = StateChange::to(VmState::Ready, t(3_000), "ready");
    ready.ready_at = Some(t(3_000));
    store
        .transition(&id, VmState::Booting, &ready)
        .await
        .unwrap();

    let mut failed = StateChange::to(VmState::Failed, t(4_000), "failed");
    failed.failure = Some(Failure {
        code: FailureCode::HypervisorExited,
        message: "killed".into(),
    });
    failed.restart = Some((t(5_000), 1));
    let vm = store
        .transition(&id, VmState::Ready, &failed)
        .await
        .unwrap()
        .vm;
    assert_eq!((vm.restart_at, vm.restarts), (Some(t(5_000)), 1));
    assert!(vm.failure.is_some() && vm.cleanup_after.is_none());

    let mut start = StateChange::to(VmState::Preparing, t(5_100), "restarting");
    start.new_boot = Some(NewBoot {
        ready_deadline: t(35_100),
        restarts: 1,
    });
    let vm = store
        .transition(&id, VmState::Failed, &start)
        .await
        .unwrap()
        .vm;
    assert_eq!(vm.state, VmState::Preparing);
    assert_eq!((vm.failure, vm.ready_at, vm.restart_at), (None, None, None));
    assert_eq!((vm.ready_deadline, vm.restarts), (t(35_100), 1));
    let said: Vec<String> = store
        .events(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(said[said.len() - 2..], ["failed", "restarting"]);
}

#[tokio::test]
async fn a_cancelled_restart_is_logged_once_and_only_when_there_was_one() {
    let (_dir, store) = store();
    let rec = kept("vm-000000000004", RestartPolicy::Always);
    let id = rec.id().clone();
    store.insert_vm(&rec).await.unwrap();
    walk(&store, &id, &[VmState::Preparing, VmState::Booting]).await;
    let mut stopped = StateChange::to(VmState::Stopped, t(3_000), "the guest powered off");
    stopped.restart = Some((t(4_000), 1));
    store
        .transition(&id, VmState::Booting, &stopped)
        .await
        .unwrap();
    let before = store.events(&id).await.unwrap().len();
    for _ in 0..2 {
        let vm = store
            .cancel_restart(&id, t(3_500), "restart cancelled")
            .await
            .unwrap()
            .vm;
        assert_eq!((vm.state, vm.restart_at), (VmState::Stopped, None));
    }
    assert_eq!(store.events(&id).await.unwrap().len(), before + 1);
}

#[tokio::test]
async fn an_rm_is_a_job_of_its_own_kind_beside_the_grace_cleanup() {
    let (_dir, store) = store();
    let rec = kept("vm-000000000005", RestartPolicy::Never);
    store.insert_vm(&rec).await.unwrap();
    for kind in [JobKind::Destroy, JobKind::Remove] {
        let job = NewJob {
            kind,
            vm: rec.id().clone(),
            due: t(1_000),
        };
        store.enqueue_job(&job).await.unwrap();
    }
    let mut kinds: Vec<&str> = store
        .lease_due_jobs(t(2_000), t(60_000), "test", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.kind.as_str())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["destroy", "remove"]);
    assert_eq!(JobKind::parse("remove"), Some(JobKind::Remove));
    assert_eq!(JobKind::parse("reap"), None);
}
