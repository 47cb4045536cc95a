//! Warm pools against a real `hearth serve` and real VMs under QEMU (the
//! small `minimal` image): a pool fills, a fitting create takes a waiting
//! VM and gets its configuration at hand-out, the pool refills, a create
//! that does not fit boots cold, pooled VMs carry nothing of a tenant's
//! (store rows, directory, events), entries past their time to live are
//! replaced, an empty pool still serves creates (cold), and a removed pool
//! leaves no hypervisor, file, layer or active row.

mod common;

use std::time::{Duration, Instant};

use common::serve::{Api, Host};
use hearth_store::Store;
use hearth_types::api::{ExecResult, Vm, VmEvent};
use hearth_types::pool::{Pool, PoolVmState};
use hearth_types::VmState;

/// What the tenant's configuration carries, searched for where a pooled
/// VM must not have it.
const MARK: &str = "tenant-mark-5f1c9e";

fn pool(api: &Api) -> Pool {
    api.json("GET", "/v1/pools/minimal", None, 200)
}

/// Polls the pool until `done` holds.
fn wait_pool(host: &Host, api: &Api, within: Duration, done: impl Fn(&Pool) -> bool) -> Pool {
    let deadline = Instant::now() + within;
    loop {
        let p = pool(api);
        if done(&p) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "the pool never got there: {p:?}\n--- serve\n{}",
            host.serve_logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn waiting(p: &Pool) -> Vec<String> {
    p.vms
        .iter()
        .filter(|v| v.state == PoolVmState::Waiting)
        .map(|v| v.id.to_string())
        .collect()
}

fn tenant_api(host: &mut Host, tenant: &str) -> Api {
    let mut api = host.api();
    api.token = host.mint(&["--tenant", tenant]);
    api
}

/// A create whose configuration carries [`MARK`] everywhere it can.
fn marked_create() -> String {
    format!(
        r#"{{"image": "minimal", "readiness_timeout_secs": 120, "config": {{
            "hostname": "{MARK}",
            "env": [{{"name": "MARK", "value": "{MARK}"}}],
            "files": [{{"path": "/etc/mark", "content": "{MARK}\n"}}]
        }}}}"#
    )
}

fn exec(api: &Api, id: &str, argv: &[&str]) -> String {
    let body = serde_json::json!({ "argv": argv }).to_string();
    let r: ExecResult = api.json("POST", &format!("/v1/vms/{id}/exec"), Some(&body), 200);
    assert_eq!(r.exit_code, Some(0), "{argv:?}: {r:?}");
    r.stdout
}

/// Nothing of [`MARK`] in VM `id`'s store rows, events or directory.
fn carries_no_mark(host: &mut Host, id: &str) {
    let vm = host.vm(id);
    assert_eq!(vm.tenant.as_str(), "_pool", "{vm:?}");
    let events: Vec<VmEvent> = host
        .api()
        .json("GET", &format!("/v1/vms/{id}/events"), None, 200);
    for e in &events {
        assert!(
            !e.message.contains("team-a") && !e.message.contains(MARK),
            "{e:?}"
        );
    }
    let store = hearth_store::SqliteStore::open(&host.data().join("hearth.db")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let config = rt
        .block_on(store.guest_config(&id.parse().unwrap()))
        .unwrap();
    assert_eq!(
        config,
        Default::default(),
        "a pooled VM holds a configuration"
    );
    for entry in walk(&host.vms_dir().join(id)) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        let hit = bytes.windows(MARK.len()).any(|w| w == MARK.as_bytes());
        assert!(!hit, "{} holds the tenant's mark", entry.display());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(walk(&p)),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
    out
}

fn active_rows(host: &mut Host) -> Vec<Vm> {
    let all: Vec<Vm> = host.api().json("GET", "/v1/vms", None, 200);
    all.into_iter()
        .filter(|v| v.state != VmState::Destroyed)
        .collect()
}

/// Destroys every VM and checks that nothing of any is left anywhere.
fn remove_all(host: &mut Host, api: &Api) {
    destroy_everything(host, api);
    host.assert_clean();
}

/// Removes the pool and destroys every VM, waiting until none is active.
fn destroy_everything(host: &mut Host, api: &Api) {
    let _: Pool = api.json("DELETE", "/v1/pools/minimal", None, 200);
    for vm in active_rows(host) {
        let id = vm.id.to_string();
        let _ = host.api().call("DELETE", &format!("/v1/vms/{id}"), None);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !active_rows(host).is_empty() {
        assert!(Instant::now() < deadline, "left: {:?}", active_rows(host));
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn vm_a_pool_hands_out_a_waiting_vm_with_its_configuration_and_refills() {
    let mut host = Host::new(&[]);
    host.start();
    let admin = host.api();
    let team = tenant_api(&mut host, "team-a");
    let body = r#"{"size": 2, "ttl_secs": 900, "refill_per_min": 60}"#;
    let (status, answer) = team.call("PUT", "/v1/pools/minimal", Some(body));
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = admin.call("PUT", "/v1/pools/minimal", Some(r#"{"size": 3, "max": 2}"#));
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("size may not exceed max"), "{answer}");
    let _: Pool = admin.json("PUT", "/v1/pools/minimal", Some(body), 200);

    let full = wait_pool(&host, &admin, Duration::from_secs(300), |p| {
        waiting(p).len() == 2
    });
    let pooled = waiting(&full);
    for id in &pooled {
        carries_no_mark(&mut host, id);
    }
    let listed = host
        .hearth(&["pool", "list"])
        .env("HEARTH_URL", &admin.url)
        .env("HEARTH_TOKEN", &admin.token)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.status.success(), "{}", common::text(&listed));
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(row.first(), Some(&"minimal"), "{table}");
    assert_eq!(row.get(5), Some(&"2"), "two waiting: {table}");
    let theirs: Vec<Vm> = team.json("GET", "/v1/vms", None, 200);
    assert!(theirs.is_empty(), "a tenant sees pooled VMs: {theirs:?}");

    // A fitting create takes a waiting VM; its configuration arrives now.
    let asked = Instant::now();
    let vm: Vm = team.json("POST", "/v1/vms", Some(&marked_create()), 201);
    let id = vm.id.to_string();
    assert!(pooled.contains(&id), "{id} is not one of {pooled:?}");
    assert_eq!(vm.tenant.as_str(), "team-a");
    host.wait_state(&id, VmState::Ready, Duration::from_secs(120));
    let took = asked.elapsed();
    eprintln!(
        "pooled minimal: create to ready {:.2} s",
        took.as_secs_f64()
    );
    assert_eq!(exec(&team, &id, &["hostname"]).trim(), MARK);
    assert_eq!(exec(&team, &id, &["cat", "/etc/mark"]).trim(), MARK);
    assert_eq!(exec(&team, &id, &["sh", "-c", "echo $MARK"]).trim(), MARK);
    let other = pooled.iter().find(|p| **p != id).unwrap().clone();
    carries_no_mark(&mut host, &other);
    assert!(
        !host.serve_logs().contains(MARK),
        "the server logged a tenant's configuration"
    );

    // The pool refills to its size, and says so in its metrics.
    let refilled = wait_pool(&host, &admin, Duration::from_secs(180), |p| {
        waiting(p).len() == 2 && !waiting(p).contains(&id)
    });
    assert_eq!(refilled.handed_out, 1);
    let (_, metrics) = admin.call("GET", "/metrics", None);
    assert!(
        metrics.contains("hearth_pool_vms{image=\"minimal\",state=\"waiting\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hearth_pool_handouts_total{image=\"minimal\"} 1"),
        "{metrics}"
    );

    // A create that does not fit (another size) boots cold.
    let cold: Vm = team.json(
        "POST",
        "/v1/vms",
        Some(r#"{"image": "minimal", "memory_mib": 320}"#),
        201,
    );
    assert!(!waiting(&refilled).contains(&cold.id.to_string()));
    host.wait_state(
        &cold.id.to_string(),
        VmState::Ready,
        Duration::from_secs(120),
    );

    remove_all(&mut host, &admin);
}

#[test]
fn vm_pooled_vms_past_their_time_to_live_are_replaced_and_an_empty_pool_boots_cold() {
    let mut host = Host::new(&[]);
    host.start();
    let admin = host.api();
    let body = r#"{"size": 1, "ttl_secs": 25, "refill_per_min": 60}"#;
    let _: Pool = admin.json("PUT", "/v1/pools/minimal", Some(body), 200);
    let first = wait_pool(&host, &admin, Duration::from_secs(240), |p| {
        waiting(p).len() == 1
    });
    let old = waiting(&first)[0].clone();
    let next = wait_pool(&host, &admin, Duration::from_secs(240), |p| {
        waiting(p).len() == 1 && waiting(p)[0] != old
    });
    assert_ne!(waiting(&next)[0], old);
    let gone = host.wait_state(&old, VmState::Destroyed, Duration::from_secs(60));
    assert_eq!(gone.tenant.as_str(), "_pool");
    let events: Vec<VmEvent> = admin.json("GET", &format!("/v1/vms/{old}/events"), None, 200);
    assert!(
        events.iter().any(|e| e
            .message
            .contains("removed from its pool: older than its pool's time to live")),
        "{events:?}"
    );

    // Emptied (size 0), the pool serves creates cold.
    let _: Pool = admin.json("PUT", "/v1/pools/minimal", Some(r#"{"size": 0}"#), 200);
    wait_pool(&host, &admin, Duration::from_secs(60), |p| p.vms.is_empty());
    let team = tenant_api(&mut host, "team-a");
    let asked = Instant::now();
    let vm: Vm = team.json("POST", "/v1/vms", Some(&marked_create()), 201);
    host.wait_state(&vm.id.to_string(), VmState::Ready, Duration::from_secs(120));
    eprintln!(
        "cold minimal: create to ready {:.2} s",
        asked.elapsed().as_secs_f64()
    );
    assert_eq!(exec(&team, &vm.id.to_string(), &["hostname"]).trim(), MARK);
    let (_, metrics) = admin.call("GET", "/metrics", None);
    assert!(
        metrics.contains("hearth_pool_cold_total{image=\"minimal\"} 1"),
        "{metrics}"
    );

    remove_all(&mut host, &admin);
}

/// `hearth ARGS` against the server as `api`'s token.
fn cli(host: &Host, api: &Api, args: &[&str]) -> std::process::Output {
    host.hearth(args)
        .env("HEARTH_URL", &api.url)
        .env("HEARTH_TOKEN", &api.token)
        .output()
        .unwrap()
}

/// A create carrying [`MARK`] in what a restored template applies late
/// (hostname, files), and no environment.
fn marked_create_without_env() -> String {
    format!(
        r#"{{"image": "minimal", "readiness_timeout_secs": 120, "config": {{
            "hostname": "{MARK}",
            "files": [{{"path": "/etc/mark", "content": "{MARK}\n"}}]
        }}}}"#
    )
}

#[test]
fn vm_a_pool_from_a_template_restores_its_vms_and_hands_them_out_configured() {
    if hearth_testkit::static_agent().is_none() {
        return;
    }
    let mut host = Host::new(&[]);
    host.start();
    let admin = host.api();
    let team = tenant_api(&mut host, "team-a");

    // A snapshot of a tenant's VM holds its configuration: never a pool's.
    let theirs: Vm = team.json("POST", "/v1/vms", Some(r#"{"image": "minimal"}"#), 201);
    let theirs = theirs.id.to_string();
    host.wait_state(&theirs, VmState::Ready, Duration::from_secs(120));
    let body = format!(r#"{{"name": "of-a-vm", "vm": "{theirs}"}}"#);
    let (status, answer) = team.call("POST", "/v1/snapshots", Some(&body));
    assert_eq!(status, 201, "{answer}");
    let with = r#"{"size": 1, "template": "of-a-vm"}"#;
    let (status, answer) = admin.call("PUT", "/v1/pools/minimal", Some(with));
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("was taken of VM"), "{answer}");
    let (status, answer) = admin.call(
        "PUT",
        "/v1/pools/minimal",
        Some(r#"{"size": 1, "template": "none-such"}"#),
    );
    assert_eq!(status, 404, "{answer}");
    let _ = team.call("DELETE", &format!("/v1/vms/{theirs}"), None);
    host.wait_state(&theirs, VmState::Destroyed, Duration::from_secs(60));
    let (status, answer) = team.call("DELETE", "/v1/snapshots/of-a-vm", None);
    assert_eq!(status, 200, "{answer}");

    let out = cli(
        &host,
        &admin,
        &["snapshot", "create", "pool-tpl", "--image", "minimal"],
    );
    assert!(out.status.success(), "{}", common::text(&out));
    let out = cli(
        &host,
        &admin,
        &[
            "pool",
            "set",
            "minimal",
            "--size",
            "1",
            "--refill",
            "60",
            "--template",
            "pool-tpl",
        ],
    );
    assert!(out.status.success(), "{}", common::text(&out));
    let full = wait_pool(&host, &admin, Duration::from_secs(240), |p| {
        waiting(p).len() == 1
    });
    assert_eq!(
        full.settings.template.as_ref().map(|t| t.as_str()),
        Some("pool-tpl")
    );
    let pooled = waiting(&full)[0].clone();
    carries_no_mark(&mut host, &pooled);
    let events: Vec<VmEvent> = admin.json("GET", &format!("/v1/vms/{pooled}/events"), None, 200);
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("restored from snapshot pool-tpl")),
        "{events:?}"
    );
    // The template stays while its pool names it.
    let out = cli(&host, &admin, &["snapshot", "rm", "pool-tpl"]);
    assert!(!out.status.success());
    assert!(
        common::text(&out).contains("template of the pool"),
        "{}",
        common::text(&out)
    );

    // A create that fits takes the restored VM: its hostname and file
    // arrive at hand-out, over the template's identity.
    let asked = Instant::now();
    let vm: Vm = team.json("POST", "/v1/vms", Some(&marked_create_without_env()), 201);
    let id = vm.id.to_string();
    assert_eq!(id, pooled, "the create did not take the restored VM");
    host.wait_state(&id, VmState::Ready, Duration::from_secs(120));
    eprintln!(
        "minimal from a template pool: create to ready {:.2} s",
        asked.elapsed().as_secs_f64()
    );
    assert_eq!(exec(&team, &id, &["hostname"]).trim(), MARK);
    assert_eq!(exec(&team, &id, &["cat", "/etc/mark"]).trim(), MARK);

    // An environment cannot reach the template's running services: cold.
    let refilled = wait_pool(&host, &admin, Duration::from_secs(180), |p| {
        waiting(p).len() == 1 && waiting(p)[0] != id
    });
    let cold: Vm = team.json("POST", "/v1/vms", Some(&marked_create()), 201);
    assert!(!waiting(&refilled).contains(&cold.id.to_string()));
    host.wait_state(
        &cold.id.to_string(),
        VmState::Ready,
        Duration::from_secs(120),
    );
    assert_eq!(
        exec(&team, &cold.id.to_string(), &["sh", "-c", "echo $MARK"]).trim(),
        MARK
    );
    let (_, metrics) = admin.call("GET", "/metrics", None);
    assert!(
        metrics.contains("hearth_pool_cold_total{image=\"minimal\"} 1"),
        "{metrics}"
    );

    destroy_everything(&mut host, &admin);
    let out = cli(&host, &admin, &["snapshot", "rm", "pool-tpl"]);
    assert!(out.status.success(), "{}", common::text(&out));
    host.assert_clean();
}
