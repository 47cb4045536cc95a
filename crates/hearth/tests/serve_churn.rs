//! `hearth serve` under churn and load: a hundred VMs created and removed
//! (half at once, half once their hypervisor runs) leak no process,
//! descriptor, file or record; and what the server's memory grows by per
//! running VM.

mod common;

use std::time::{Duration, Instant};

use common::serve::{open_fds, rss_kib, Host};
use hearth_types::api::Vm;
use hearth_types::VmState;

const CYCLES: usize = 100;
/// Create/remove loops running side by side.
const IN_FLIGHT: usize = 4;
/// Descriptors the server may legitimately hold on to after the cycles
/// (an idle pooled connection, a lazily opened file).
const FD_SLACK: usize = 8;

/// Creates a VM and removes it, at once or (`spawned`) as soon as its
/// hypervisor runs; its id. A removal racing the VM's own next step gets
/// `409 conflict` and is asked again, as the API says to.
fn cycle(api: &common::serve::Api, spawned: bool) -> String {
    let vm: Vm = api.json("POST", "/v1/vms", Some(r#"{"image":"minimal"}"#), 201);
    let path = format!("/v1/vms/{}", vm.id);
    let deadline = Instant::now() + Duration::from_secs(60);
    while spawned && Instant::now() < deadline {
        let now: Vm = api.json("GET", &path, None, 200);
        if now.state != VmState::Requested && now.state != VmState::Preparing {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..5 {
        match api.call("DELETE", &path, None) {
            (202, _) => return vm.id.to_string(),
            (409, body) if body.contains("\"conflict\"") => {
                std::thread::sleep(Duration::from_millis(50));
            }
            (status, body) => panic!("DELETE {path}: {status} {body}"),
        }
    }
    panic!("DELETE {path}: still conflicting after 5 tries");
}

#[test]
fn a_hundred_create_and_remove_cycles_leak_nothing() {
    let mut host = Host::new(&["--grace", "300"]);
    host.start();
    let api = host.api();
    let serve = host.serve_pid();

    // One cycle first, so what is opened once (the store's WAL, caches) is
    // in the baseline.
    let warm = vec![cycle(&api, true)];
    common::soak::wait_all_destroyed(&mut host, &warm, Duration::from_secs(60));
    let fds_before = open_fds(serve);

    let started = Instant::now();
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let api = api.clone();
            std::thread::spawn(move || {
                (0..CYCLES / IN_FLIGHT)
                    .map(|n| cycle(&api, n % 2 == 1))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("a cycle worker"))
        .collect();
    let requested = started.elapsed();
    common::soak::wait_all_destroyed(&mut host, &ids, Duration::from_secs(150));
    let elapsed = started.elapsed();
    let rate = CYCLES as f64 / elapsed.as_secs_f64();
    eprintln!(
        "{CYCLES} create/remove cycles: requests done in {:.1} s, all destroyed after {:.1} s: {rate:.1} cycles/s",
        requested.as_secs_f64(),
        elapsed.as_secs_f64()
    );

    // Processes, descriptors, files, records.
    std::thread::sleep(Duration::from_millis(500));
    host.assert_clean();
    let fds_after = open_fds(serve);
    eprintln!("serve descriptors: {fds_before} before, {fds_after} after");
    assert!(
        fds_after <= fds_before + FD_SLACK,
        "descriptors grew from {fds_before} to {fds_after}"
    );
    let booted = ids
        .iter()
        .filter(|id| {
            let events: Vec<hearth_types::api::VmEvent> =
                api.json("GET", &format!("/v1/vms/{id}/events"), None, 200);
            events.iter().any(|e| e.state == VmState::Booting)
        })
        .count();
    eprintln!("{booted} of the {CYCLES} VMs had started their hypervisor when removed");
    assert!(
        booted >= CYCLES / 4,
        "too few hypervisors started to show anything"
    );
    let list: Vec<Vm> = serde_json::from_str(&host.vm_ok(&["list", "--json"])).expect("JSON");
    assert_eq!(list.len(), CYCLES + 1);
    let active: Vec<&Vm> = list.iter().filter(|vm| vm.state.is_active()).collect();
    assert!(active.is_empty(), "active VMs left: {active:?}");
    assert!(
        elapsed < Duration::from_secs(180),
        "{elapsed:?} for {CYCLES} cycles"
    );
}

#[test]
fn serve_memory_grows_by_less_than_1_mib_per_running_vm() {
    // Two VMs first, so the threads and caches a boot needs exist before
    // the baseline; then VMs booted one after another (parallel boots leave
    // allocator residue that is not per-VM state).
    const WARM: usize = 2;
    const MEASURED: usize = 3;
    let mut host = Host::new(&["--grace", "300"]);
    host.start();
    let api = host.api();
    let serve = host.serve_pid();
    let boot = |host: &mut Host| {
        let vm: Vm = api.json("POST", "/v1/vms", Some("{}"), 201);
        let id = vm.id.to_string();
        host.wait_state(&id, VmState::Ready, Duration::from_secs(150));
        id
    };
    let mut ids: Vec<String> = (0..WARM).map(|_| boot(&mut host)).collect();
    std::thread::sleep(Duration::from_secs(1));
    let before = rss_kib(serve);
    ids.extend((0..MEASURED).map(|_| boot(&mut host)));
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(serve);
    let per_vm = after.saturating_sub(before) as f64 / MEASURED as f64;
    eprintln!(
        "serve VmRSS: {before} KiB with {WARM} running VMs, {after} KiB with {}: {per_vm:.0} KiB per running VM",
        WARM + MEASURED
    );

    for id in &ids {
        host.vm_ok(&["rm", id]);
    }
    common::soak::wait_all_destroyed(&mut host, &ids, Duration::from_secs(60));
    host.assert_clean();
    assert!(
        per_vm <= 1024.0,
        "{per_vm:.0} KiB of serve memory per running VM"
    );
}
