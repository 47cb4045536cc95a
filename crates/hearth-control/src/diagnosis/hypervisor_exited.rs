//! The hypervisor side of a failure.
//!
//! `hypervisor_exited`: the hypervisor process ended while the VM was
//! meant to run — it crashed, was killed, or the guest reset itself
//! without powering off through hearth. Its exit, the last lines of its own
//! log and the boot stage the console reached say which.
//!
//! `start_failed` and `lost`: the VM never ran (a create step failed), or
//! the controller restarted and could not find its hypervisor again. The
//! recorded failure is the evidence.

use hearth_types::api::Finding;
use hearth_types::FailureCode;

use super::stage::Stage;
use super::{finding, Input};

/// Hypervisor log lines quoted.
const LOG_LINES: usize = 5;
/// Console lines quoted.
const CONSOLE_LINES: usize = 3;
/// Below this, a kernel that never prints was likely short of memory:
/// Debian's cloud kernel with hearth's initramfs resets silently in 64 MiB
/// and boots in 96.
const TIGHT_MEMORY_MIB: u32 = 96;

pub(super) fn check(input: &Input) -> Vec<Finding> {
    let ev = input.evidence;
    let crashed = ev.exit.is_some_and(|e| !e.success());
    if !crashed && input.failure_code() != Some(FailureCode::HypervisorExited) {
        return Vec::new();
    }
    // Killed at its memory limit: `memory_limit` says so.
    if ev.isolation.as_ref().is_some_and(|r| r.oom_killed()) {
        return Vec::new();
    }
    let stage = Stage::of(&input.console);
    let how = match ev.exit {
        Some(e) if e.success() => {
            "the hypervisor exited cleanly but the guest never powered off through hearth: \
             it reset or rebooted by itself"
                .to_owned()
        }
        Some(e) if e.code.is_none() && e.signal.is_some() => {
            format!("the hypervisor was {e} while the VM ran")
        }
        Some(e) => format!("the hypervisor ended with {e} while the VM ran"),
        None => format!(
            "the hypervisor ended while the VM ran: {}",
            ev.failure.as_ref().map_or("", |f| f.message.as_str())
        ),
    };
    let mut evidence = input.hypervisor.tail(LOG_LINES);
    evidence.extend(input.console.tail(CONSOLE_LINES));
    vec![finding(
        "hypervisor_exited",
        format!("{how}; by then {}", stage.describe()),
        evidence,
        fix(input, stage),
    )]
}

fn fix(input: &Input, stage: Stage) -> String {
    let ev = input.evidence;
    let memory = ev.memory_mib.filter(|&m| m < TIGHT_MEMORY_MIB);
    let signal = ev
        .exit
        .and_then(|e| e.code.is_none().then_some(e.signal).flatten());
    if let (Some(m), true) = (memory, stage <= Stage::Loader) {
        return format!(
            "give the VM more memory (--memory 128 or more, or memory_mib in the API): with \
             {m} MiB the kernel and its initramfs do not fit, and the guest resets before the \
             kernel prints anything"
        );
    }
    if let Some(sig) = signal {
        return format!(
            "something outside the guest killed the hypervisor (signal {sig}): the host's OOM \
             killer (check the host's memory and `dmesg`) or a person; the guest is not at \
             fault"
        );
    }
    if stage <= Stage::Loader {
        return "the kernel never ran: check the kernel file (`hearth kernel inspect FILE`) \
                and the hypervisor's last lines (in the evidence); `hearth doctor` checks the host"
            .to_owned();
    }
    if ev.exit.is_some_and(|e| e.success()) {
        return "the guest reset itself: its last console lines show what it was doing (a \
                `reboot` inside the guest, or a crash that reset the CPU)"
            .to_owned();
    }
    "the hypervisor's last lines (in the evidence) say why it stopped; `hearth doctor` checks that \
     this host can run it"
        .to_owned()
}

pub(super) fn check_not_started(input: &Input) -> Vec<Finding> {
    let Some(failure) = &input.evidence.failure else {
        return Vec::new();
    };
    let (rule, cause, fix) = match failure.code {
        FailureCode::StartFailed => (
            "start_failed",
            format!("the VM never started: {}", failure.message),
            "the message names the step that failed and why; `hearth doctor` checks the \
             host (hypervisor, KVM, kernel and images)",
        ),
        FailureCode::Lost => (
            "lost",
            format!(
                "the controller restarted and could not find the VM's hypervisor again: {}",
                failure.message
            ),
            "the VM is gone; its logs up to then are kept. Create it again",
        ),
        _ => return Vec::new(),
    };
    let mut evidence = input.hypervisor.tail(LOG_LINES);
    evidence.push(failure.message.clone());
    vec![finding(rule, cause, evidence, fix)]
}

#[cfg(test)]
mod tests {
    use hearth_types::{Failure, FailureCode};
    use hearth_vmm::ExitInfo;

    use super::super::{diagnose, Evidence};

    #[test]
    fn a_guest_that_resets_before_the_kernel_prints_lacks_memory() {
        // From a real run with `--memory 64`: the loader's line, then a reset.
        let ev = Evidence {
            console: "Probing EDD (edd=off to disable)... ok\n".into(),
            exit: Some(ExitInfo {
                code: Some(0),
                signal: None,
            }),
            failure: Some(Failure {
                code: FailureCode::HypervisorExited,
                message: "the guest stopped without powering off".into(),
            }),
            memory_mib: Some(64),
            ..Evidence::default()
        };
        let f = diagnose(&ev);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].rule, "hypervisor_exited");
        assert!(
            f[0].cause.contains("reset or rebooted by itself"),
            "{:?}",
            f[0]
        );
        assert!(f[0].cause.contains("the kernel itself printed nothing"));
        assert_eq!(f[0].evidence, ["Probing EDD (edd=off to disable)... ok"]);
        assert!(f[0].fix.contains("--memory 128"), "{:?}", f[0]);
    }

    #[test]
    fn a_crashed_hypervisor_quotes_its_log() {
        let ev = Evidence {
            console: "[    1.2] Linux version 6.1.0\n".into(),
            hypervisor_log: "qemu-system-x86_64: terminating on signal 15 from pid 4242\n".into(),
            exit: Some(ExitInfo {
                code: Some(1),
                signal: None,
            }),
            ..Evidence::default()
        };
        let f = diagnose(&ev);
        assert_eq!(f[0].rule, "hypervisor_exited");
        assert!(
            f[0].cause.contains("ended with exit status 1"),
            "{:?}",
            f[0]
        );
        assert!(f[0].evidence[0].contains("terminating on signal 15"));
        assert!(f[0].fix.contains("hearth doctor"));
    }

    #[test]
    fn a_recorded_exit_from_the_controller_is_enough() {
        let ev = Evidence {
            console: "[    0.0] Linux version 6.1.0\n[    5.4] Run /init as init process\n".into(),
            failure: Some(Failure {
                code: FailureCode::HypervisorExited,
                message: "the hypervisor ended (killed by signal 9) while the VM was booting; last console line: \"[    5.4] Run /init as init process\"".into(),
            }),
            ..Evidence::default()
        };
        let f = diagnose(&ev);
        assert!(f[0].cause.contains("killed by signal 9"), "{:?}", f[0]);
        assert!(f[0].cause.contains("hearth's initramfs was running"));
    }

    #[test]
    fn a_failed_create_step_is_explained() {
        let ev = Evidence {
            failure: Some(Failure {
                code: FailureCode::StartFailed,
                message: "create step `assets` failed: image \"debian\" cannot be used: no image debian: build it with `hearth image build debian`".into(),
            }),
            ..Evidence::default()
        };
        let f = diagnose(&ev);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].rule, "start_failed");
        assert!(f[0].cause.contains("hearth image build debian"));
    }
}
