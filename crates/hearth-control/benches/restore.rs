//! Restore from a snapshot against a cold boot, to the agent's `ready`,
//! measured in-process with the controller of `hearth serve`, a real
//! SQLite store and real QEMU VMs (TCG here):
//!
//! - cold: `create_vm` of the image until the VM is `ready`;
//! - restore: `create_vm` with `from_snapshot` (a template of the same
//!   image, taken once) until `ready`;
//!
//! runs alternating, medians and their ratio. Each VM gets a small
//! configuration (one file), as a real one would.
//!
//! `cargo bench -p hearth-control --bench restore` (IMAGES, default
//! `minimal`, comma-separated, e.g. `minimal,browser`; RUNS, default 5).

use std::sync::Arc;
use std::time::Instant;

use hearth_control::controller::Controller;
use hearth_guestkit::DataDir;
use hearth_types::api::CreateVm;
use hearth_types::snapshot::CreateSnapshot;
use hearth_types::{VmId, VmState};

mod common;

use common::{admin, controller, median, request, wait_gone, wait_ready};

fn main() {
    let shared = DataDir::new(hearth_testkit::test_data_dir());
    hearth_guestkit::kernel::fetch_debian_cloud_kernel(&shared, &mut |_| {}).expect("kernel");
    if let Some(agent) = hearth_testkit::static_agent() {
        std::env::set_var("HEARTH_AGENT", agent);
    }
    let images = std::env::var("IMAGES").unwrap_or_else(|_| "minimal".into());
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dir = hearth_testkit::private_data_dir();
        let ctl = controller(DataDir::new(dir.path())).await;
        for image in images.split(',') {
            compare(&ctl, image, runs).await;
        }
    });
}

async fn compare(ctl: &Arc<Controller>, image: &str, runs: usize) {
    let name: hearth_types::SnapshotName =
        format!("bench-{image}").parse().expect("a snapshot name");
    let start = Instant::now();
    let req = CreateSnapshot {
        name: name.clone(),
        vm: None,
        image: Some(image.to_owned()),
    };
    let snap = ctl.create_snapshot(&admin(), req).await.expect("template");
    eprintln!(
        "{image}: template in {:.1} s, {} MiB on disk",
        start.elapsed().as_secs_f64(),
        snap.disk_bytes >> 20
    );
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for i in 0..runs {
        cold.push(to_ready(ctl, request(image, None, i)).await);
        warm.push(to_ready(ctl, request(image, Some(&name), i)).await);
        eprintln!(
            "{image} run {}: cold {:.3} s, restore {:.3} s",
            i + 1,
            cold[i],
            warm[i]
        );
    }
    let (c, w) = (median(&mut cold), median(&mut warm));
    println!(
        "{image}: cold boot to ready {c:.3} s, restore to ready {w:.3} s (medians of {runs}): {:.1}x",
        c / w
    );
    ctl.remove_snapshot(&admin(), &name).await.expect("rm");
}

/// Seconds from the create call to `ready`; the VM is destroyed after.
async fn to_ready(ctl: &Arc<Controller>, req: CreateVm) -> f64 {
    let start = Instant::now();
    let vm = ctl.create_vm(&admin(), req).await.expect("create");
    let secs = wait_ready(ctl, &vm.id)
        .await
        .duration_since(start)
        .as_secs_f64();
    print_phases(ctl, &vm.id).await;
    ctl.destroy(&admin(), &vm.id).await.expect("destroy");
    wait_gone(ctl, &vm.id).await;
    secs
}

/// Requested to booting (the hypervisor started: for a restore, the state
/// loaded) and booting to ready (the agent back and configured), ms.
async fn print_phases(ctl: &Controller, id: &VmId) {
    let events = ctl.events(&admin(), id).await.expect("events");
    let at = |s: VmState| {
        events
            .iter()
            .find(|e| e.state == s)
            .map(|e| e.at.as_millis())
    };
    if let (Some(r), Some(b), Some(y)) = (
        at(VmState::Requested),
        at(VmState::Booting),
        at(VmState::Ready),
    ) {
        eprintln!(
            "  {id}: requested to booting {} ms, booting to ready {} ms",
            b - r,
            y - b
        );
    }
}
