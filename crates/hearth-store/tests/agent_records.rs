//! The agent tables against a real SQLite file: idempotent records, acks
//! per instance, caps, and everything readable after the VM is destroyed.

use hearth_store::{
    AgentEntry, AgentHello, NewAgentRecord, SqliteStore, StateChange, Store, StoreError, VmRecord,
    MAX_LINES_PER_SERVICE,
};
use hearth_types::api::CreateVm;
use hearth_types::guest::{GuestConfig, Stream};
use hearth_types::{Timestamp, VmId, VmState};

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

async fn store_with_vm() -> (tempfile::TempDir, SqliteStore, VmId) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hearth.db")).unwrap();
    let id: VmId = "vm-0123456789ab".parse().unwrap();
    let rec = VmRecord::requested(
        id.clone(),
        "acme".parse().unwrap(),
        &CreateVm::default(),
        t(0),
        t(1000),
    );
    store.insert_vm(&rec).await.unwrap();
    (dir, store, id)
}

fn line(seq: u64, service: &str, text: &str) -> NewAgentRecord {
    NewAgentRecord {
        seq,
        at: t(seq as i64 * 10),
        entry: AgentEntry::Log {
            service: service.into(),
            stream: Stream::Stderr,
            line: text.into(),
        },
    }
}

fn exited(seq: u64) -> NewAgentRecord {
    NewAgentRecord {
        seq,
        at: t(5),
        entry: AgentEntry::Record {
            kind: "service_exited".into(),
            service: Some("web".into()),
            body: "{}".into(),
        },
    }
}

fn hello(instance: &str) -> AgentHello {
    AgentHello {
        instance: instance.into(),
        agent_version: "0.1.0".into(),
        boot_id: "b".into(),
        connected_at: t(100),
    }
}

#[tokio::test]
async fn a_seq_stored_twice_is_kept_once_and_acked_per_instance() {
    let (_dir, store, id) = store_with_vm().await;
    assert_eq!(store.agent_hello(&id, &hello("i1")).await.unwrap(), 0);
    let acked = store
        .store_agent_records(&id, "i1", &[line(1, "web", "a"), exited(2)])
        .await
        .unwrap();
    assert_eq!(acked, 2);
    // A replay after a reconnect: 2 again, then 3.
    let acked = store
        .store_agent_records(&id, "i1", &[exited(2), line(3, "web", "b")])
        .await
        .unwrap();
    assert_eq!(acked, 3);
    let lines = store.service_lines(&id, "web", 100).await.unwrap();
    let texts: Vec<_> = lines.iter().map(|l| l.line.as_str()).collect();
    assert_eq!(texts, ["a", "b"]);
    assert_eq!(lines[0].stream, Stream::Stderr);
    assert_eq!(store.agent_records(&id).await.unwrap().len(), 1);
    // The same seq from another agent process is another record.
    assert_eq!(store.agent_hello(&id, &hello("i2")).await.unwrap(), 0);
    store
        .store_agent_records(&id, "i2", &[line(1, "web", "c")])
        .await
        .unwrap();
    assert_eq!(store.service_lines(&id, "web", 100).await.unwrap().len(), 3);
    assert_eq!(store.agent_hello(&id, &hello("i1")).await.unwrap(), 3);
}

#[tokio::test]
async fn lines_are_capped_per_service_keeping_the_newest() {
    let (_dir, store, id) = store_with_vm().await;
    let total = MAX_LINES_PER_SERVICE + 5;
    let batch: Vec<_> = (1..=total)
        .map(|s| line(s, "chatty", &s.to_string()))
        .collect();
    store.store_agent_records(&id, "i", &batch).await.unwrap();
    store
        .store_agent_records(&id, "i", &[line(total + 1, "quiet", "q")])
        .await
        .unwrap();
    let kept = store
        .service_lines(&id, "chatty", usize::MAX)
        .await
        .unwrap();
    assert_eq!(kept.len() as u64, MAX_LINES_PER_SERVICE);
    assert_eq!(kept.last().unwrap().line, total.to_string());
    assert_eq!(kept[0].line, "6");
    assert_eq!(
        store.service_lines(&id, "quiet", 10).await.unwrap().len(),
        1
    );
    let tail = store.service_lines(&id, "chatty", 2).await.unwrap();
    let texts: Vec<_> = tail.iter().map(|l| l.line.clone()).collect();
    assert_eq!(texts, [(total - 1).to_string(), total.to_string()]);
}

#[tokio::test]
async fn hello_heartbeat_and_config_survive_the_vm_being_destroyed() {
    let (_dir, store, id) = store_with_vm().await;
    let config = GuestConfig {
        hostname: Some("box".into()),
        ..Default::default()
    };
    assert_eq!(
        store.guest_config(&id).await.unwrap(),
        GuestConfig::default()
    );
    store.set_guest_config(&id, &config).await.unwrap();
    store.agent_hello(&id, &hello("i1")).await.unwrap();
    store.agent_heartbeat(&id, t(900)).await.unwrap();
    store.agent_disconnected(&id, t(950)).await.unwrap();
    store
        .transition(
            &id,
            VmState::Requested,
            &StateChange::to(VmState::Failed, t(1000), "x"),
        )
        .await
        .unwrap();
    let status = store.agent_status(&id).await.unwrap().unwrap();
    assert_eq!(status.hello, Some(hello("i1")));
    assert_eq!(status.last_heartbeat, Some(t(900)));
    assert_eq!(status.disconnected_at, Some(t(950)));
    assert_eq!(store.guest_config(&id).await.unwrap(), config);
    // A new hello clears the disconnection.
    store.agent_hello(&id, &hello("i2")).await.unwrap();
    let status = store.agent_status(&id).await.unwrap().unwrap();
    assert_eq!(status.disconnected_at, None);
}

#[tokio::test]
async fn the_latest_record_of_a_kind_is_found() {
    let (_dir, store, id) = store_with_vm().await;
    let report = |seq: u64, body: &str| NewAgentRecord {
        seq,
        at: t(seq as i64),
        entry: AgentEntry::Record {
            kind: "boot_report".into(),
            service: None,
            body: body.into(),
        },
    };
    assert!(store
        .latest_agent_record(&id, "boot_report")
        .await
        .unwrap()
        .is_none());
    store
        .store_agent_records(
            &id,
            "i",
            &[report(1, "first"), exited(2), report(3, "second")],
        )
        .await
        .unwrap();
    let latest = store
        .latest_agent_record(&id, "boot_report")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.body, "second");
}

#[tokio::test]
async fn records_for_an_unknown_vm_are_refused() {
    let (_dir, store, _) = store_with_vm().await;
    let other: VmId = "vm-ffffffffffff".parse().unwrap();
    let err = store
        .store_agent_records(&other, "i", &[line(1, "web", "a")])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    let err = store.agent_hello(&other, &hello("i")).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn a_replayed_seq_is_skipped_whatever_its_kind() {
    let (_dir, store, id) = store_with_vm().await;
    store
        .store_agent_records(&id, "i", &[exited(1)])
        .await
        .unwrap();
    store
        .store_agent_records(&id, "i", &[line(1, "web", "dup")])
        .await
        .unwrap();
    assert!(store
        .service_lines(&id, "web", 10)
        .await
        .unwrap()
        .is_empty());
}
