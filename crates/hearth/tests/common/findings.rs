//! The diagnosis as `hearth vm run` prints it on stderr, read back into
//! findings so tests can check the rule, cause, evidence and fix.

use std::process::Output;

/// One finding as `hearth vm run` prints it on stderr.
#[derive(Debug, Default)]
pub struct Printed {
    pub rule: String,
    pub cause: String,
    pub evidence: Vec<String>,
    pub fix: String,
}

pub fn printed_findings(out: &Output) -> Vec<Printed> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut found: Vec<Printed> = Vec::new();
    for line in stderr.lines() {
        if let Some(rest) = line.strip_prefix("hearth: cause: ") {
            let (cause, rule) = rest.rsplit_once(" [").expect("cause ends with [rule]");
            found.push(Printed {
                rule: rule.trim_end_matches(']').to_owned(),
                cause: cause.to_owned(),
                ..Printed::default()
            });
        } else if let Some(rest) = line.strip_prefix("hearth: evidence: ") {
            let last = found.last_mut().expect("evidence after a cause");
            last.evidence.push(rest.to_owned());
        } else if let Some(rest) = line.strip_prefix("hearth: fix: ") {
            found.last_mut().expect("fix after a cause").fix = rest.to_owned();
        }
    }
    found
}
