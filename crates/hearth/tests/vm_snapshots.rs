//! Snapshots end to end on a real `hearth serve` with real QEMU VMs of the
//! `minimal` image: a VM is snapshotted while a process holds a value in
//! memory only and its clock is an hour behind; two VMs restored from that
//! snapshot each have the value, the right time, their own random bytes,
//! hostname, machine id and configuration; a restore that does not match
//! is refused naming what differs; a template is made from an image; a
//! shared template's restores map its one memory file copy-on-write and
//! share its clean pages; and removing a snapshot leaves no hypervisor,
//! file or layer.

mod common;

use std::time::{Duration, Instant};

use common::guest_clock::guest_clock_error;
use common::serve::{Api, Host};
use hearth_store::{SnapshotStore, SqliteStore};
use hearth_types::api::{ConsoleTail, ExecResult, Vm};
use hearth_types::snapshot::Snapshot;
use hearth_types::VmState;
use serde_json::json;

const READY: Duration = Duration::from_secs(120);

fn exec(api: &Api, id: &str, script: &str) -> ExecResult {
    let body = json!({ "argv": ["sh", "-c", script] }).to_string();
    api.json("POST", &format!("/v1/vms/{id}/exec"), Some(&body), 200)
}

/// An exec that must exit 0: its stdout, trimmed.
fn sh(api: &Api, id: &str, script: &str) -> String {
    let out = exec(api, id, script);
    assert_eq!(out.exit_code, Some(0), "{script}: {out:?}");
    out.stdout.trim().to_owned()
}

/// A VM restored from `snap` with a configuration writing `/etc/only-<tag>`.
fn restore(host: &mut Host, snap: &str, tag: &str) -> String {
    let config = json!({ "files": [{ "path": format!("/etc/only-{tag}"), "content": tag }] });
    let body = json!({ "from_snapshot": snap, "config": config }).to_string();
    let vm: Vm = host.api().json("POST", "/v1/vms", Some(&body), 201);
    let id = vm.id.to_string();
    host.wait_state(&id, VmState::Ready, READY);
    id
}

fn destroy(host: &mut Host, id: &str) {
    host.vm_ok(&["rm", id]);
    host.wait_state(id, VmState::Destroyed, Duration::from_secs(60));
}

/// The value the holder process kept in memory, as it writes it on USR1.
fn held_value(api: &Api, id: &str) -> String {
    sh(api, id, "kill -USR1 $(cat /run/holder.pid)");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = exec(api, id, "cat /run/held 2>/dev/null");
        if out.exit_code == Some(0) {
            return out.stdout.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "{id}: the holder never answered");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts a process that reads a value from a file, deletes the file and
/// keeps the value in its memory only; on USR1 it writes it out.
const HOLDER: &str = "echo \"$0\" > /run/value; \
    setsid sh -c 'v=$(cat /run/value); rm /run/value; echo $$ > /run/holder.pid; \
    trap \"echo \\$v > /run/held\" USR1; while :; do sleep 0.2; done' \
    </dev/null >/dev/null 2>&1 & \
    while [ -e /run/value ]; do sleep 0.1; done";

#[test]
fn vm_restored_twice_each_has_the_memory_the_time_and_its_own_identity_and_config() {
    if hearth_testkit::static_agent().is_none() {
        return;
    }
    let mut host = Host::new(&[]);
    host.start();
    let api = host.api();
    let source = host.create(&["--wait", "ready"]);
    let value = format!("held-{}", std::process::id());
    let body = json!({ "argv": ["sh", "-c", HOLDER, &value] }).to_string();
    let started: ExecResult = api.json("POST", &format!("/v1/vms/{source}/exec"), Some(&body), 200);
    assert_eq!(started.exit_code, Some(0), "{started:?}");

    // An hour back, and the snapshot at once (before the host's next time).
    sh(
        &api,
        &source,
        "date -s @$(( $(date +%s) - 3600 )) >/dev/null",
    );
    let body = json!({ "name": "base", "vm": source }).to_string();
    let snap: Snapshot = api.json("POST", "/v1/snapshots", Some(&body), 201);
    assert_eq!(snap.manifest.memory_mib, 256);
    assert!(!snap.manifest.template);
    // The source runs on.
    assert_eq!(sh(&api, &source, "echo alive"), "alive");

    let started = Instant::now();
    let b = restore(&mut host, "base", "b");
    eprintln!("restore to ready: {:?}", started.elapsed());
    let c = restore(&mut host, "base", "c");

    for id in [&b, &c] {
        assert_eq!(held_value(&api, id), value, "{id}");
        let error = guest_clock_error(&mut host, id);
        assert!(
            error < Duration::from_secs(2),
            "{id}: clock off by {error:?}"
        );
        let console: ConsoleTail = api.json(
            "GET",
            &format!("/v1/vms/{id}/console?lines=10000"),
            None,
            200,
        );
        let behind = console
            .lines
            .iter()
            .find_map(|l| {
                l.split("the clock was ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<i64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{id}: no clock step on the console: {:?}", console.lines));
        assert!(
            behind > 3_500_000,
            "{id}: the restored clock was only {behind} ms behind"
        );
    }
    let random = |id: &str| sh(&api, id, "head -c 32 /dev/urandom | od -An -tx1");
    assert_ne!(random(&b), random(&c));
    let hostname = |id: &str| sh(&api, id, "hostname");
    assert_eq!(hostname(&b), b);
    assert_eq!(hostname(&c), c);
    let machine_id = |id: &str| sh(&api, id, "cat /etc/machine-id");
    assert_ne!(machine_id(&b), machine_id(&c));
    let own = "cat /etc/only-$0; for t in b c; do test -e /etc/only-$t && echo $t; done";
    for (id, tag) in [(&b, "b"), (&c, "c")] {
        let out: ExecResult = api.json(
            "POST",
            &format!("/v1/vms/{id}/exec"),
            Some(&json!({ "argv": ["sh", "-c", own, tag] }).to_string()),
            200,
        );
        assert_eq!(out.stdout, format!("{tag}{tag}\n"), "{id}: {out:?}");
    }

    refused_for_mismatches(&mut host, &api);
    removed_without_leftovers(&mut host, &api, &[source, b, c]);
}

/// Another memory size, and a snapshot of another kernel: 400, naming it.
fn refused_for_mismatches(host: &mut Host, api: &Api) {
    let body = json!({ "from_snapshot": "base", "memory_mib": 512 }).to_string();
    let (status, text) = api.call("POST", "/v1/vms", Some(&body));
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("memory: the snapshot has 256 MiB, this restore 512 MiB"),
        "{text}"
    );

    let store = SqliteStore::open(&host.data().join("hearth.db")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let name = "base".parse().unwrap();
    let mut manifest = rt
        .block_on(store.snapshot(&name))
        .unwrap()
        .unwrap()
        .manifest
        .unwrap();
    manifest.kernel.path = "/boot/another-vmlinuz".into();
    rt.block_on(store.finish_snapshot(&name, &manifest))
        .unwrap();
    let body = json!({ "from_snapshot": "base" }).to_string();
    let (status, text) = api.call("POST", "/v1/vms", Some(&body));
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("kernel: the snapshot has /boot/another-vmlinuz"),
        "{text}"
    );
}

/// In use while its VMs live; then removed with every file.
fn removed_without_leftovers(host: &mut Host, api: &Api, vms: &[String]) {
    let (status, text) = api.call("DELETE", "/v1/snapshots/base", None);
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("in use by"), "{text}");
    for id in vms {
        destroy(host, id);
    }
    let _: Snapshot = api.json("DELETE", "/v1/snapshots/base", None, 200);
    let (status, _) = api.call("GET", "/v1/snapshots/base", None);
    assert_eq!(status, 404);
    let left: Vec<_> = std::fs::read_dir(host.data().join("snapshots"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "snapshot files left: {left:?}");
    host.assert_clean();
}

#[test]
fn vm_a_template_of_an_image_has_no_configuration_and_restores_with_its_own() {
    if hearth_testkit::static_agent().is_none() {
        return;
    }
    let mut host = Host::new(&[]);
    host.start();
    let api = host.api();
    let cli = |host: &Host, args: &[&str]| {
        host.hearth(args)
            .env("HEARTH_URL", &api.url)
            .env("HEARTH_TOKEN", &api.token)
            .output()
            .unwrap()
    };
    let out = cli(&host, &["snapshot", "create", "tmpl", "--image", "minimal"]);
    assert!(out.status.success(), "{}", common::text(&out));
    let snap: Snapshot = api.json("GET", "/v1/snapshots/tmpl", None, 200);
    assert!(snap.manifest.template);
    // The template VM is gone: only the snapshot is left of it.
    let source = snap.manifest.source_vm.to_string();
    host.wait_state(&source, VmState::Destroyed, Duration::from_secs(60));

    let id = restore(&mut host, "tmpl", "t");
    assert_eq!(
        sh(&api, &id, "echo $(cat /etc/only-t) $(hostname)"),
        format!("t {id}")
    );
    let listed = cli(&host, &["snapshot", "list"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("tmpl"),
        "{}",
        common::text(&listed)
    );
    destroy(&mut host, &id);
    let out = cli(&host, &["snapshot", "rm", "tmpl"]);
    assert!(out.status.success(), "{}", common::text(&out));
    host.assert_clean();
}

/// A mapping's fields (kB) in `/proc/PID/smaps`, for the one whose path is
/// `path`; none when the process does not map it.
fn mapping_kb(pid: u32, path: &std::path::Path) -> Option<std::collections::HashMap<String, u64>> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let wanted = path.to_string_lossy();
    let mut lines = smaps.lines();
    lines.find(|l| l.ends_with(wanted.as_ref()) && l.split_whitespace().count() >= 6)?;
    let fields = lines
        .take_while(|l| l.split_whitespace().nth(2) == Some("kB"))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let key = w.next()?.trim_end_matches(':').to_owned();
            Some((key, w.next()?.parse().ok()?))
        })
        .collect();
    Some(fields)
}

fn qemu_pid(host: &Host, id: &str) -> u32 {
    let store = SqliteStore::open(&host.data().join("hearth.db")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let record = rt
        .block_on(hearth_store::Store::vm(&store, &id.parse().unwrap()))
        .unwrap()
        .unwrap();
    record.process.expect("a running VM has a process").pid
}

#[test]
fn vm_a_shared_template_is_one_memory_file_its_restores_map_copy_on_write() {
    if hearth_testkit::static_agent().is_none() {
        return;
    }
    let mut host = Host::new(&[]);
    host.start();
    let api = host.api();
    let body = json!({ "name": "shared", "image": "minimal" }).to_string();
    let snap: Snapshot = api.json("POST", "/v1/snapshots", Some(&body), 201);
    assert!(snap.manifest.template);
    let shared = snap
        .manifest
        .shared_memory
        .clone()
        .expect("a QEMU template has shared memory");
    assert_eq!(shared.capability, "x-ignore-shared");
    let dir = host.data().join("snapshots/shared");
    let memory = dir.join("memory");
    assert_eq!(shared.file.path, memory);
    let ram = u64::from(snap.manifest.memory_mib) << 20;
    assert_eq!(std::fs::metadata(&memory).unwrap().len(), ram);
    // The RAM is not in the state file: it holds device state only.
    let state = std::fs::metadata(dir.join("state")).unwrap().len();
    assert!(
        state < ram / 64,
        "the state file has {state} bytes of a {ram}-byte RAM"
    );

    let marker = |tag: &str| format!("only-in-{tag}-{}", std::process::id());
    let restore_marked = |host: &mut Host, tag: &str| {
        let config = json!({ "files": [{ "path": "/etc/marker", "content": marker(tag) }] });
        let body = json!({ "from_snapshot": "shared", "config": config }).to_string();
        let vm: Vm = host.api().json("POST", "/v1/vms", Some(&body), 201);
        let id = vm.id.to_string();
        host.wait_state(&id, VmState::Ready, READY);
        id
    };
    let started = Instant::now();
    let b = restore_marked(&mut host, "b");
    eprintln!("restore to ready: {:?}", started.elapsed());
    let c = restore_marked(&mut host, "c");

    // The template's memory in both: the boot id the kernel made (the
    // agent read it before the snapshot) and the agent process itself.
    let boot_id = |id: &str| sh(&api, id, "cat /proc/sys/kernel/random/boot_id");
    assert_eq!(boot_id(&b), boot_id(&c));
    let agent_start = |id: &str| {
        sh(
            &api,
            id,
            "cut -d' ' -f22 /proc/$(pidof -s hearth-agent)/stat",
        )
    };
    assert_eq!(agent_start(&b), agent_start(&c));
    let random = |id: &str| sh(&api, id, "head -c 32 /dev/urandom | od -An -tx1");
    assert_ne!(random(&b), random(&c));
    for (id, tag) in [(&b, "b"), (&c, "c")] {
        assert_eq!(sh(&api, id, "cat /etc/marker"), marker(tag), "{id}");
        assert_eq!(sh(&api, id, "hostname"), *id);
    }

    // Both QEMUs map the one file, and share its clean pages: with a copy
    // of its own each, a mapping's Pss would equal its Rss.
    for id in [&b, &c] {
        let kb = mapping_kb(qemu_pid(&host, id), &memory)
            .unwrap_or_else(|| panic!("{id}'s QEMU does not map {}", memory.display()));
        eprintln!("{id}: {kb:?}");
        assert!(kb["Shared_Clean"] > 0, "{id}: {kb:?}");
        assert!(kb["Pss"] * 10 < kb["Rss"] * 9, "{id}: {kb:?}");
    }
    // What the restored guests wrote (their configuration) went to their
    // own copies of the pages, never into the template's file.
    let file = std::fs::read(&memory).unwrap();
    for tag in ["b", "c"] {
        assert!(
            memchr::memmem::find(&file, marker(tag).as_bytes()).is_none(),
            "{tag}'s configuration is in the template's memory file"
        );
    }
    let after = std::fs::metadata(&memory).unwrap();
    assert_eq!(after.len(), shared.file.size);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        after.mtime() * 1_000_000_000 + after.mtime_nsec(),
        shared.file.mtime_ns
    );

    for id in [&b, &c] {
        destroy(&mut host, id);
    }
    let _: Snapshot = api.json("DELETE", "/v1/snapshots/shared", None, 200);
    assert!(!dir.exists(), "{} is left", dir.display());
    host.assert_clean();
}
