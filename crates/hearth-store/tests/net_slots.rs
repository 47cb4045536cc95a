//! The network slots through the `NetSlotStore` trait, on a real file: a
//! claim is stable per VM and takes the lowest free number; a released slot
//! comes back only after its grace; a full pool answers `None`.

use hearth_store::{NetSlotStore, SlotClaim, SqliteStore};
use hearth_types::{Timestamp, VmId};
use tempfile::TempDir;

fn store() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hearth.db")).unwrap();
    (dir, store)
}

fn claim_at(now: i64, grace: i64, pool_size: u32) -> SlotClaim {
    SlotClaim {
        pool_size,
        now: Timestamp::from_millis(now),
        released_before: Timestamp::from_millis(now - grace),
    }
}

fn vm(n: u32) -> VmId {
    format!("vm-{n:012}").parse().unwrap()
}

#[tokio::test]
async fn claims_take_the_lowest_free_slot_and_are_stable_per_vm() {
    let (_dir, store) = store();
    let claim = claim_at(1_000, 100, 8);
    assert_eq!(store.claim_net_slot(&vm(1), claim).await.unwrap(), Some(0));
    assert_eq!(store.claim_net_slot(&vm(2), claim).await.unwrap(), Some(1));
    assert_eq!(store.claim_net_slot(&vm(1), claim).await.unwrap(), Some(0));
    let held = store.net_slots().await.unwrap();
    assert_eq!(held.len(), 2);
    assert_eq!((held[1].slot, &held[1].vm), (1, &vm(2)));
}

#[tokio::test]
async fn a_released_slot_is_reused_only_after_its_grace() {
    let (_dir, store) = store();
    store
        .claim_net_slot(&vm(1), claim_at(1_000, 100, 8))
        .await
        .unwrap();
    let released = store
        .release_net_slot(&vm(1), Timestamp::from_millis(2_000))
        .await
        .unwrap();
    assert_eq!(released, Some(0));
    assert_eq!(
        store
            .release_net_slot(&vm(1), Timestamp::from_millis(2_001))
            .await
            .unwrap(),
        None,
        "a second release finds nothing"
    );
    let early = store.claim_net_slot(&vm(2), claim_at(2_050, 100, 8)).await;
    assert_eq!(early.unwrap(), Some(1), "slot 0 is still in its grace");
    let late = store.claim_net_slot(&vm(3), claim_at(2_100, 100, 8)).await;
    assert_eq!(late.unwrap(), Some(0), "slot 0's grace is over");
    assert!(store
        .net_slots()
        .await
        .unwrap()
        .iter()
        .all(|s| s.vm != vm(1)));
}

#[tokio::test]
async fn a_full_pool_answers_none() {
    let (_dir, store) = store();
    let claim = claim_at(1_000, 100, 2);
    assert_eq!(store.claim_net_slot(&vm(1), claim).await.unwrap(), Some(0));
    assert_eq!(store.claim_net_slot(&vm(2), claim).await.unwrap(), Some(1));
    assert_eq!(store.claim_net_slot(&vm(3), claim).await.unwrap(), None);
    store
        .release_net_slot(&vm(1), Timestamp::from_millis(1_000))
        .await
        .unwrap();
    assert_eq!(store.claim_net_slot(&vm(3), claim).await.unwrap(), None);
    let after = claim_at(1_100, 100, 2);
    assert_eq!(store.claim_net_slot(&vm(3), after).await.unwrap(), Some(0));
}
