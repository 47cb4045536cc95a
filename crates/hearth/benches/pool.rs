//! Warm pools' numbers for the `minimal` image under QEMU (TCG here):
//! create to ready for a create served by a pooled VM against a cold
//! boot, measured by the server (`ready_at - created_at`; a pooled VM's
//! `created_at` is its hand-out), medians of ROUNDS each, and the ratio.
//! The browser image's figure (a session start to the viewer's first
//! frame, pooled and cold) is printed by `tests/vm_pool_sessions.rs`.
//!
//! `cargo bench -p hearth --bench pool` (ROUNDS, default 5).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::serve::{Api, Host};
use hearth_types::api::Vm;
use hearth_types::pool::{Pool, PoolVmState};
use hearth_types::VmState;

const CREATE: &str = r#"{"image": "minimal", "config": {"hostname": "bench",
    "env": [{"name": "A", "value": "1"}]}}"#;

fn main() {
    if hearth_testkit::static_agent().is_none() {
        return;
    }
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut host = Host::new(&[]);
    host.start();
    let admin = host.api();
    let body = r#"{"size": 1, "ttl_secs": 3600, "refill_per_min": 600}"#;
    let _: Pool = admin.json("PUT", "/v1/pools/minimal", Some(body), 200);
    let mut pooled = Vec::new();
    for _ in 0..rounds {
        wait_waiting(&admin, 1);
        let (secs, from_pool) = create_to_ready(&mut host, &admin);
        assert!(from_pool, "the create was not served by the pool");
        pooled.push(secs);
    }
    let _: Pool = admin.json("PUT", "/v1/pools/minimal", Some(r#"{"size": 0}"#), 200);
    wait_waiting(&admin, 0);
    let mut cold = Vec::new();
    for _ in 0..rounds {
        let (secs, from_pool) = create_to_ready(&mut host, &admin);
        assert!(!from_pool);
        cold.push(secs);
    }
    let (p, c) = (median(&mut pooled), median(&mut cold));
    println!(
        "minimal, create to ready, median of {rounds}: pooled {p:.3} s, cold {c:.3} s, cold / pooled {:.1}",
        c / p
    );
    println!("pooled: {pooled:.3?}\ncold: {cold:.3?}");
    let _: Pool = admin.json("DELETE", "/v1/pools/minimal", None, 200);
}

/// Waits until the pool holds exactly `n` VMs, all waiting.
fn wait_waiting(api: &Api, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let p: Pool = api.json("GET", "/v1/pools/minimal", None, 200);
        if p.vms.len() == n && p.vms.iter().all(|v| v.state == PoolVmState::Waiting) {
            return;
        }
        assert!(Instant::now() < deadline, "the pool never held {n}: {p:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One create until ready, then destroyed: the server's create-to-ready
/// seconds, and whether a pooled VM served it.
fn create_to_ready(host: &mut Host, api: &Api) -> (f64, bool) {
    let before: Pool = api.json("GET", "/v1/pools/minimal", None, 200);
    let vm: Vm = api.json("POST", "/v1/vms", Some(CREATE), 201);
    let id = vm.id.to_string();
    let from_pool = before.vms.iter().any(|v| v.id == vm.id);
    let ready = host.wait_state(&id, VmState::Ready, Duration::from_secs(120));
    let at = ready.ready_at.expect("ready_at");
    let secs = at.since(ready.created_at).as_secs_f64();
    let _ = api.call("DELETE", &format!("/v1/vms/{id}"), None);
    host.wait_state(&id, VmState::Destroyed, Duration::from_secs(60));
    (secs, from_pool)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
