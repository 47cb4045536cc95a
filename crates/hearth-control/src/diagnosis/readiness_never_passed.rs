//! `readiness_never_passed`: a service the agent runs has a readiness check
//! (a TCP port, an HTTP path, a command) that never passed, and the VM
//! failed waiting for it. The service may be running but listening
//! elsewhere, still starting, or dead; its last output and exits say which,
//! and the boot report's listening sockets show what is open instead.

use hearth_types::api::Finding;
use hearth_types::guest::Readiness;

use super::agent_facts::ServiceFacts;
use super::{finding, service_lines, Input};

/// Output lines quoted per service.
const LAST_LINES: usize = 5;

pub(super) fn check(input: &Input) -> Vec<Finding> {
    if input.evidence.failure.is_none() {
        return Vec::new();
    }
    let listening = input
        .agent
        .boot_report
        .as_ref()
        .map(|r| r.listening.clone());
    input
        .agent
        .services
        .iter()
        .filter(|s| !s.became_ready)
        .filter_map(|s| Some((s, s.readiness.as_ref()?)))
        .map(|(s, check)| never_passed(s, check, listening.as_deref()))
        .collect()
}

fn never_passed(
    service: &ServiceFacts,
    check: &Readiness,
    listening: Option<&[String]>,
) -> Finding {
    let mut evidence = service_lines::distinct_output(service, LAST_LINES, None);
    if evidence.is_empty() {
        evidence.push(format!("{}: (no output)", service.name));
    }
    evidence.extend(
        service
            .spawn_error
            .as_deref()
            .map(|m| service_lines::spawn_error(service, m)),
    );
    evidence.extend(service_lines::last_exit(service));
    if let (Readiness::Tcp { .. } | Readiness::Http { .. }, Some(ports)) = (check, listening) {
        evidence.push(listening_line(ports));
    }
    finding(
        "readiness_never_passed",
        format!(
            "the readiness check of service {} ({}) never passed, so the VM never became \
             ready: {}",
            service.name,
            check.describe(),
            state(service)
        ),
        evidence,
        fix(check),
    )
}

/// Where the service stood, in a few words.
fn state(service: &ServiceFacts) -> String {
    if let Some(why) = &service.spawn_error {
        return format!("it could not even be started ({why})");
    }
    match service.exits.last() {
        Some(last) => format!(
            "it ended {} time{} (last: {last}); its last output (in the evidence) says why",
            service.exits.len(),
            if service.exits.len() == 1 { "" } else { "s" }
        ),
        None => "it kept running without passing the check".to_owned(),
    }
}

fn listening_line(ports: &[String]) -> String {
    if ports.is_empty() {
        "listening in the guest: no TCP port at all".to_owned()
    } else {
        format!("listening in the guest: {}", ports.join(", "))
    }
}

fn fix(check: &Readiness) -> String {
    match check {
        Readiness::Tcp { port } | Readiness::Http { port, .. } => format!(
            "the check connects to 127.0.0.1:{port} inside the guest: make the service listen \
             on that port on 127.0.0.1 or 0.0.0.0 (not another port, not only an external \
             address), or correct the port in the service's readiness; if it exits, fix what \
             its last output reports; if it is just slow, allow more time \
             (readiness_timeout_secs)"
        ),
        Readiness::Command { .. } => "run the check command in the guest (`hearth vm exec ID -- \
             ...`) to see why it fails; it must exit 0 once the service is ready. If the \
             service exits, fix what its last output reports; if it is just slow, allow more \
             time (readiness_timeout_secs)"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use hearth_types::guest::{BootReport, ExitStatus, Readiness};
    use hearth_types::{Failure, FailureCode};

    use super::super::{diagnose_with_agent, AgentFacts, Evidence, OutputLine, ServiceFacts};

    fn failed() -> Evidence {
        Evidence {
            failure: Some(Failure {
                code: FailureCode::BootTimeout,
                message: "not ready within 30 s".into(),
            }),
            ..Evidence::default()
        }
    }

    fn web(became_ready: bool) -> ServiceFacts {
        ServiceFacts {
            name: "web".into(),
            readiness: Some(Readiness::Tcp { port: 8080 }),
            became_ready,
            last_lines: vec![OutputLine::stdout("listening on :8081")],
            ..ServiceFacts::default()
        }
    }

    fn facts(services: Vec<ServiceFacts>) -> AgentFacts {
        AgentFacts {
            image_has_agent: true,
            hello_at: Some(hearth_types::Timestamp::from_millis(1)),
            services,
            boot_report: Some(BootReport {
                listening: vec!["0.0.0.0:8081".into()],
                ..BootReport::default()
            }),
        }
    }

    fn rule(e: &Evidence, a: &AgentFacts) -> Vec<hearth_types::api::Finding> {
        diagnose_with_agent(e, a)
            .into_iter()
            .filter(|f| f.rule == "readiness_never_passed")
            .collect()
    }

    #[test]
    fn a_port_that_never_opened_names_the_port_and_what_listens() {
        let f = rule(&failed(), &facts(vec![web(false)]));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].cause.contains("service web (TCP port 8080)"), "{f:?}");
        assert!(f[0].cause.contains("kept running"), "{f:?}");
        assert_eq!(
            f[0].evidence,
            [
                "web: listening on :8081",
                "listening in the guest: 0.0.0.0:8081"
            ]
        );
        assert!(f[0].fix.contains("127.0.0.1:8080"), "{f:?}");
    }

    #[test]
    fn a_service_that_died_says_how() {
        let mut s = web(false);
        s.exits.push(ExitStatus {
            code: Some(2),
            signal: None,
        });
        let f = rule(&failed(), &facts(vec![s]));
        assert!(
            f[0].cause
                .contains("ended 1 time (last: exited with status 2)"),
            "{f:?}"
        );
        assert!(f[0]
            .evidence
            .contains(&"web: exited with status 2".to_owned()));
    }

    #[test]
    fn a_service_that_ran_three_times_is_quoted_once() {
        let mut s = web(false);
        s.last_lines = ["starting web 1.2", "listening on :8081", "shutting down"]
            .repeat(3)
            .into_iter()
            .map(OutputLine::stderr)
            .collect();
        s.exits = vec![
            ExitStatus {
                code: Some(1),
                signal: None,
            };
            3
        ];
        let f = rule(&failed(), &facts(vec![s]));
        assert_eq!(
            f[0].evidence,
            [
                "web: starting web 1.2",
                "web: listening on :8081",
                "web: shutting down",
                "web: exited with status 1",
                "listening in the guest: 0.0.0.0:8081"
            ]
        );
    }

    #[test]
    fn ready_services_healthy_vms_and_services_without_checks_give_nothing() {
        assert!(rule(&failed(), &facts(vec![web(true)])).is_empty());
        assert!(rule(&Evidence::default(), &facts(vec![web(false)])).is_empty());
        let mut unchecked = web(false);
        unchecked.readiness = None;
        assert!(rule(&failed(), &facts(vec![unchecked])).is_empty());
    }

    #[test]
    fn a_command_check_says_how_to_run_it_and_lists_no_ports() {
        let mut s = web(false);
        s.readiness = Some(Readiness::Command {
            argv: vec!["pg_isready".into()],
        });
        s.last_lines.clear();
        s.spawn_error = Some("cannot start \"/usr/bin/web\": No such file or directory".into());
        let f = rule(&failed(), &facts(vec![s]));
        assert!(f[0].cause.contains("(command pg_isready)"), "{f:?}");
        assert!(f[0].cause.contains("could not even be started"), "{f:?}");
        assert_eq!(
            f[0].evidence,
            [
                "web: (no output)",
                "web: could not be started: cannot start \"/usr/bin/web\": No such file or directory"
            ]
        );
        assert!(f[0].fix.contains("hearth vm exec"), "{f:?}");
    }
}
