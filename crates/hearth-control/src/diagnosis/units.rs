//! What systemd says about its units on the console, for `failed_unit` and
//! `crash_loop`: which unit, how its process ended, and the last lines its
//! processes printed (when journald forwards them to the console).
//!
//! systemd (PID 1) writes `systemd[1]: agent.service: Main process exited,
//! code=exited, status=1/FAILURE`; journald forwards a service's output as
//! `sh[209]: node: ...` under its process's name, not its unit's, so a
//! unit's output is found as the lines between its start and its exit.

use super::log::{journal, Log};

/// How far back a unit's start is looked for when none is on the console.
const WINDOW: usize = 40;

/// systemd's own words about `unit`, when `line` is one of them.
pub(super) fn about_unit<'a>(line: &'a str, unit: &str) -> Option<&'a str> {
    let j = journal(line).filter(|j| j.is_systemd())?;
    j.text.strip_prefix(unit)?.strip_prefix(": ")
}

/// The unit a systemd line is about: `agent.service: Main process exited`.
pub(super) fn unit_of(line: &str) -> Option<(&str, &str)> {
    let j = journal(line).filter(|j| j.is_systemd())?;
    let (unit, rest) = j.text.split_once(": ")?;
    is_unit_name(unit).then_some((unit, rest))
}

/// `agent.service`, `dev-vdb.device`, `getty@ttyS0.service`, ...
pub(super) fn is_unit_name(s: &str) -> bool {
    const KINDS: &[&str] = &[
        ".service",
        ".socket",
        ".mount",
        ".target",
        ".timer",
        ".path",
        ".device",
        ".swap",
        ".scope",
        ".slice",
        ".automount",
    ];
    !s.contains(' ') && KINDS.iter().any(|k| s.ends_with(k))
}

/// The indices of `unit`'s `Main process exited` lines.
pub(super) fn exits(log: &Log, unit: &str) -> Vec<usize> {
    log.matching(|l| about_unit(l, unit).is_some_and(|t| t.starts_with("Main process exited")))
}

/// The last `n` lines `unit`'s processes printed before line `end`: the
/// forwarded lines since systemd last said it was starting the unit.
pub(super) fn last_words(log: &Log, unit: &str, end: usize, n: usize) -> Vec<String> {
    let lines = &log.lines()[..end.min(log.lines().len())];
    let starting = |l: &String| {
        journal(l).is_some_and(|j| {
            j.is_systemd()
                && (j.text.starts_with(&format!("Starting {unit}"))
                    || j.text.starts_with(&format!("Started {unit}")))
        })
    };
    let start = lines
        .iter()
        .rposition(starting)
        .unwrap_or(lines.len().saturating_sub(WINDOW));
    let words: Vec<&String> = lines[start..]
        .iter()
        .filter(|l| journal(l).is_some_and(|j| !j.is_systemd() && !j.ident.starts_with("systemd")))
        .collect();
    words[words.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_units_lines_and_last_words_are_found() {
        let log = Log::new(
            "[   13.79] systemd[1]: Starting setup.service - One-time setup...\n\
             [   13.81] sh[204]: cannot find config\n\
             [   13.83] systemd[1]: setup.service: Main process exited, code=exited, status=2/INVALIDARGUMENT\n\
             [   13.84] systemd[1]: Failed to start setup.service - One-time setup.\n",
        );
        assert_eq!(exits(&log, "setup.service"), [2]);
        assert_eq!(
            unit_of(&log.lines()[2]),
            Some((
                "setup.service",
                "Main process exited, code=exited, status=2/INVALIDARGUMENT"
            ))
        );
        assert_eq!(unit_of(&log.lines()[3]), None);
        assert_eq!(
            last_words(&log, "setup.service", 3, 3),
            ["[   13.81] sh[204]: cannot find config"]
        );
    }
}
