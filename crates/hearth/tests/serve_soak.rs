//! The suite's short soak of `hearth serve` (`benches/soak.rs` runs the
//! long one): 30 create/destroy cycles, three at a time, a few of them
//! booted to `ready` first, leave no hypervisor, file under `<data>/vms/`,
//! writable layer, cgroup or active store row behind, and the server no
//! more descriptors or threads than after its first cycles.

mod common;

use std::time::Duration;

use common::serve::Host;
use common::soak::{self, Soak};

/// Descriptors and threads the server may still hold after the cycles (an
/// idle pooled connection, a blocking-pool thread not yet retired).
const SLACK: usize = 8;

#[test]
fn thirty_create_destroy_cycles_leave_nothing_behind() {
    let soak = Soak {
        cycles: 30,
        in_flight: 3,
        boot_every: 10,
        boot_within: Duration::from_secs(150),
    };
    let mut host = Host::new(&["--grace", "300"]);
    host.start();
    let report = soak::run(&mut host, soak);
    report.print(&soak);
    let (before, after) = (&report.before, &report.after);

    assert_eq!(
        after.hypervisors,
        0,
        "hypervisors left: {:?}",
        host.hypervisors()
    );
    assert_eq!(after.vm_entries, 0, "left under vms/: {:?}", host.vm_dirs());
    assert_eq!(after.layers, 0, "layers left: {:?}", host.layers());
    assert_eq!(after.active_rows, 0, "active VMs left");
    assert_eq!(after.cgroups, 0, "cgroups of hearth or its VMs left");
    assert!(
        after.fds <= before.fds + SLACK,
        "serve's descriptors grew from {} to {}",
        before.fds,
        after.fds
    );
    assert!(
        after.threads <= before.threads + SLACK,
        "serve's threads grew from {} to {}",
        before.threads,
        after.threads
    );
    assert!(
        report.booted >= 1,
        "no VM booted to ready: {:?}\n--- serve\n{}",
        report.not_ready,
        host.serve_logs()
    );
    assert!(
        report.spawned >= soak.cycles / 4,
        "too few hypervisors started to show anything"
    );
}
