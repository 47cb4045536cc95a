//! `agent_never_connected`: the image carries hearth's agent, the VM failed
//! or timed out, and the agent never said hello. Without it the host cannot
//! configure the guest, run its services or exec into it. The agent prints
//! its own trouble (`hearth-agent: ...`) on the console; the last console
//! lines show how far the guest got.

use hearth_types::api::Finding;
use hearth_types::FailureCode;

use super::log::contains_ci;
use super::stage::Stage;
use super::{finding, Input};

/// Console lines quoted when the agent said nothing of its own.
const LAST_LINES: usize = 8;
/// The agent's own console lines quoted.
const AGENT_LINES: usize = 4;

pub(super) fn check(input: &Input) -> Vec<Finding> {
    if !applies(input) {
        return Vec::new();
    }
    let log = &input.console;
    let own = log.matching(|l| contains_ci(l, "hearth-agent"));
    let mut evidence = log.pick(&own[own.len().saturating_sub(AGENT_LINES)..]);
    for line in log.tail(LAST_LINES) {
        if !evidence.contains(&line) {
            evidence.push(line);
        }
    }
    let said = if own.is_empty() {
        "it printed nothing on the console either"
    } else {
        "the console's lines about it (in the evidence) show how far it got"
    };
    vec![finding(
        "agent_never_connected",
        format!(
            "the image carries hearth's agent, but the agent never connected to the host, so \
             the guest could not be configured or watched; {said}"
        ),
        evidence,
        "read the agent's `hearth-agent:` lines on the console (`hearth vm console ID`): it \
         says when its port `hearth.agent` never appeared (the guest needs the \
         virtio_console module and the VM its hearth.agent channel) or when it cannot start \
         at all; rebuild the image with a working static agent (`export \
         HEARTH_AGENT=$(scripts/build-agent)`, then `hearth image build`), and check that \
         the image still starts it (debian: hearth-agent.service; minimal: /sbin/init is the agent)",
    )]
}

/// The VM timed out after the image's init ran, which starts the agent,
/// and the agent never said hello. A guest stopped earlier (in the kernel,
/// in hearth's initramfs) never got to start it, and a panic or a crash
/// silences the agent too: the other rules say why.
pub(super) fn applies(input: &Input) -> bool {
    let agent = input.agent;
    agent.image_has_agent
        && !agent.said_hello()
        && input.failure_code() == Some(FailureCode::BootTimeout)
        && Stage::of(&input.console) >= Stage::ImageInit
}

#[cfg(test)]
mod tests {
    use hearth_types::{Failure, FailureCode, Timestamp};

    use super::super::{diagnose_with_agent, AgentFacts, Evidence};

    fn failed(console: &str) -> Evidence {
        Evidence {
            console: console.into(),
            failure: Some(Failure {
                code: FailureCode::BootTimeout,
                message: "not ready within 30 s".into(),
            }),
            ..Evidence::default()
        }
    }

    fn with_agent() -> AgentFacts {
        AgentFacts {
            image_has_agent: true,
            ..AgentFacts::default()
        }
    }

    #[test]
    fn a_silent_agent_is_named_with_its_own_lines() {
        let console = "[    5.0] Run /init as init process\n\
                       hearth-agent: error: no virtio port named hearth.agent after 5 s\n\
                       hearth: ready\n";
        let f = diagnose_with_agent(&failed(console), &with_agent());
        let f = f
            .iter()
            .find(|f| f.rule == "agent_never_connected")
            .expect("agent_never_connected");
        assert_eq!(
            f.evidence[0],
            "hearth-agent: error: no virtio port named hearth.agent after 5 s"
        );
        assert_eq!(f.evidence.len(), 3, "{f:?}");
        assert!(f.fix.contains("hearth.agent"), "{f:?}");
    }

    #[test]
    fn no_finding_when_the_agent_spoke_the_image_lacks_it_or_the_vm_is_fine() {
        let console = "hearth: ready\n";
        let spoke = AgentFacts {
            hello_at: Some(Timestamp::from_millis(1)),
            ..with_agent()
        };
        let rule = |e: &Evidence, a: &AgentFacts| {
            diagnose_with_agent(e, a)
                .iter()
                .any(|f| f.rule == "agent_never_connected")
        };
        assert!(rule(&failed(console), &with_agent()));
        assert!(!rule(&failed(console), &spoke));
        assert!(!rule(&failed(console), &AgentFacts::default()));
        // Stopped in the kernel: the agent never had a chance.
        let early = failed("[    1.0] Linux version 6.1.0-56-cloud-amd64\n");
        assert!(!rule(&early, &with_agent()));
        // A panic silences the agent too: not its fault.
        let mut panicked = failed(console);
        panicked.failure.as_mut().unwrap().code = FailureCode::KernelPanic;
        assert!(!rule(&panicked, &with_agent()));
        let healthy = Evidence {
            console: console.into(),
            ..Evidence::default()
        };
        assert!(!rule(&healthy, &with_agent()));
    }
}
