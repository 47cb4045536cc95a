//! `failed_unit`: systemd could not start a unit — its status line
//! `[FAILED] Failed to start agent.service - OAuth agent.` or its log line
//! `systemd[1]: Failed to start ...` — with, when journald forwards service
//! output to the console, the unit's last words. Units that crash-loop are
//! `crash_loop`'s, and systemd-networkd-wait-online is
//! `waiting_on_network_online`'s.

use hearth_types::api::Finding;

use super::crash_loop::looping_units;
use super::log::{journal, message, Log};
use super::network_online::WAIT_ONLINE;
use super::units::{exits, is_unit_name, last_words};
use super::{failed_unit_report, finding, Input};

/// Output lines quoted per unit.
const LAST_WORDS: usize = 3;
/// Units reported, at most.
const MAX_UNITS: usize = 5;

pub(super) fn check(input: &Input) -> Vec<Finding> {
    let log = &input.console;
    let skip = looping_units(log);
    let failures = failed_starts(log);
    let mut seen: Vec<Seen> = Vec::new();
    let mut found = Vec::new();
    for failure in &failures {
        let (unit, description) = resolve(failure, &failures);
        if skip.iter().any(|u| u == unit)
            || unit.starts_with(WAIT_ONLINE)
            || seen.iter().any(|s| s.unit == unit)
        {
            continue;
        }
        let (f, quiet) = unit_finding(log, failure.line, unit, description);
        seen.push(Seen {
            unit: unit.to_owned(),
            quiet,
            at: found.len(),
        });
        found.push(f);
    }
    let reported = input.agent.boot_report.as_ref();
    for unit in reported.map_or(&[][..], |r| &r.failed_units) {
        if skip.contains(&unit.unit) || unit.unit.starts_with(WAIT_ONLINE) {
            continue;
        }
        match seen.iter().find(|s| same_unit(&s.unit, &unit.unit)) {
            // The console showed only the status line: the agent's lines
            // say why.
            Some(s) if s.quiet => {
                failed_unit_report::add_last_lines(&mut found[s.at], &s.unit, unit);
            }
            Some(_) => {}
            None => found.push(failed_unit_report::unit_finding(unit)),
        }
    }
    found.truncate(MAX_UNITS);
    found
}

/// `console` names `unit`: the same name, or the status line's shortened
/// form of it (`site-setti…vice` for `site-settings.service`), which is all
/// a console shows once journald has taken systemd's own log lines.
fn same_unit(console: &str, unit: &str) -> bool {
    match console.split_once('…') {
        Some((head, tail)) => {
            unit.len() >= head.len() + tail.len() && unit.starts_with(head) && unit.ends_with(tail)
        }
        None => console == unit,
    }
}

/// A unit already reported from the console.
struct Seen {
    unit: String,
    /// Only its status line was on the console.
    quiet: bool,
    at: usize,
}

/// One `Failed to start UNIT - DESCRIPTION.` line.
#[derive(Debug)]
struct FailedStart {
    line: usize,
    /// `UNIT - DESCRIPTION` as printed; status lines shorten long ones
    /// with `…` in the middle.
    text: String,
    unit: String,
    description: String,
}

fn failed_starts(log: &Log) -> Vec<FailedStart> {
    let mut out = Vec::new();
    for (line, l) in log.lines().iter().enumerate() {
        let status = message(l).strip_prefix("[FAILED] Failed to start ");
        let logged = journal(l)
            .filter(|j| j.is_systemd())
            .and_then(|j| j.text.strip_prefix("Failed to start "));
        if let Some(rest) = status.or(logged) {
            let text = rest.trim_end_matches('.').to_owned();
            let (unit, description) = match text.split_once(" - ") {
                Some((u, d)) => (u.to_owned(), d.to_owned()),
                None => (text.clone(), String::new()),
            };
            out.push(FailedStart {
                line,
                text,
                unit,
                description,
            });
        }
    }
    out
}

/// The unit and description of `f`, taken from an unshortened line about
/// the same unit when `f`'s was shortened.
fn resolve<'a>(f: &'a FailedStart, all: &'a [FailedStart]) -> (&'a str, &'a str) {
    let Some((head, tail)) = f.text.split_once('…') else {
        return (&f.unit, &f.description);
    };
    all.iter()
        .find(|o| !o.text.contains('…') && o.text.starts_with(head) && o.text.ends_with(tail))
        .map_or((&f.unit, &f.description), |o| (&o.unit, &o.description))
}

/// The finding for one unit, and whether its output was missing.
fn unit_finding(log: &Log, failed_at: usize, unit: &str, description: &str) -> (Finding, bool) {
    let exit = is_unit_name(unit)
        .then(|| exits(log, unit).into_iter().rfind(|&e| e < failed_at))
        .flatten();
    let end = exit.unwrap_or(failed_at);
    let words = if is_unit_name(unit) {
        last_words(log, unit, end, LAST_WORDS)
    } else {
        Vec::new()
    };
    let how = exit
        .and_then(|e| log.lines()[e].split_once("Main process exited, "))
        .map(|(_, t)| format!(": its process exited ({t})"))
        .unwrap_or_default();
    let named = if description.is_empty() {
        unit.to_owned()
    } else {
        format!("{unit} ({description})")
    };
    let quiet = words.is_empty();
    let mut evidence = words;
    evidence.extend(exit.map(|e| log.lines()[e].clone()));
    evidence.push(log.lines()[failed_at].clone());
    let f = finding(
        "failed_unit",
        format!("systemd could not start {named}{how}"),
        evidence,
        fix(unit, quiet),
    );
    (f, quiet)
}

/// What to do about a failed unit, depending on whether its output is at
/// hand.
pub(super) fn fix(unit: &str, quiet: bool) -> String {
    // A name systemd shortened on the console is no command argument.
    let journal = if unit.contains('…') {
        "`systemctl --failed` names it in full in the guest, and `journalctl -u UNIT` shows \
         its output"
            .to_owned()
    } else {
        format!("`journalctl -u {unit}` shows it in the guest")
    };
    let words_hint = if quiet {
        format!(
            "its output is not on the console: journald puts it there with ForwardToConsole=yes \
             in journald.conf (or systemd.journald.forward_to_console=1 on the kernel command \
             line), and {journal}"
        )
    } else {
        "its last output (in the evidence) says why".to_owned()
    };
    format!("{words_hint}; fix that and the unit's ExecStart, then restart the unit")
}

#[cfg(test)]
mod tests {
    use super::super::diagnose_console as found;

    #[test]
    fn a_failed_oneshot_is_named_with_its_exit_and_last_words() {
        // From a real Debian guest with journald forwarding to the console.
        let f = found(include_str!("testdata/debian-units.log"));
        let setup = f
            .iter()
            .find(|f| f.rule == "failed_unit" && f.cause.contains("setup.service"))
            .expect("setup.service");
        assert!(setup.cause.contains("(One-time setup)"), "{setup:?}");
        assert!(
            setup.cause.contains("status=2/INVALIDARGUMENT"),
            "{setup:?}"
        );
        assert!(
            setup.evidence[0].ends_with("sh[204]: cannot find config"),
            "{setup:?}"
        );
        assert!(setup
            .evidence
            .last()
            .unwrap()
            .ends_with("Failed to start setup.service - One-time setup."));
        assert!(setup.fix.contains("last output"));
        // agent.service crash-looped: it is reported once, as a loop.
        assert!(!f
            .iter()
            .any(|f| f.rule == "failed_unit" && f.cause.contains("agent.service")));
    }

    #[test]
    fn a_coloured_status_line_is_enough() {
        let f = found("[\u{1b}[0;1;31mFAILED\u{1b}[0m] Failed to start \u{1b}[0;1;39magent.service\u{1b}[0m - OAuth agent.\r\n\
                       See 'systemctl status agent.service' for details.\r\n");
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].rule, "failed_unit");
        assert_eq!(
            f[0].cause,
            "systemd could not start agent.service (OAuth agent)"
        );
        assert_eq!(
            f[0].evidence,
            ["[FAILED] Failed to start agent.service - OAuth agent."]
        );
        assert!(f[0].fix.contains("journalctl -u agent.service"));
    }

    #[test]
    fn a_shortened_status_line_and_its_log_line_are_one_unit() {
        let f = found("[   30.1] systemd[1]: Failed to start oauth-agent-worker.service - OAuth agent worker.\n\
                       [FAILED] Failed to start oauth-agent-wo…ice - OAuth agent worker.\n\
                       [FAILED] Failed to start webrtc-str…- WebRTC streaming server.\n\
                       [  31.2] systemd[1]: Failed to start webrtc-streamer.service - WebRTC streaming server.\n");
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(
            f[1].cause
                .contains("webrtc-streamer.service (WebRTC streaming server)"),
            "{f:?}"
        );
        // Only the shortened name: the fix names no unusable command.
        let f = found("[FAILED] Failed to start site-setti…vice - Load the site settings.\n");
        assert!(
            f[0].fix.contains("`systemctl --failed` names it in full"),
            "{f:?}"
        );
        assert!(!f[0].fix.contains("journalctl -u site-setti"), "{f:?}");
    }
}
