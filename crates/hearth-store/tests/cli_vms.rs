//! Users' CLI VMs in a real SQLite store: one per tenant and user, the
//! base version per provider kept only for the VM that is current.

use std::collections::BTreeMap;

use hearth_store::{CliVmRecord, CliVmStore, SqliteStore, StoreError};
use hearth_types::Timestamp;

fn record(tenant: &str, user: &str, vm: &str) -> CliVmRecord {
    CliVmRecord {
        tenant: tenant.parse().unwrap(),
        user: user.parse().unwrap(),
        vm: vm.parse().unwrap(),
        image: "cli".to_owned(),
        created_at: Timestamp::from_millis(1_000),
        bases: BTreeMap::new(),
    }
}

#[tokio::test]
async fn one_cli_vm_per_tenant_and_user_with_its_bases() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hearth.db")).unwrap();
    let alice = record("team-a", "alice", "vm-0000000000000001");
    store.insert_cli_vm(&alice).await.unwrap();
    let twin = record("team-a", "alice", "vm-0000000000000002");
    let again = store.insert_cli_vm(&twin).await;
    assert!(
        matches!(again, Err(StoreError::Duplicate { .. })),
        "{again:?}"
    );
    // The same name in another tenant is another user.
    store
        .insert_cli_vm(&record("team-b", "alice", "vm-0000000000000003"))
        .await
        .unwrap();
    let codex = "codex".parse().unwrap();
    store
        .set_cli_base(&alice.tenant, &alice.user, &alice.vm, &codex, 4)
        .await
        .unwrap();
    let got = store
        .cli_vm(&alice.tenant, &alice.user)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.bases.get(&codex), Some(&4));
    // A base for a VM that is no longer the user's is refused.
    let old = "vm-0000000000000009".parse().unwrap();
    let stale = store.set_cli_base(&alice.tenant, &alice.user, &old, &codex, 5);
    assert!(matches!(stale.await, Err(StoreError::Changed { .. })));
    assert_eq!(store.list_cli_vms().await.unwrap().len(), 2);
    let gone = store
        .delete_cli_vm(&alice.tenant, &alice.user)
        .await
        .unwrap();
    assert_eq!(gone.map(|r| r.vm), Some(alice.vm));
    assert!(store
        .cli_vm(&alice.tenant, &alice.user)
        .await
        .unwrap()
        .is_none());
}
