//! Warm pools through the `PoolStore` trait, on a real file: only a warm,
//! booting, fitting VM of the pool tenant is handed out; the hand-out gives
//! it its tenant, configuration and event in one go; racing takes never get
//! the same VM; a VM removed from its pool cannot be taken any more.

use std::sync::Arc;

use hearth_store::{
    AgentHello, PoolRecord, PoolStore, PoolTake, PoolVmRecord, SqliteStore, StateChange, Store,
    VmRecord,
};
use hearth_types::api::CreateVm;
use hearth_types::guest::GuestConfig;
use hearth_types::pool::PoolSettings;
use hearth_types::{TenantId, Timestamp, VmId, VmState};
use tempfile::TempDir;

fn store() -> (TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hearth.db")).unwrap();
    (dir, Arc::new(store))
}

fn vm(n: u32) -> VmId {
    format!("vm-{n:012}").parse().unwrap()
}

const T0: i64 = 1_000_000;

/// A pooled VM `n`, booting, warm when `warm`.
async fn pooled(store: &SqliteStore, n: u32, born: i64, warm: bool) {
    let req = CreateVm {
        vcpus: Some(1),
        memory_mib: Some(256),
        ..CreateVm::default()
    };
    let at = Timestamp::from_millis(born);
    let record = VmRecord::requested(
        vm(n),
        TenantId::pool(),
        &req,
        at,
        at.plus(std::time::Duration::from_secs(9999)),
    );
    store.insert_vm(&record).await.unwrap();
    for (from, to) in [
        (VmState::Requested, VmState::Preparing),
        (VmState::Preparing, VmState::Booting),
    ] {
        let change = StateChange::to(to, at, to.as_str());
        store.transition(&vm(n), from, &change).await.unwrap();
    }
    let row = PoolVmRecord {
        vm: vm(n),
        image: "minimal".into(),
        assets: "a1".into(),
        created_at: at,
        warm: false,
        warm_since: None,
    };
    store.add_pool_vm(&row).await.unwrap();
    if warm {
        let hello = AgentHello {
            instance: format!("i{n}"),
            agent_version: "t".into(),
            boot_id: "b".into(),
            connected_at: at,
        };
        store.agent_hello(&vm(n), &hello).await.unwrap();
    }
}

fn take(tenant: &str) -> PoolTake {
    PoolTake {
        image: "minimal".into(),
        vcpus: 1,
        memory_mib: 256,
        assets: "a1".into(),
        born_after: Timestamp::from_millis(T0),
        tenant: tenant.parse().unwrap(),
        config: GuestConfig {
            hostname: Some("mine".into()),
            ..GuestConfig::default()
        },
        at: Timestamp::from_millis(T0 + 5_000),
        ready_deadline: Timestamp::from_millis(T0 + 65_000),
        message: format!("handed out to tenant {tenant}"),
    }
}

#[tokio::test]
async fn pools_are_put_changed_listed_and_deleted() {
    let (_dir, store) = store();
    let mut pool = PoolRecord {
        image: "minimal".into(),
        settings: PoolSettings {
            size: 2,
            max: 3,
            ttl_secs: 60,
            refill_per_min: 6,
            template: None,
        },
        updated_at: Timestamp::from_millis(T0),
    };
    store.put_pool(&pool).await.unwrap();
    pool.settings.size = 3;
    pool.settings.template = Some("browser-ready".parse().unwrap());
    store.put_pool(&pool).await.unwrap();
    assert_eq!(store.pools().await.unwrap(), vec![pool.clone()]);
    assert_eq!(store.delete_pool("minimal").await.unwrap(), Some(pool));
    assert_eq!(store.delete_pool("minimal").await.unwrap(), None);
    assert!(store.pools().await.unwrap().is_empty());
}

#[tokio::test]
async fn only_a_warm_fitting_vm_is_handed_out_with_its_tenant_config_and_event() {
    let (_dir, store) = store();
    pooled(&store, 1, T0 - 1, true).await; // waiting since before the time to live
    pooled(&store, 2, T0 + 10, false).await; // not warm
    pooled(&store, 3, T0 + 20, true).await;
    let mut other = take("team-a");
    other.memory_mib = 512;
    assert_eq!(store.take_pool_vm(&other).await.unwrap(), None);
    let mut stale = take("team-a");
    stale.assets = "a2".into();
    assert_eq!(store.take_pool_vm(&stale).await.unwrap(), None);

    let got = store.take_pool_vm(&take("team-a")).await.unwrap().unwrap();
    assert_eq!(got.vm.id, vm(3));
    assert_eq!(got.vm.tenant.as_str(), "team-a");
    assert_eq!(got.vm.created_at, Timestamp::from_millis(T0 + 5_000));
    assert_eq!(got.vm.ready_deadline, Timestamp::from_millis(T0 + 65_000));
    assert_eq!(
        store
            .guest_config(&vm(3))
            .await
            .unwrap()
            .hostname
            .as_deref(),
        Some("mine")
    );
    let events = store.events(&vm(3)).await.unwrap();
    assert_eq!(
        events.last().unwrap().message,
        "handed out to tenant team-a"
    );
    let left: Vec<VmId> = store
        .pool_vms()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.vm)
        .collect();
    assert_eq!(left, [vm(1), vm(2)]);
    assert_eq!(store.take_pool_vm(&take("team-b")).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_takes_never_get_the_same_vm() {
    let (_dir, store) = store();
    for n in 0..4 {
        pooled(&store, n, T0 + i64::from(n), true).await;
    }
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store.take_pool_vm(&take(&format!("t{i}"))).await.unwrap()
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        if let Some(r) = t.await.unwrap() {
            got.push(r.vm.id);
        }
    }
    got.sort();
    assert_eq!(got, (0..4).map(vm).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_vm_removed_from_its_pool_is_not_taken_and_removal_happens_once() {
    let (_dir, store) = store();
    pooled(&store, 1, T0 + 1, true).await;
    assert!(store.remove_pool_vm(&vm(1)).await.unwrap());
    assert!(!store.remove_pool_vm(&vm(1)).await.unwrap());
    assert_eq!(store.take_pool_vm(&take("team-a")).await.unwrap(), None);
    let vm1 = store.vm(&vm(1)).await.unwrap().unwrap();
    assert_eq!(vm1.vm.tenant, TenantId::pool());
}
