//! Snapshots through the `SnapshotStore` trait, on a real file: a name is
//! given once, the manifest arrives when the files are done, a VM's role
//! is read back, and removal takes the VMs' links with it.

use hearth_store::{SnapshotRecord, SnapshotRole, SnapshotStore, SqliteStore, StoreError};
use hearth_types::snapshot::FileFacts;
use hearth_types::{BackendKind, SnapshotManifest, SnapshotName, Timestamp, VmId};

fn name(s: &str) -> SnapshotName {
    s.parse().unwrap()
}

fn manifest() -> SnapshotManifest {
    let file = FileFacts {
        path: "/k".into(),
        size: 1,
        mtime_ns: 2,
    };
    SnapshotManifest {
        source_vm: "vm-1".parse().unwrap(),
        template: false,
        backend: BackendKind::Qemu,
        hypervisor: "qemu".into(),
        machine: "microvm".into(),
        vcpus: 1,
        memory_mib: 256,
        kernel: file.clone(),
        initramfs: None,
        image: "minimal".into(),
        image_file: file,
        cmdline: "console=ttyS0".into(),
        devices: vec!["virtio-blk:ro".into()],
        shared_memory: None,
    }
}

#[tokio::test]
async fn a_snapshot_is_named_once_finished_with_its_manifest_and_removed_with_its_links() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hearth.db")).unwrap();
    let record = SnapshotRecord {
        name: name("base"),
        tenant: "t1".parse().unwrap(),
        manifest: None,
        created_at: Timestamp::from_millis(5),
    };
    store.insert_snapshot(&record).await.unwrap();
    let again = store.insert_snapshot(&record).await.unwrap_err();
    assert!(matches!(again, StoreError::Duplicate { .. }), "{again}");
    assert_eq!(
        store.snapshot(&name("base")).await.unwrap(),
        Some(record.clone())
    );
    store
        .finish_snapshot(&name("base"), &manifest())
        .await
        .unwrap();
    let done = store.snapshot(&name("base")).await.unwrap().unwrap();
    assert_eq!(done.manifest, Some(manifest()));
    assert_eq!(store.list_snapshots().await.unwrap().len(), 1);

    let vm: VmId = "vm-2".parse().unwrap();
    store
        .set_snapshot_role(&vm, &name("base"), SnapshotRole::Restored)
        .await
        .unwrap();
    assert_eq!(
        store.snapshot_role(&vm).await.unwrap(),
        Some((name("base"), SnapshotRole::Restored))
    );
    store.delete_snapshot(&name("base")).await.unwrap();
    assert_eq!(store.snapshot(&name("base")).await.unwrap(), None);
    assert_eq!(store.snapshot_role(&vm).await.unwrap(), None);
}
