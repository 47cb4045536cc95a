//! Persistent VMs end to end: a real `hearth serve` with a real SQLite
//! store, real VMs under QEMU from the `minimal` image with the guest
//! agent. A file written through exec survives stop and start and a
//! restart of the server; kill -9 of the hypervisor restarts the VM under
//! `on-failure` with an event that carries the diagnosis, and leaves it
//! failed and explained under `never`; an idle VM is stopped; `rm` removes
//! the disk and leaves nothing. The grace period is one second throughout,
//! so a cleanup that wrongly touched a kept VM would be seen.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::serve::{signal, Host};
use common::text;
use hearth_types::api::{Diagnosis, Vm, VmEvent};
use hearth_types::{FailureCode, RestartPolicy, VmState};

/// Generous: two booting tests share two cores under TCG.
const BOOT: Duration = Duration::from_secs(150);
const STOP: Duration = Duration::from_secs(30);
const FILE: &str = "/keep.txt";

fn host() -> Host {
    assert!(
        hearth_testkit::static_agent().is_some(),
        "these tests need the static guest agent (static glibc to build it): see docs/agent.md"
    );
    let mut host = Host::new(&["--grace", "1"]);
    host.start();
    host
}

/// `hearth vm create --persistent ARGS --wait ready`: the id.
fn create_kept(host: &mut Host, extra: &[&str]) -> String {
    let mut args = vec!["--persistent", "--wait", "ready", "--timeout", "150"];
    args.extend_from_slice(extra);
    host.create(&args)
}

/// `hearth vm exec ID -- sh -c SCRIPT`, which must succeed: its stdout.
fn sh(host: &mut Host, id: &str, script: &str) -> String {
    let out = host.vm_cli(&["exec", id, "--", "sh", "-c", script]);
    assert!(out.status.success(), "exec {script:?}: {}", text(&out));
    String::from_utf8(out.stdout).expect("utf-8")
}

fn events(host: &mut Host, id: &str) -> Vec<VmEvent> {
    host.api()
        .json("GET", &format!("/v1/vms/{id}/events"), None, 200)
}

/// The kept disk: QEMU's encrypted qcow2 under `hearth serve`.
fn disk(host: &Host, id: &str) -> PathBuf {
    host.vms_dir().join(id).join("disk.qcow2")
}

/// The VM stays in `state` for `span` (ticks of the reconcilers pass).
fn stays(host: &mut Host, id: &str, state: VmState, span: Duration) -> Vm {
    let until = Instant::now() + span;
    loop {
        let vm = host.vm(id);
        assert_eq!(vm.state, state, "{vm:?}\n--- serve\n{}", host.serve_logs());
        if Instant::now() > until {
            return vm;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_file_survives_stop_start_and_serve_restarts_and_rm_removes_the_disk() {
    let mut host = host();
    let id = create_kept(&mut host, &["--disk-mib", "256"]);
    let vm = host.vm(&id);
    assert!(vm.persistent && vm.disk_mib == Some(256), "{vm:?}");
    // No sync here: the stop itself must get the write onto the disk.
    sh(&mut host, &id, &format!("echo kept-across-boots > {FILE}"));

    host.vm_ok(&["stop", &id]);
    host.wait_state(&id, VmState::Stopped, STOP);
    assert_eq!(host.hypervisor_of(&id), None);
    // Well past the grace period and across a restart of the server:
    // kept stopped, with its disk.
    stays(&mut host, &id, VmState::Stopped, Duration::from_secs(2));
    assert!(host.stop_serve().success(), "{}", host.serve_logs());
    host.start();
    let vm = stays(&mut host, &id, VmState::Stopped, Duration::from_secs(2));
    assert_eq!(vm.cleanup_after, None, "{vm:?}");
    assert!(disk(&host, &id).is_file(), "the disk went with the stop");

    let started = Instant::now();
    host.vm_ok(&["start", &id]);
    host.wait_state(&id, VmState::Ready, BOOT);
    eprintln!("start to ready: {:?}", started.elapsed());
    assert_eq!(
        sh(&mut host, &id, &format!("cat {FILE}")),
        "kept-across-boots\n"
    );
    sh(&mut host, &id, &format!("echo second-boot >> {FILE}"));

    // A restart of the server adopts it, running, with its disk.
    let pid = host.hypervisor_of(&id).expect("QEMU");
    assert!(host.stop_serve().success(), "{}", host.serve_logs());
    host.start();
    stays(&mut host, &id, VmState::Ready, Duration::from_secs(2));
    assert_eq!(host.hypervisor_of(&id), Some(pid));
    let text = sh(&mut host, &id, &format!("cat {FILE}"));
    assert_eq!(text, "kept-across-boots\nsecond-boot\n");

    let said: Vec<String> = events(&mut host, &id)
        .into_iter()
        .map(|e| e.message)
        .collect();
    for want in [
        "made its persistent disk (256 MiB)",
        "stopping on request",
        "starting on request",
    ] {
        assert!(said.iter().any(|m| m == want), "no {want:?} in {said:#?}");
    }

    host.vm_ok(&["rm", &id]);
    host.wait_state(&id, VmState::Destroyed, STOP);
    assert!(host
        .data()
        .join("archives")
        .join(&id)
        .join("console.log")
        .is_file());
    assert!(host
        .data()
        .join("archives")
        .join(&id)
        .join("console.previous.log")
        .is_file());
    host.assert_clean();
}

#[test]
fn kill_9_restarts_it_under_on_failure_and_leaves_it_failed_and_explained_under_never() {
    let mut host = host();
    let again = create_kept(&mut host, &["--restart", "on-failure"]);
    let kept = create_kept(&mut host, &[]);
    sh(
        &mut host,
        &again,
        &format!("echo before-the-kill > {FILE} && sync"),
    );

    let pid = host.hypervisor_of(&again).expect("QEMU");
    signal(pid, libc::SIGKILL);
    let killed = Instant::now();
    host.wait_vm(&again, Duration::from_secs(20), |vm| {
        vm.state != VmState::Ready
    });
    let vm = host.wait_vm(&again, BOOT, |vm| {
        vm.state == VmState::Ready && vm.restarts == 1
    });
    eprintln!(
        "kill -9 to ready again under on-failure: {:?}",
        killed.elapsed()
    );
    assert_eq!((vm.failure, vm.restart_at), (None, None));
    assert_ne!(host.hypervisor_of(&again), Some(pid));
    let said: Vec<String> = events(&mut host, &again)
        .into_iter()
        .map(|e| e.message)
        .collect();
    let restart = said
        .iter()
        .find(|m| m.starts_with("restarting"))
        .unwrap_or_else(|| panic!("no restart event in {said:#?}"));
    assert!(
        restart.contains("restart policy on-failure, restart 1")
            && restart.contains("hypervisor_exited")
            && restart.contains("; diagnosis: "),
        "{restart}"
    );
    assert!(
        said.iter()
            .any(|m| m.starts_with("restart 1 planned in 1.0 s")),
        "{said:#?}"
    );
    assert_eq!(
        sh(&mut host, &again, &format!("cat {FILE}")),
        "before-the-kill\n"
    );

    let pid = host.hypervisor_of(&kept).expect("QEMU");
    signal(pid, libc::SIGKILL);
    host.wait_state(&kept, VmState::Failed, Duration::from_secs(20));
    let vm = stays(&mut host, &kept, VmState::Failed, Duration::from_secs(4));
    assert_eq!(vm.restart, RestartPolicy::Never);
    assert_eq!(
        vm.failure.as_ref().map(|f| f.code),
        Some(FailureCode::HypervisorExited)
    );
    assert_eq!((vm.restart_at, vm.cleanup_after), (None, None), "{vm:?}");
    assert!(disk(&host, &kept).is_file());
    let said: Vec<String> = events(&mut host, &kept)
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert!(
        said.iter()
            .any(|m| m.starts_with("kept failed: restart policy never")),
        "{said:#?}"
    );
    let diagnosis: Diagnosis =
        host.api()
            .json("GET", &format!("/v1/vms/{kept}/diagnosis"), None, 200);
    assert!(!diagnosis.findings.is_empty(), "{diagnosis:?}");
    let why = host.vm_ok(&["show", &kept]);
    assert!(
        why.contains("hypervisor_exited") && why.contains("restart never"),
        "{why}"
    );

    for id in [&again, &kept] {
        host.vm_ok(&["rm", id]);
        host.wait_state(id, VmState::Destroyed, STOP);
    }
    host.assert_clean();
}

#[test]
fn an_idle_vm_is_stopped_and_bad_requests_are_refused_with_the_fix() {
    let mut host = host();
    let api = host.api();
    let bad = [
        (
            r#"{"persistent":true,"disk_mib":16}"#,
            "disk_mib 16 is out of range",
        ),
        (
            r#"{"persistent":true,"disk_mib":999999}"#,
            "give 64 to 262144 MiB",
        ),
        (
            r#"{"persistent":true,"restart":"sometimes"}"#,
            "field `restart`",
        ),
        (r#"{"restart":"always"}"#, "add \\\"persistent\\\": true"),
        (
            r#"{"persistent":true,"idle_stop_secs":1}"#,
            "idle_stop_secs 1 is out of range",
        ),
    ];
    for (body, want) in bad {
        let (status, text) = api.call("POST", "/v1/vms", Some(body));
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(want), "{body}: {text}");
    }
    assert!(host.vm_dirs().is_empty(), "a refused create left files");

    let id = create_kept(&mut host, &["--idle-stop", "5"]);
    sh(&mut host, &id, "true");
    let used = Instant::now();
    host.wait_state(&id, VmState::Stopped, Duration::from_secs(60));
    let idle = used.elapsed();
    eprintln!("last use to idle stop (idle_stop_secs 5): {idle:?}");
    assert!(idle >= Duration::from_secs(5), "stopped after {idle:?}");
    let said: Vec<String> = events(&mut host, &id)
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert!(
        said.iter()
            .any(|m| m.starts_with("stopping: idle for") && m.contains("idle_stop_secs 5")),
        "{said:#?}"
    );
    assert!(disk(&host, &id).is_file());

    let plain = host.create(&["--", "sleep", "600"]);
    let (status, text) = api.call("POST", &format!("/v1/vms/{plain}/start"), None);
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("is not persistent") && text.contains("--persistent"),
        "{text}"
    );

    for id in [&id, &plain] {
        host.vm_ok(&["rm", id]);
        host.wait_state(id, VmState::Destroyed, STOP);
    }
    host.assert_clean();
}

#[test]
fn an_always_vm_that_was_running_when_the_host_went_down_starts_again() {
    let mut host = host();
    let id = create_kept(&mut host, &["--restart", "always"]);
    sh(
        &mut host,
        &id,
        &format!("echo before-the-outage > {FILE} && sync"),
    );

    // The host goes down: the server, then its hypervisors.
    let pid = host.hypervisor_of(&id).expect("QEMU");
    assert!(host.stop_serve().success(), "{}", host.serve_logs());
    signal(pid, libc::SIGKILL);
    host.start();
    let vm = host.wait_vm(&id, BOOT, |vm| {
        vm.state == VmState::Ready && vm.restarts == 1
    });
    assert_eq!(vm.failure, None);
    let said: Vec<String> = events(&mut host, &id)
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert!(
        said.iter().any(
            |m| m.starts_with("restarting (restart policy always, restart 1)")
                && m.contains("after a controller restart")
        ),
        "{said:#?}"
    );
    assert_eq!(
        sh(&mut host, &id, &format!("cat {FILE}")),
        "before-the-outage\n"
    );

    host.vm_ok(&["rm", &id]);
    host.wait_state(&id, VmState::Destroyed, STOP);
    host.assert_clean();
}
