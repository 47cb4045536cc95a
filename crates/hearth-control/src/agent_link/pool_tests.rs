//! A pooled VM's link against a scripted agent on a real Unix socket and
//! a real (in-memory) SQLite store: no configuration while the VM is the
//! pool tenant's, then exactly the tenant's once it is handed out.

use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::Duration;

use hearth_agent_proto::{read_frame, write_frame, GuestMessage, HostMessage};
use hearth_store::{SqliteStore, Store, VmRecord};
use hearth_types::api::CreateVm;
use hearth_types::guest::GuestConfig;
use hearth_types::{TenantId, Timestamp, VmId};

use super::*;

#[tokio::test]
async fn a_pooled_vm_gets_no_configuration_until_it_is_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let vm: VmId = "vm-0000000000p1".parse().unwrap();
    let now = Timestamp::now();
    let rec = VmRecord::requested(vm.clone(), TenantId::pool(), &CreateVm::default(), now, now);
    store.insert_vm(&rec).await.unwrap();
    let (tx, _notices) = mpsc::unbounded_channel();
    let link = spawn(LinkSpec {
        vm: vm.clone(),
        endpoint: hearth_vmm::AgentEndpoint::Unix(socket),
        store: store.clone(),
        notices: tx,
    });
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let agent = tokio::task::spawn_blocking(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let hello = GuestMessage::Hello {
            protocol: hearth_agent_proto::PROTOCOL,
            agent_version: "test".into(),
            boot_id: "boot".into(),
            instance: "i".into(),
            uptime_ms: 1_000,
        };
        write_frame(&mut s, &hello).unwrap();
        let mut seen = Vec::new();
        // Welcome and time; then nothing but time until the hand-out.
        loop {
            let msg: HostMessage = read_frame(&mut s).unwrap().expect("the host hung up");
            if let HostMessage::Config { config } = msg {
                return (seen, config);
            }
            seen.push(msg);
            if seen.len() == 2 {
                done_tx.send(()).unwrap();
            }
        }
    });
    tokio::task::spawn_blocking(move || done_rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .await
        .unwrap();
    // Let a configuration arrive if the link were to send one now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let config = GuestConfig {
        hostname: Some("handed-out".into()),
        ..Default::default()
    };
    store.set_guest_config(&vm, &config).await.unwrap();
    // Still the pool's: configure sends nothing yet.
    link.configure().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    hand_to(&store, &vm, "team-a").await;
    link.configure().unwrap();
    let (seen, got) = tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("the configuration came")
        .unwrap();
    assert!(
        seen.iter()
            .all(|m| matches!(m, HostMessage::Welcome { .. } | HostMessage::Time { .. })),
        "{seen:?}"
    );
    assert_eq!(got, config);
}

/// Gives `vm` to `tenant` in the store, as a hand-out does.
async fn hand_to(store: &SqliteStore, vm: &VmId, tenant: &str) {
    use hearth_store::{PoolStore, PoolVmRecord};
    let now = Timestamp::now();
    store
        .add_pool_vm(&PoolVmRecord {
            vm: vm.clone(),
            image: "minimal".into(),
            assets: "a".into(),
            created_at: now,
            warm: false,
            warm_since: None,
        })
        .await
        .unwrap();
    // The take wants a booting, warm VM.
    for (from, to) in [
        (
            hearth_types::VmState::Requested,
            hearth_types::VmState::Preparing,
        ),
        (
            hearth_types::VmState::Preparing,
            hearth_types::VmState::Booting,
        ),
    ] {
        let change = hearth_store::StateChange::to(to, now, to.as_str());
        store.transition(vm, from, &change).await.unwrap();
    }
    let take = hearth_store::PoolTake {
        image: "minimal".into(),
        vcpus: hearth_types::api::DEFAULT_VCPUS,
        memory_mib: hearth_types::api::DEFAULT_MEMORY_MIB,
        assets: "a".into(),
        born_after: Timestamp::from_millis(0),
        tenant: tenant.parse().unwrap(),
        config: store.guest_config(vm).await.unwrap(),
        at: now,
        ready_deadline: now,
        message: format!("handed out to {tenant}"),
    };
    let taken = store.take_pool_vm(&take).await.unwrap();
    assert_eq!(
        taken.map(|r| r.vm.tenant.to_string()).as_deref(),
        Some(tenant)
    );
}
