//! What a VM's console and its hypervisor's exit say about how it ended.
//! A pure function of the console lines, so it gives the same answer on a
//! running VM and on the log of one that is long gone.

use std::fmt;
use std::time::Duration;

use hearth_types::console::{classify, ConsoleEvent};
use hearth_vmm::ExitInfo;

/// How a VM run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The guest powered itself off; `status` is the requested command's.
    Completed {
        status: Option<i32>,
    },
    Failed(FailReason),
}

/// Why a VM failed, each a one-line reason for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    Timeout {
        secs: u64,
        reached_ready: bool,
    },
    KernelPanic(String),
    RootNotMountable(String),
    MissingModule(String),
    HypervisorFailed(String),
    /// The hypervisor exited cleanly but the guest never said it was done.
    GuestStopped {
        last_line: String,
    },
    /// `hearth vm run` got this signal (`SIGINT`, `SIGTERM`) and stopped
    /// the VM.
    Interrupted(&'static str),
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::Timeout {
                secs,
                reached_ready: false,
            } => {
                write!(
                    f,
                    "timeout: the guest did not finish booting within {secs} s"
                )
            }
            FailReason::Timeout {
                secs,
                reached_ready: true,
            } => {
                write!(
                    f,
                    "timeout: the guest booted but did not power off within {secs} s"
                )
            }
            FailReason::KernelPanic(msg) => write!(f, "kernel panic: {msg}"),
            FailReason::RootNotMountable(why) => write!(f, "root not mountable: {why}"),
            FailReason::MissingModule(name) => {
                write!(
                    f,
                    "kernel module {name} could not be loaded in the initramfs"
                )
            }
            FailReason::HypervisorFailed(detail) => write!(f, "hypervisor error: {detail}"),
            FailReason::GuestStopped { last_line } => {
                write!(
                    f,
                    "the guest stopped without powering off; last console line: {last_line:?}"
                )
            }
            FailReason::Interrupted(signal) => {
                write!(f, "interrupted by {signal}: the VM was stopped")
            }
        }
    }
}

/// What the console said, gathered line by line.
#[derive(Debug, Default, Clone)]
pub struct ConsoleFacts {
    pub ready: bool,
    pub powered_off: bool,
    pub exit_status: Option<i32>,
    pub failure: Option<FailReason>,
    pub last_line: String,
}

impl ConsoleFacts {
    /// Gathers the facts of a whole console log.
    pub fn from_log(text: &str) -> Self {
        let mut facts = ConsoleFacts::default();
        for line in text.lines() {
            facts.observe(line);
        }
        facts
    }

    /// Takes one line into account; returns what it meant, if anything.
    pub fn observe(&mut self, line: &str) -> Option<ConsoleEvent> {
        if !line.trim().is_empty() {
            self.last_line = line.trim_end().to_owned();
        }
        let event = classify(line)?;
        match &event {
            ConsoleEvent::Ready => self.ready = true,
            ConsoleEvent::PowerOff => self.powered_off = true,
            ConsoleEvent::ExitStatus(code) => self.exit_status = Some(*code),
            ConsoleEvent::KernelPanic(msg) => self.fail(FailReason::KernelPanic(msg.clone())),
            ConsoleEvent::RootNotMountable(why) => {
                self.fail(FailReason::RootNotMountable(why.clone()))
            }
            ConsoleEvent::MissingModule(name) => self.fail(FailReason::MissingModule(name.clone())),
        }
        Some(event)
    }

    /// The first failure is the cause; later ones are consequences.
    fn fail(&mut self, reason: FailReason) {
        self.failure.get_or_insert(reason);
    }
}

/// The verdict from the console facts, the hypervisor's exit and whether
/// the run hit its deadline. Guest-reported failures come first: they say
/// why, where a timeout or an exit only says that.
pub fn decide(
    facts: &ConsoleFacts,
    exit: ExitInfo,
    timed_out: Option<Duration>,
    hypervisor_log: &str,
) -> Verdict {
    if let Some(reason) = &facts.failure {
        return Verdict::Failed(reason.clone());
    }
    if let Some(limit) = timed_out {
        return Verdict::Failed(FailReason::Timeout {
            secs: limit.as_secs(),
            reached_ready: facts.ready,
        });
    }
    if !exit.success() {
        let detail = hypervisor_log
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Verdict::Failed(FailReason::HypervisorFailed(
            format!("{exit}: {detail}")
                .trim_end_matches(": ")
                .to_owned(),
        ));
    }
    if !facts.powered_off {
        return Verdict::Failed(FailReason::GuestStopped {
            last_line: facts.last_line.clone(),
        });
    }
    Verdict::Completed {
        status: facts.exit_status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: ExitInfo = ExitInfo {
        code: Some(0),
        signal: None,
    };

    fn verdict(log: &str, exit: ExitInfo, timed_out: Option<u64>) -> Verdict {
        decide(
            &ConsoleFacts::from_log(log),
            exit,
            timed_out.map(Duration::from_secs),
            "",
        )
    }

    #[test]
    fn a_clean_power_off_completes_with_the_command_status() {
        let log =
            "Linux version 6.1\nhearth: ready\nhello\nhearth: exit status 3\nhearth: power off\n";
        assert_eq!(
            verdict(log, CLEAN, None),
            Verdict::Completed { status: Some(3) }
        );
    }

    #[test]
    fn a_panic_is_the_cause_even_when_the_run_also_timed_out() {
        let log = "[ 1.0] Kernel panic - not syncing: Attempted to kill init!\n";
        let v = verdict(log, CLEAN, Some(30));
        assert!(
            matches!(v, Verdict::Failed(FailReason::KernelPanic(ref m)) if m.contains("kill init")),
            "{v:?}"
        );
    }

    #[test]
    fn initramfs_failures_are_named() {
        let log = "hearth: root not mountable: /dev/vda is not an ext4 image\nhearth: power off\n";
        assert_eq!(
            verdict(log, CLEAN, None),
            Verdict::Failed(FailReason::RootNotMountable(
                "/dev/vda is not an ext4 image".into()
            ))
        );
        let log = "hearth: missing module virtio_blk\nhearth: power off\n";
        assert_eq!(
            verdict(log, CLEAN, None),
            Verdict::Failed(FailReason::MissingModule("virtio_blk".into()))
        );
    }

    #[test]
    fn timeouts_say_whether_the_guest_got_up() {
        let v = verdict(
            "booting\n",
            ExitInfo {
                code: None,
                signal: Some(9),
            },
            Some(5),
        );
        assert_eq!(
            v,
            Verdict::Failed(FailReason::Timeout {
                secs: 5,
                reached_ready: false
            })
        );
        assert!(v_reason(&v).contains("did not finish booting within 5 s"));
        let v = verdict(
            "hearth: ready\n",
            ExitInfo {
                code: None,
                signal: Some(9),
            },
            Some(5),
        );
        assert!(v_reason(&v).contains("did not power off"));
    }

    #[test]
    fn a_hypervisor_error_quotes_its_last_log_line() {
        let facts = ConsoleFacts::from_log("");
        let exit = ExitInfo {
            code: Some(1),
            signal: None,
        };
        let v = decide(&facts, exit, None, "qemu: could not open disk\n\n");
        assert_eq!(
            v,
            Verdict::Failed(FailReason::HypervisorFailed(
                "exit status 1: qemu: could not open disk".into()
            ))
        );
    }

    #[test]
    fn stopping_without_the_power_off_marker_is_a_failure() {
        let v = verdict("hearth: ready\nsomething odd\n", CLEAN, None);
        assert_eq!(
            v,
            Verdict::Failed(FailReason::GuestStopped {
                last_line: "something odd".into()
            })
        );
    }

    fn v_reason(v: &Verdict) -> String {
        match v {
            Verdict::Failed(r) => r.to_string(),
            other => panic!("not a failure: {other:?}"),
        }
    }
}
