//! What the crate's unit tests share: a store holding one requested VM.

use std::sync::Arc;

use hearth_store::{SqliteStore, Store, VmRecord};
use hearth_types::api::CreateVm;
use hearth_types::{Timestamp, VmId};

/// An in-memory store with VM `id` requested (by tenant `t`), as the
/// controller records it before booting.
pub(crate) async fn store_with_vm(id: &str) -> (Arc<SqliteStore>, VmId) {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let vm: VmId = id.parse().unwrap();
    let now = Timestamp::now();
    let rec = VmRecord::requested(
        vm.clone(),
        "t".parse().unwrap(),
        &CreateVm::default(),
        now,
        now,
    );
    store.insert_vm(&rec).await.unwrap();
    (store, vm)
}
