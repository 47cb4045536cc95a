//! The long soak of `hearth serve`: `SOAK_CYCLES` (default 1000)
//! create/destroy cycles through the API, `SOAK_IN_FLIGHT` (4) at a time,
//! every `SOAK_BOOT_EVERY`th (50) booted to `ready` first; prints what the
//! server and the host held before and after (descriptors, threads, RSS,
//! hypervisors, entries under `<data>/vms/`, layers, cgroups, active store
//! rows) and fails if anything was left. The suite runs a short one
//! (`tests/serve_soak.rs`); docs/benchmarks.md has the figures.
//!
//! `cargo bench -p hearth --bench soak`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::serve::Host;
use common::soak::{self, Soak};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let soak = Soak {
        cycles: env("SOAK_CYCLES", 1000),
        in_flight: env("SOAK_IN_FLIGHT", 4).max(1),
        boot_every: env("SOAK_BOOT_EVERY", 50).max(1),
        boot_within: Duration::from_secs(300),
    };
    let mut host = Host::new(&["--grace", "3600"]);
    host.start();
    let report = soak::run(&mut host, soak);
    report.print(&soak);
    let (before, after) = (&report.before, &report.after);
    let left = [
        ("hypervisors", after.hypervisors),
        ("entries under vms/", after.vm_entries),
        ("layers", after.layers),
        ("active rows", after.active_rows),
    ];
    for (what, n) in left {
        assert_eq!(n, 0, "{n} {what} left after the soak");
    }
    assert_eq!(after.cgroups, 0, "cgroups of hearth or its VMs left");
    println!(
        "soak of {} cycles: {:.1} s ({:.2} cycles/s); serve fds {} -> {}, threads {} -> {}, RSS {} -> {} KiB; {} booted to ready ({} not in time), {} hypervisors started; nothing left",
        soak.cycles,
        report.elapsed.as_secs_f64(),
        soak.cycles as f64 / report.elapsed.as_secs_f64(),
        before.fds,
        after.fds,
        before.threads,
        after.threads,
        before.rss_kib,
        after.rss_kib,
        report.booted,
        report.not_ready.len(),
        report.spawned,
    );
}
