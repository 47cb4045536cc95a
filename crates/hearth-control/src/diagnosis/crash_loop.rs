//! `crash_loop`: a service that keeps exiting while systemd keeps starting
//! it again (`Scheduled restart job, restart counter is at N`, or the same
//! `Main process exited` over and over), until systemd gives up (`Start
//! request repeated too quickly`). Restarting never helps; its last output
//! says why it exits.

use hearth_types::api::Finding;

use super::log::Log;
use super::units::{about_unit, exits, last_words, unit_of};
use super::{finding, Input};

/// Exits of one unit that make a loop even without a restart counter.
const LOOPING_EXITS: usize = 3;
/// Output lines quoted per unit.
const LAST_WORDS: usize = 3;

pub(super) fn check(input: &Input) -> Vec<Finding> {
    looping_units(&input.console)
        .into_iter()
        .map(|unit| loop_finding(&input.console, &unit))
        .collect()
}

/// The units that crash-loop, in the order they first exited.
pub(super) fn looping_units(log: &Log) -> Vec<String> {
    let mut units: Vec<String> = Vec::new();
    for line in log.lines() {
        if let Some((unit, _)) = unit_of(line) {
            if !units.iter().any(|u| u == unit) && loops(log, unit) {
                units.push(unit.to_owned());
            }
        }
    }
    units
}

fn loops(log: &Log, unit: &str) -> bool {
    restarts(log, unit) >= 2
        || gave_up(log, unit).is_some()
        || exits(log, unit).len() >= LOOPING_EXITS
}

/// The highest restart counter systemd reported for `unit`.
fn restarts(log: &Log, unit: &str) -> u32 {
    log.lines()
        .iter()
        .filter_map(|l| {
            about_unit(l, unit)?.strip_prefix("Scheduled restart job, restart counter is at ")
        })
        .filter_map(|n| n.trim_end_matches('.').parse().ok())
        .max()
        .unwrap_or(0)
}

fn gave_up(log: &Log, unit: &str) -> Option<usize> {
    log.position(|l| {
        about_unit(l, unit).is_some_and(|t| t.starts_with("Start request repeated too quickly"))
    })
}

fn loop_finding(log: &Log, unit: &str) -> Finding {
    let exit_lines = exits(log, unit);
    let last_exit = exit_lines.last().copied();
    let how = last_exit
        .and_then(|i| about_unit(&log.lines()[i], unit))
        .and_then(|t| t.strip_prefix("Main process exited, "))
        .map(|t| format!("; its last exit: {t}"))
        .unwrap_or_default();
    let n = restarts(log, unit);
    let gave_up_at = gave_up(log, unit);
    let count = match (n, gave_up_at) {
        (0, _) => format!("it exited {} times", exit_lines.len()),
        (n, None) => format!("{n} restarts so far"),
        (n, Some(_)) => format!("{n} restarts, then systemd gave up"),
    };
    let mut evidence = last_exit
        .map(|i| last_words(log, unit, i, LAST_WORDS))
        .unwrap_or_default();
    evidence.extend(last_exit.map(|i| log.lines()[i].clone()));
    let counter = log
        .lines()
        .iter()
        .rposition(|l| about_unit(l, unit).is_some_and(|t| t.starts_with("Scheduled restart job")));
    evidence.extend(gave_up_at.or(counter).map(|i| log.lines()[i].clone()));
    let quiet = evidence.len() <= 2;
    finding(
        "crash_loop",
        format!("{unit} keeps exiting and systemd keeps restarting it ({count}){how}"),
        evidence,
        format!(
            "restarting will not help: {} and fix what it reports (a missing file, variable or \
             library, an instruction the CPU lacks: see the other findings)",
            if quiet {
                "its output is not on the console; journald shows it there with \
                 ForwardToConsole=yes in journald.conf (or \
                 systemd.journald.forward_to_console=1 on the kernel command line), or read \
                 `journalctl -u UNIT` in the guest"
                    .replace("UNIT", unit)
            } else {
                "its last output (in the evidence) says why it exits; read it".to_owned()
            }
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::super::{diagnose, Evidence};

    /// From a real Debian guest: a service that exits at once, with
    /// `Restart=always` and journald forwarding to the console.
    const UNITS: &str = include_str!("testdata/debian-units.log");

    #[test]
    fn a_restarting_service_is_named_with_its_last_words() {
        let found = diagnose(&Evidence {
            console: UNITS.into(),
            ..Evidence::default()
        });
        let f = found
            .iter()
            .find(|f| f.rule == "crash_loop")
            .expect("crash_loop");
        assert!(f.cause.starts_with("agent.service keeps exiting"), "{f:?}");
        assert!(
            f.cause.contains("5 restarts, then systemd gave up"),
            "{f:?}"
        );
        assert!(f.cause.contains("status=1/FAILURE"), "{f:?}");
        assert!(
            f.evidence
                .iter()
                .any(|l| l.contains("node: CPU ISA level is lower than required")),
            "{f:?}"
        );
        assert!(f
            .evidence
            .iter()
            .any(|l| l.contains("Start request repeated too quickly")));
        assert!(!f.fix.is_empty());
    }

    #[test]
    fn repeated_exits_without_a_counter_are_a_loop_too() {
        let exit = "[   20.0] systemd[1]: webrtc.service: Main process exited, code=killed, status=6/ABRT\n";
        let console = format!("[   19.9] gst-launch[300]: ERROR: pipeline doesn't want to preroll.\n{exit}{exit}{exit}");
        let found = diagnose(&Evidence {
            console,
            ..Evidence::default()
        });
        assert_eq!(found[0].rule, "crash_loop");
        assert!(
            found[0].cause.contains("it exited 3 times"),
            "{:?}",
            found[0]
        );
    }

    #[test]
    fn a_single_restart_is_not_a_loop() {
        let console = "[   20.0] systemd[1]: agent.service: Main process exited, code=exited, status=1/FAILURE\n\
                       [   21.0] systemd[1]: agent.service: Scheduled restart job, restart counter is at 1.\n";
        let found = diagnose(&Evidence {
            console: console.into(),
            ..Evidence::default()
        });
        assert!(found.iter().all(|f| f.rule != "crash_loop"), "{found:?}");
    }
}
