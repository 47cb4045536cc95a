//! Evidence from the agent's service records, in the same one-line shape
//! as console lines: `web: <a line it wrote>`, `web: exited with status
//! 1`, `web: could not be started: ...`. The service's name in front says
//! where each line came from when a finding quotes the console too.

use hearth_types::guest::{ExitStatus, Stream};

use super::agent_facts::ServiceFacts;

/// One line `service` wrote, as evidence.
pub(super) fn output(service: &ServiceFacts, text: &str) -> String {
    format!("{}: {text}", service.name)
}

/// How one run of `service` ended, as evidence.
pub(super) fn exit(service: &ServiceFacts, status: &ExitStatus) -> String {
    format!("{}: {status}", service.name)
}

/// Why `service` could not be started, as evidence.
pub(super) fn spawn_error(service: &ServiceFacts, message: &str) -> String {
    format!("{}: could not be started: {message}", service.name)
}

/// The last `n` lines `service` wrote, stderr and stdout as they came.
pub(super) fn last_output(service: &ServiceFacts, n: usize) -> Vec<String> {
    let lines = &service.last_lines;
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| output(service, &l.text))
        .collect()
}

/// The last `n` lines `service` wrote that satisfy `pred`, oldest first,
/// each text once.
pub(super) fn matching_output(
    service: &ServiceFacts,
    n: usize,
    pred: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in service.last_lines.iter().rev() {
        let shown = output(service, &line.text);
        if out.len() < n && pred(&line.text) && !out.contains(&shown) {
            out.push(shown);
        }
    }
    out.reverse();
    out
}

/// The last `n` distinct lines `service` wrote (on `stream` only, when
/// given), oldest first: a service that keeps restarting prints the same
/// words each run.
pub(super) fn distinct_output(
    service: &ServiceFacts,
    n: usize,
    stream: Option<Stream>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in service.last_lines.iter().rev() {
        let shown = output(service, &line.text);
        if out.len() < n && stream.is_none_or(|s| s == line.stream) && !out.contains(&shown) {
            out.push(shown);
        }
    }
    out.reverse();
    out
}

/// Its newest exit, as evidence, if it ever exited.
pub(super) fn last_exit(service: &ServiceFacts) -> Option<String> {
    service.exits.last().map(|s| exit(service, s))
}

#[cfg(test)]
mod tests {
    use super::super::agent_facts::OutputLine;
    use super::*;

    fn web() -> ServiceFacts {
        ServiceFacts {
            name: "web".into(),
            exits: vec![
                ExitStatus {
                    code: Some(1),
                    signal: None,
                },
                ExitStatus {
                    code: None,
                    signal: Some(4),
                },
            ],
            last_lines: vec![
                OutputLine::stdout("starting"),
                OutputLine::stderr("bad config"),
                OutputLine::stderr("bad config"),
                OutputLine::stderr("giving up"),
            ],
            ..ServiceFacts::default()
        }
    }

    #[test]
    fn lines_carry_the_service_name() {
        let s = web();
        assert_eq!(last_output(&s, 2), ["web: bad config", "web: giving up"]);
        assert_eq!(
            matching_output(&s, 5, |l| l.contains("bad")),
            ["web: bad config"]
        );
        assert_eq!(last_exit(&s).unwrap(), "web: killed by signal 4");
        assert_eq!(
            spawn_error(&s, "Exec format error (os error 8)"),
            "web: could not be started: Exec format error (os error 8)"
        );
    }
}
