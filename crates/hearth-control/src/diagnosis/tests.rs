//! The engine as a whole: healthy guests give nothing, causes come before
//! their consequences. Each rule's own tests are in its file.

use hearth_types::{Failure, FailureCode};
use hearth_vmm::ExitInfo;

use super::{diagnose, Evidence};

/// Real console logs of guests that booted, ran `true` and powered off.
const MINIMAL_HEALTHY: &str = include_str!("testdata/minimal-healthy.log");
const DEBIAN_HEALTHY: &str = include_str!("testdata/debian-healthy.log");

fn rules(ev: &Evidence) -> Vec<String> {
    diagnose(ev).into_iter().map(|f| f.rule).collect()
}

#[test]
fn healthy_guests_give_no_findings() {
    for console in [MINIMAL_HEALTHY, DEBIAN_HEALTHY] {
        let ev = Evidence {
            console: console.into(),
            exit: Some(ExitInfo {
                code: Some(0),
                signal: None,
            }),
            memory_mib: Some(256),
            events: vec![
                "booting: qemu pid 4242".into(),
                "ready: the guest reported readiness".into(),
            ],
            ..Evidence::default()
        };
        assert_eq!(diagnose(&ev), [], "{}", &console[..80]);
    }
    assert_eq!(diagnose(&Evidence::default()), []);
}

#[test]
fn every_finding_has_a_cause_evidence_and_a_fix() {
    let ev = Evidence {
        console: include_str!("testdata/debian-units.log").into(),
        ..Evidence::default()
    };
    let found = diagnose(&ev);
    assert!(found.len() >= 3, "{found:?}");
    for f in &found {
        assert!(
            !f.rule.is_empty() && !f.cause.is_empty() && !f.fix.is_empty(),
            "{f:?}"
        );
        assert!(!f.evidence.is_empty(), "{f:?}");
        assert!(
            f.evidence
                .iter()
                .all(|l| !l.contains('\u{1b}') && !l.contains('\r')),
            "{f:?}"
        );
    }
}

#[test]
fn the_cause_comes_before_its_consequences() {
    // A service that needs a CPU feature crash-loops, fails, and the guest
    // never gets ready.
    let console = "[    0.0] Linux version 6.1.0\n\
        [    5.4] Run /init as init process\n\
        [    5.8] systemd[1]: Detected architecture x86-64.\n\
        [   14.1] systemd[1]: Started agent.service - OAuth agent.\n\
        [   14.2] traps: node[209] trap invalid opcode ip:7f3c2a1b4e10 sp:7ffd4b2a9c80 error:0 in node[7f3c29e00000+2400000]\n\
        [   14.2] systemd[1]: agent.service: Main process exited, code=killed, status=4/ILL\n\
        [   15.4] systemd[1]: agent.service: Scheduled restart job, restart counter is at 1.\n\
        [   15.5] systemd[1]: agent.service: Main process exited, code=killed, status=4/ILL\n\
        [   16.8] systemd[1]: agent.service: Scheduled restart job, restart counter is at 2.\n";
    let ev = Evidence {
        console: console.into(),
        failure: Some(Failure {
            code: FailureCode::BootTimeout,
            message: "not ready within 120 s".into(),
        }),
        ..Evidence::default()
    };
    assert_eq!(
        rules(&ev),
        ["killed_by_sigill", "crash_loop", "never_ready"]
    );
}

#[test]
fn out_of_memory_comes_before_the_panic_it_caused() {
    let console =
        "[    9.0] Out of memory: Killed process 1 (init) total-vm:4000kB, anon-rss:100kB\n\
        [    9.1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009\n";
    let ev = Evidence {
        console: console.into(),
        failure: Some(Failure {
            code: FailureCode::KernelPanic,
            message: "kernel panic".into(),
        }),
        ..Evidence::default()
    };
    assert_eq!(rules(&ev), ["out_of_memory", "kernel_panic"]);
}

#[test]
fn a_timeout_stop_is_not_a_hypervisor_crash() {
    // The controller recorded boot_timeout and stopped the VM itself.
    let ev = Evidence {
        console: "[    0.0] Linux version 6.1.0\n".into(),
        failure: Some(Failure {
            code: FailureCode::BootTimeout,
            message: "not ready within 3 s".into(),
        }),
        ..Evidence::default()
    };
    assert_eq!(rules(&ev), ["never_ready"]);
}
