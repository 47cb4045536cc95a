//! `hearth serve` as a process, with real VMs under QEMU and a real SQLite
//! store: hypervisors and the controller killed with SIGKILL, boot
//! timeouts, grace periods and holds, a clean stop and adoption, all driven
//! through the `hearth vm` CLI. Every wait has a deadline; every test ends
//! by checking that nothing is left.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::serve::{free_port, is_running, signal, Host};
use common::text;
use hearth_types::api::{Vm, VmEvent};
use hearth_types::{FailureCode, VmState};

/// Generous: two booting tests share two cores under TCG.
const BOOT: Duration = Duration::from_secs(150);
/// How long destroying a VM may take once it is due.
const DESTROY: Duration = Duration::from_secs(30);
/// The guest prints a numbered line every second and never ends.
const TICKER: &[&str] = &[
    "--",
    "sh",
    "-c",
    "i=0; while :; do echo tick $i; i=$((i+1)); sleep 1; done",
];

fn failure_code(vm: &Vm) -> Option<FailureCode> {
    vm.failure.as_ref().map(|f| f.code)
}

/// `hearth vm create --wait ready`: the id it printed.
fn create_ready(host: &mut Host, extra: &[&str]) -> String {
    let mut args = vec!["create", "--wait", "ready", "--timeout", "150"];
    args.extend_from_slice(extra);
    let out = host.vm_cli(&args);
    assert!(
        out.status.success(),
        "{}\n--- serve\n{}",
        text(&out),
        host.serve_logs()
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// `hearth vm rm`, then waits for `destroyed`.
fn remove(host: &mut Host, id: &str) -> Vm {
    host.vm_ok(&["rm", id]);
    host.wait_state(id, VmState::Destroyed, DESTROY)
}

/// The console as `hearth vm console ID` prints it.
fn console(host: &mut Host, id: &str) -> String {
    host.vm_ok(&["console", id, "--lines", "10000"])
}

#[test]
fn kill_9_of_a_hypervisor_fails_its_vm_within_2_s_and_keeps_its_console() {
    let mut host = Host::new(&["--grace", "120"]);
    host.start();
    let id = create_ready(&mut host, &[]);
    let pid = host.hypervisor_of(&id).expect("the VM's QEMU process");

    signal(pid, libc::SIGKILL);
    let killed = Instant::now();
    let vm = host.wait_vm(&id, Duration::from_secs(10), |vm| {
        vm.state != VmState::Ready
    });
    let latency = killed.elapsed();
    eprintln!("kill -9 of the hypervisor detected in {latency:?}");
    assert_eq!(vm.state, VmState::Failed, "{vm:?}");
    assert_eq!(failure_code(&vm), Some(FailureCode::HypervisorExited));
    assert!(
        latency < Duration::from_secs(2),
        "detection took {latency:?}"
    );

    let shown = host.vm_ok(&["show", &id]);
    assert!(shown.contains("hypervisor_exited"), "{shown}");
    let log = console(&mut host, &id);
    assert!(
        log.contains("Linux version") && log.contains("hearth: ready"),
        "{log}"
    );

    let gone = remove(&mut host, &id);
    assert_eq!(failure_code(&gone), Some(FailureCode::HypervisorExited));
    assert!(console(&mut host, &id).contains("hearth: ready"));
    host.assert_clean();
}

/// The VM's row as a controller killed right after spawning its hypervisor
/// leaves it: still `preparing`, with the process recorded (the create
/// step records it the moment it is spawned).
fn as_if_killed_right_after_spawn(host: &Host, id: &str) {
    use hearth_store::{SqliteStore, StateChange, Store};

    let store = SqliteStore::open(&host.data().join("hearth.db")).expect("the store");
    let id: hearth_types::VmId = id.parse().expect("a VM id");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let row = store.vm(&id).await.expect("read").expect("the VM");
        assert!(row.process.is_some(), "the process is recorded: {row:?}");
        let back = StateChange::to(VmState::Preparing, hearth_types::Timestamp::now(), "test");
        store
            .transition(&id, row.vm.state, &back)
            .await
            .expect("back to preparing");
    });
}

#[test]
fn a_controller_killed_right_after_spawning_a_hypervisor_adopts_the_vm_after_a_restart() {
    let mut host = Host::new(&["--grace", "120"]);
    host.start();
    let id = host.create(&[]);
    host.wait_state(&id, VmState::Booting, BOOT);
    let pid = host.hypervisor_of(&id).expect("the VM's QEMU process");

    host.kill_serve();
    assert!(is_running(pid), "the hypervisor died with its controller");
    as_if_killed_right_after_spawn(&host, &id);
    host.start();
    let vm = host.wait_vm(&id, BOOT, |vm| {
        matches!(vm.state, VmState::Ready | VmState::Failed)
    });
    assert_eq!(
        vm.state,
        VmState::Ready,
        "adopted, not failed as lost: {:?}\n{}",
        vm.failure,
        host.serve_logs()
    );
    assert_eq!(host.hypervisor_of(&id), Some(pid), "adopted, not restarted");
    assert!(console(&mut host, &id).contains("hearth: ready"));
    let events = host.vm_ok(&["events", &id]);
    assert!(
        events.contains("(adopted after a controller restart)"),
        "{events}"
    );

    remove(&mut host, &id);
    assert!(!is_running(pid), "QEMU {pid} outlived its destroyed VM");
    host.assert_clean();
    let events: Vec<VmEvent> = host
        .api()
        .json("GET", &format!("/v1/vms/{id}/events"), None, 200);
    assert_eq!(
        events.last().map(|e| e.state),
        Some(VmState::Destroyed),
        "{events:?}"
    );
}

#[test]
fn a_vm_never_ready_fails_with_boot_timeout_and_is_kept_for_its_grace_or_while_held() {
    let grace = Duration::from_secs(6);
    let mut host = Host::new(&["--grace", "6"]);
    host.start();
    let held = host.create(&["--readiness-timeout", "2"]);
    host.vm_ok(&["hold", &held]);
    let out = host.vm_cli(&["create", "--wait", "ready", "--readiness-timeout", "2"]);
    let kept = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let failed = host.wait_state(&kept, VmState::Failed, Duration::from_secs(30));
    assert_eq!(
        failure_code(&failed),
        Some(FailureCode::BootTimeout),
        "{failed:?}"
    );
    // `--wait` says why, as `hearth vm why` would first, and so does the
    // server's log.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("{kept} failed (boot_timeout)"))
            && said.contains("hearth: cause: ")
            && said.contains("hearth: fix: "),
        "{said}"
    );
    let logged = host.serve_logs();
    assert!(
        logged.lines().any(|l| l.contains("VM failed")
            && l.contains(&kept)
            && l.contains("boot_timeout")
            && l.contains("reason=")),
        "{logged}"
    );
    let held_failed = host.wait_state(&held, VmState::Failed, Duration::from_secs(30));
    assert_eq!(failure_code(&held_failed), Some(FailureCode::BootTimeout));
    assert!(held_failed.held);

    // Within the grace: listed, inspectable, its hypervisor gone. (Its
    // console may be short: QEMU ran for two seconds under TCG.)
    let list: Vec<Vm> = serde_json::from_str(&host.vm_ok(&["list", "--json"])).expect("JSON");
    assert!(list
        .iter()
        .any(|vm| vm.id.as_str() == kept && vm.state == VmState::Failed));
    let table = host.vm_ok(&["list"]);
    assert!(
        table.contains(&kept) && table.contains("boot_timeout"),
        "{table}"
    );
    let live_console = console(&mut host, &kept);
    assert!(host.vm_dirs().iter().any(|d| d.ends_with(&kept)));
    assert_eq!(host.hypervisor_of(&kept), None, "a timed-out VM still runs");

    // A held VM cannot be removed by mistake.
    let refused = host.vm_cli(&["rm", &held]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("release"),
        "{}",
        text(&refused)
    );

    // After the grace: cleaned, its console archived and still readable.
    let cleaned = host.wait_state(&kept, VmState::Destroyed, grace + DESTROY);
    let due = failed.cleanup_after.expect("a cleanup time");
    assert!(cleaned.updated_at >= due, "cleaned before its grace ended");
    let archived = host.vm_cli(&["console", &kept, "--lines", "10000"]);
    assert!(archived.status.success(), "{}", text(&archived));
    assert_eq!(String::from_utf8_lossy(&archived.stdout), live_console);
    assert!(String::from_utf8_lossy(&archived.stderr).contains("archived"));

    // The held one outlives its grace...
    let held_due = held_failed.cleanup_after.expect("a cleanup time");
    while hearth_types::Timestamp::now() < held_due.plus(Duration::from_secs(3)) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let still = host.vm(&held);
    assert_eq!(still.state, VmState::Failed, "a held VM was cleaned");
    let held_console = console(&mut host, &held);
    assert!(host.vm_dirs().iter().any(|d| d.ends_with(&held)));

    // ...and is cleaned once released and the grace has passed again.
    host.vm_ok(&["release", &held]);
    let released = Instant::now();
    let gone = host.wait_state(&held, VmState::Destroyed, grace + DESTROY);
    eprintln!("released VM cleaned {:?} after release", released.elapsed());
    assert!(!gone.held);
    let archived = host.vm_cli(&["console", &held, "--lines", "10000"]);
    assert!(archived.status.success(), "{}", text(&archived));
    assert_eq!(String::from_utf8_lossy(&archived.stdout), held_console);
    host.assert_clean();
}

#[test]
fn the_cli_boots_inspects_and_removes_a_vm_and_a_restarted_serve_adopts_it() {
    let mut host = Host::new(&["--grace", "120"]);
    host.start();

    let mut args = vec!["create", "--wait", "ready", "--timeout", "150"];
    args.extend_from_slice(TICKER);
    let out = host.vm_cli(&args);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        host.serve_logs()
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("{id} is ready after")), "{said}");

    let events: Vec<VmEvent> =
        serde_json::from_str(&host.vm_ok(&["events", &id, "--json"])).expect("JSON");
    let states: Vec<VmState> = events.iter().map(|e| e.state).collect();
    let order = [VmState::Preparing, VmState::Booting, VmState::Ready];
    let positions: Vec<usize> = order
        .iter()
        .map(|s| states.iter().position(|x| x == s).expect("each transition"))
        .collect();
    assert!(positions.is_sorted(), "{states:?}");
    let events_text = host.vm_ok(&["events", &id]);
    assert!(events_text.contains("ready"), "{events_text}");
    let shown = host.vm_ok(&["show", &id]);
    assert!(shown.contains(&id) && shown.contains("ready"), "{shown}");
    let hv_log = host.vm_cli(&["logs", &id]);
    assert!(hv_log.status.success(), "{}", text(&hv_log));

    // Errors come from the server, in its words.
    let missing = host.vm_cli(&["show", "vm-000000000000"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no VM vm-000000000000"));
    let no_token = host
        .hearth(&["vm", "list", "--url", &host.serve().url.clone()])
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("hearth token create"));

    // One server per data directory.
    let started = Instant::now();
    let second = host
        .hearth(&["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert!(!second.status.success(), "{}", text(&second));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the second serve lingered"
    );
    let why = String::from_utf8_lossy(&second.stderr);
    assert!(
        why.contains("already serves") && why.contains(&format!("pid {}", host.serve_pid())),
        "{why}"
    );

    // SIGTERM: serve exits 0 and the VM keeps running.
    let pid = host.hypervisor_of(&id).expect("QEMU");
    let url = host.serve().url.clone();
    let status = host.stop_serve();
    assert!(
        status.success(),
        "serve exited with {status}\n{}",
        host.serve_logs()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(is_running(pid), "SIGTERM to serve took the VM down");
    let down = host
        .hearth(&["vm", "list", "--url", &url, "--token", "hth_x"])
        .output()
        .expect("runs");
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("is `hearth serve` running at"),
        "{}",
        text(&down)
    );

    // The next serve adopts it: still ready, same hypervisor, console live.
    host.start();
    for _ in 0..10 {
        let vm = host.vm(&id);
        assert_eq!(vm.state, VmState::Ready, "{vm:?}\n{}", host.serve_logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(host.hypervisor_of(&id), Some(pid));
    let before = last_tick(&console(&mut host, &id)).expect("ticks in the console");
    let lines = follow_console(&mut host, &id);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = None;
    while Instant::now() < deadline {
        let Ok(line) = lines.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        if let Some(n) = last_tick(&line).filter(|n| *n > before + 1) {
            seen = Some(n);
            break;
        }
    }
    assert!(
        seen.is_some(),
        "no new console line followed after tick {before}"
    );

    remove(&mut host, &id);
    host.assert_clean();
}

/// The number of the last `tick N` line in `text`.
fn last_tick(text: &str) -> Option<u64> {
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("tick ")?.trim().parse().ok())
}

/// `hearth vm console ID --follow` in the background: its lines.
fn follow_console(host: &mut Host, id: &str) -> mpsc::Receiver<String> {
    let token = host.admin_token();
    let mut child = host
        .hearth(&["vm", "console", id, "--follow", "--lines", "5"])
        .env("HEARTH_URL", &host.serve().url)
        .env("HEARTH_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("hearth vm console runs");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    });
    rx
}
