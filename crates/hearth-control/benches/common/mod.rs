//! What the controller benches that restore snapshots share: an
//! in-process controller on a data directory, the admin's scope, a create
//! (from a snapshot or not) with a file of its own, and the waits.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_control::controller::{Controller, ControllerConfig, Scope};
use hearth_guestkit::DataDir;
use hearth_store::SqliteStore;
use hearth_types::api::CreateVm;
use hearth_types::guest::{GuestConfig, GuestFile};
use hearth_types::{SnapshotName, VmId, VmState};

pub async fn controller(data: DataDir) -> Arc<Controller> {
    let store = SqliteStore::open(&data.store_file()).expect("store");
    let mut config = ControllerConfig::new(data);
    config.tick = Duration::from_millis(100);
    config.readiness_timeout = Duration::from_secs(600);
    let ctl = Controller::new(Arc::new(store), config);
    ctl.start().await;
    ctl
}

pub fn admin() -> Scope {
    Scope {
        tenant: "bench".parse().expect("tenant"),
        admin: true,
    }
}

pub fn request(image: &str, snapshot: Option<&SnapshotName>, i: usize) -> CreateVm {
    let file = GuestFile {
        path: "/etc/bench".into(),
        content: format!("run {i}"),
        mode: None,
        owner: None,
    };
    CreateVm {
        image: image.to_owned(),
        config: GuestConfig {
            files: vec![file],
            ..GuestConfig::default()
        },
        from_snapshot: snapshot.cloned(),
        readiness_timeout_secs: Some(600),
        ..CreateVm::default()
    }
}

pub async fn wait_ready(ctl: &Controller, id: &VmId) -> Instant {
    loop {
        let vm = ctl.vm(&admin(), id).await.expect("vm");
        if vm.state == VmState::Ready {
            return Instant::now();
        }
        assert!(
            vm.state.is_active(),
            "VM {id} ended {} ({:?})",
            vm.state,
            vm.failure
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn wait_gone(ctl: &Controller, id: &VmId) {
    while ctl.vm(&admin(), id).await.expect("vm").state != VmState::Destroyed {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}
