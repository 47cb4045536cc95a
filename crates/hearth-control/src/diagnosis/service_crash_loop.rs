//! `crash_loop` for the services the agent supervises: the agent counted
//! too many restarts in its window (the service's crash-loop rule) and
//! said so. Restarting never helps; the service's last stderr lines say
//! why it exits. systemd units that loop are `crash_loop.rs`'s, read from
//! the console.

use hearth_types::api::Finding;

use hearth_types::guest::Stream;

use super::agent_facts::ServiceFacts;
use super::{finding, service_lines, Input};

/// Output lines quoted per service.
const LAST_LINES: usize = 4;

pub(super) fn check(input: &Input) -> Vec<Finding> {
    input
        .agent
        .services
        .iter()
        .filter(|s| s.crash_loop)
        .map(loop_finding)
        .collect()
}

fn loop_finding(service: &ServiceFacts) -> Finding {
    // stderr says why; stdout only when it wrote nothing on stderr. Each
    // run usually prints the same words: each text once.
    let stream = service.stderr().next().map(|_| Stream::Stderr);
    let mut evidence = service_lines::distinct_output(service, LAST_LINES, stream);
    let quiet = evidence.is_empty();
    evidence.extend(service_lines::last_exit(service));
    let last = service
        .exits
        .last()
        .map(|e| format!("; its last exit: {e}"))
        .unwrap_or_default();
    let runs = service.exits.len();
    finding(
        "crash_loop",
        format!(
            "service {} keeps exiting and the agent keeps restarting it ({runs} exit{} \
             recorded, too many in its crash-loop window){last}",
            service.name,
            if runs == 1 { "" } else { "s" }
        ),
        evidence,
        if quiet {
            "restarting will not help: the service wrote nothing before exiting; run its \
             command by hand in the guest (`hearth vm exec ID -- ...`) to see why it stops"
        } else {
            "restarting will not help: its last output (in the evidence) says why it exits; \
             fix that (a missing file, variable or library, an instruction the CPU lacks: see \
             the other findings), then restart the VM"
        },
    )
}

#[cfg(test)]
mod tests {
    use hearth_types::guest::ExitStatus;

    use super::super::{diagnose_with_agent, AgentFacts, Evidence, OutputLine, ServiceFacts};

    fn looping(lines: Vec<OutputLine>) -> AgentFacts {
        let exit = ExitStatus {
            code: Some(1),
            signal: None,
        };
        AgentFacts {
            services: vec![ServiceFacts {
                name: "worker".into(),
                exits: vec![exit; 6],
                crash_loop: true,
                last_lines: lines,
                ..ServiceFacts::default()
            }],
            ..AgentFacts::default()
        }
    }

    #[test]
    fn a_looping_service_is_named_with_its_last_stderr_lines() {
        let agent = looping(vec![
            OutputLine::stdout("starting worker"),
            OutputLine::stderr("error: DATABASE_URL is not set"),
            OutputLine::stdout("starting worker"),
            OutputLine::stderr("error: DATABASE_URL is not set"),
        ]);
        let f = diagnose_with_agent(&Evidence::default(), &agent);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].rule, "crash_loop");
        assert!(
            f[0].cause.starts_with("service worker keeps exiting"),
            "{f:?}"
        );
        assert!(f[0].cause.contains("6 exits recorded"), "{f:?}");
        assert!(f[0].cause.contains("its last exit: exited with status 1"));
        assert_eq!(
            f[0].evidence,
            [
                "worker: error: DATABASE_URL is not set",
                "worker: exited with status 1"
            ]
        );
    }

    #[test]
    fn a_silent_loop_says_how_to_see_why() {
        let f = diagnose_with_agent(&Evidence::default(), &looping(Vec::new()));
        assert_eq!(f[0].evidence, ["worker: exited with status 1"]);
        assert!(f[0].fix.contains("hearth vm exec"), "{f:?}");
        let mut calm = looping(Vec::new());
        calm.services[0].crash_loop = false;
        assert!(diagnose_with_agent(&Evidence::default(), &calm).is_empty());
    }
}
