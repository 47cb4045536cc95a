//! `never_ready`: the VM failed with `boot_timeout` — it did not say
//! `hearth: ready` in time. The console's last lines and the boot stage it
//! reached (kernel, initramfs, the image's init) tell where it stopped.

use hearth_types::api::Finding;
use hearth_types::FailureCode;

use super::agent_never_connected;
use super::stage::Stage;
use super::{finding, Input};

/// Console lines quoted.
const LAST_LINES: usize = 10;

pub(super) fn check(input: &Input) -> Vec<Finding> {
    if input.failure_code() != Some(FailureCode::BootTimeout)
        || waits_on_a_service(input)
        || agent_never_connected::applies(input)
    {
        return Vec::new();
    }
    let stage = Stage::of(&input.console);
    let limit = input
        .evidence
        .failure
        .as_ref()
        .map(|f| format!(" ({})", f.message))
        .unwrap_or_default();
    vec![finding(
        "never_ready",
        format!(
            "the guest did not report `hearth: ready` in time{limit}; when it was stopped, {}",
            stage.describe()
        ),
        input.console.tail(LAST_LINES),
        fix(stage),
    )]
}

/// A service's readiness check held the VM: `readiness_never_passed` says
/// so with the service's own lines, which beat the console's. (An agent
/// that never connected is `agent_never_connected`'s, with the console's
/// last lines.)
fn waits_on_a_service(input: &Input) -> bool {
    input
        .agent
        .services
        .iter()
        .any(|s| s.readiness.is_some() && !s.became_ready)
}

fn fix(stage: Stage) -> &'static str {
    match stage {
        Stage::Nothing | Stage::Loader => {
            "the kernel never ran: check the kernel file (`hearth kernel inspect FILE`), give \
             the VM more memory (--memory), and run `hearth doctor` for the host"
        }
        Stage::Kernel => {
            "the kernel was still starting: under software emulation (TCG) it needs about 5 s \
             before the initramfs, so allow more time (--timeout, or readiness_timeout_secs in \
             the API); if it stops at the same line every time, that line names the stuck \
             driver"
        }
        Stage::Initramfs => {
            "hearth's initramfs waits up to 10 s for the disks: check that the image file \
             exists and allow more time (--timeout, or readiness_timeout_secs in the API)"
        }
        Stage::ImageInit => {
            "the image's init had not finished starting: its last lines show what it was \
             doing; on a systemd image a unit ordered before readiness may hold it (see the \
             other findings, e.g. After=network-online.target). Otherwise allow more time \
             (--timeout, or readiness_timeout_secs in the API)"
        }
        Stage::Ready => {
            "the guest did report ready, but after the deadline: allow more time (--timeout, \
             or readiness_timeout_secs in the API)"
        }
    }
}

#[cfg(test)]
mod tests {
    use hearth_types::{Failure, FailureCode};

    use super::super::{diagnose, Evidence};

    fn timed_out(console: &str) -> Evidence {
        Evidence {
            console: console.into(),
            failure: Some(Failure {
                code: FailureCode::BootTimeout,
                message: "not ready within 3 s; last console line: \"x\"".into(),
            }),
            ..Evidence::default()
        }
    }

    #[test]
    fn a_timeout_during_the_kernels_boot_says_so() {
        // From a real run with `--timeout 3`.
        let console =
            "[    0.000000] Linux version 6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org)\n\
            [    3.831521] NET: Registered PF_INET6 protocol family\n\
            [    3.849086] Segment Routing with IPv6\n\
            [    3.849675] In-situ OAM (IOAM) with IPv6\n\
            [    3.850584] mip6: Mobile IPv6\n\
            [    3.851023] NET: Registered PF_PACKET protocol family\n\
            [    3.852643] IPI shorthand broadcast: enabled\n\
            [    3.856425] registered taskstats version 1\n\
            [    3.856913] Loading compiled-in X.509 certificates\n";
        let f = diagnose(&timed_out(console));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].rule, "never_ready");
        assert!(f[0].cause.contains("not ready within 3 s"));
        assert!(f[0].cause.contains("the kernel was booting"), "{:?}", f[0]);
        assert_eq!(f[0].evidence.len(), 9);
        assert!(f[0]
            .evidence
            .last()
            .unwrap()
            .contains("Loading compiled-in X.509"));
        assert!(f[0].fix.contains("--timeout"));
    }

    #[test]
    fn the_stage_reached_is_named() {
        let f = diagnose(&timed_out(
            "[    0.0] Linux version 6.1.0\n[    5.4] Run /init as init process\n[    5.8] systemd[1]: Detected architecture x86-64.\n",
        ));
        assert!(
            f[0].cause.contains("the image's init was running"),
            "{:?}",
            f[0]
        );
        let f = diagnose(&timed_out(""));
        assert!(f[0].cause.contains("printed nothing"));
        assert!(f[0].evidence.is_empty());
    }

    #[test]
    fn a_service_that_never_got_ready_is_left_to_its_own_rule() {
        use hearth_types::guest::Readiness;

        use super::super::{diagnose_with_agent, AgentFacts, ServiceFacts};

        let agent = AgentFacts {
            services: vec![ServiceFacts {
                name: "web".into(),
                readiness: Some(Readiness::Tcp { port: 8080 }),
                ..ServiceFacts::default()
            }],
            ..AgentFacts::default()
        };
        let found = diagnose_with_agent(&timed_out("hearth: ready\n"), &agent);
        let rules: Vec<&str> = found.iter().map(|f| f.rule.as_str()).collect();
        assert_eq!(rules, ["readiness_never_passed"], "{found:#?}");
    }
}
