//! Refusal totals through the `EgressRefusalStore` trait, on a real file
//! opened twice: what was written survives closing and opening the store
//! again (a controller restart), per VM, and is forgotten on delete.

use hearth_store::{EgressRefusalStore, EgressRefusals, SqliteStore};
use hearth_types::{Timestamp, VmId};

fn vm(n: u32) -> VmId {
    format!("vm-{n:012}").parse().unwrap()
}

#[tokio::test]
async fn refusal_totals_survive_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hearth.db");
    let totals = EgressRefusals {
        queries: 3,
        connections: 7,
    };
    {
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.egress_refusals(&vm(1)).await.unwrap(), None);
        let at = Timestamp::from_millis(1_000);
        store
            .put_egress_refusals(&vm(1), EgressRefusals::default(), at)
            .await
            .unwrap();
        store.put_egress_refusals(&vm(1), totals, at).await.unwrap();
        store
            .put_egress_refusals(
                &vm(2),
                EgressRefusals {
                    queries: 1,
                    connections: 0,
                },
                at,
            )
            .await
            .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.egress_refusals(&vm(1)).await.unwrap(), Some(totals));
    assert_eq!(
        store
            .egress_refusals(&vm(2))
            .await
            .unwrap()
            .unwrap()
            .queries,
        1
    );
    store.delete_egress_refusals(&vm(1)).await.unwrap();
    assert_eq!(store.egress_refusals(&vm(1)).await.unwrap(), None);
    assert!(store.egress_refusals(&vm(2)).await.unwrap().is_some());
}
