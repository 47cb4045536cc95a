//! `waiting_on_network_online`: units ordered `After=network-online.target`
//! in a guest without a configured network. network-online.target waits
//! for systemd-networkd-wait-online, which waits up to two minutes for a
//! network that never comes, and every unit ordered after the target waits
//! with it: the agent "never starts" and nothing says why. systemd shows it
//! as `Job systemd-networkd-wait-online.service/start running (7s / no
//! limit)` (or `A start job is running for Wait for Network to be
//! Configured`), then `Timeout occurred while waiting for network
//! connectivity`; `systemctl list-jobs` shows the units `start waiting`.

use hearth_types::api::Finding;

use super::log::{journal, message, Log};
use super::units::is_unit_name;
use super::{finding, Input};

/// The unit behind network-online.target on systemd-networkd guests.
pub(super) const WAIT_ONLINE: &str = "systemd-networkd-wait-online";
/// How many lines of systemd's signs are quoted.
const MAX_LINES: usize = 6;
/// How far after `Reached target network-online.target` the units that
/// waited for it are looked for.
const AFTER_ONLINE: usize = 20;

pub(super) fn check(input: &Input) -> Vec<Finding> {
    let log = &input.console;
    let signs = log.matching(is_sign);
    // The agent's boot report lists the jobs `systemctl list-jobs` shows.
    let jobs = Log::new(
        &input
            .agent
            .boot_report
            .as_ref()
            .map_or_else(String::new, |r| r.waiting_jobs.join("\n")),
    );
    // Early in a boot every job waits, wait-online's too: only a report
    // taken while wait-online runs says who waits behind it.
    let job_signs = jobs.matching(|l| l.contains(WAIT_ONLINE) && l.ends_with(" running"));
    if signs.is_empty() && job_signs.is_empty() {
        return Vec::new();
    }
    let mut waiting = waiting_units(log);
    if !job_signs.is_empty() {
        add_new(&mut waiting, waiting_units(&jobs));
    }
    add_new(&mut waiting, started_once_online(log));
    let mut evidence = log.pick(&shown_signs(log, &signs));
    evidence.extend(jobs.pick(&job_signs));
    evidence.extend(waiting.iter().map(|(_, line)| line.clone()));
    let units: Vec<&str> = waiting.iter().map(|(u, _)| u.as_str()).collect();
    let who = if units.is_empty() {
        "every unit ordered After=network-online.target".to_owned()
    } else {
        format!(
            "{} (waiting behind network-online.target)",
            units.join(", ")
        )
    };
    let job = wait_online_job(log);
    vec![finding(
        "waiting_on_network_online",
        format!(
            "systemd is holding {who} until the network is online, and this guest has no \
             configured network: network-online.target waits for the job {job}, which waits \
             for a network (up to 2 minutes by default), and those units wait with it"
        ),
        evidence,
        "drop `After=network-online.target` and `Wants=network-online.target` from those \
         units (`After=network.target` is enough for a service that needs no outside network \
         at start), or give the VM a network interface and configure it; masking \
         systemd-networkd-wait-online.service also ends the wait",
    )]
}

/// The signs worth quoting: of systemd's repeated progress lines (one per
/// spinner frame) the first and the last, which say how long; every other
/// sign once.
fn shown_signs(log: &Log, signs: &[usize]) -> Vec<usize> {
    let (progress, others): (Vec<usize>, Vec<usize>) =
        signs.iter().partition(|&&i| is_progress(&log.lines()[i]));
    let mut shown = log.distinct(&others);
    shown.truncate(MAX_LINES - 2);
    shown.extend(progress.first());
    shown.extend(progress.last());
    shown
}

/// Adds the units of `more` not yet in `units`.
fn add_new(units: &mut Vec<(String, String)>, more: Vec<(String, String)>) {
    for (unit, line) in more {
        if !units.iter().any(|(u, _)| *u == unit) {
            units.push((unit, line));
        }
    }
}

/// The job network-online.target waits for, by its full name: the cut
/// names of the spinner (`systemd-networkd-wait-online.se…start`) are
/// only a prefix of it.
fn wait_online_job(log: &Log) -> String {
    let full = log.lines().iter().find_map(|l| {
        let (_, rest) = l.split_once("Job ")?;
        let job = rest.split_whitespace().next()?;
        (job.starts_with(WAIT_ONLINE) && !job.contains('…')).then(|| job.to_owned())
    });
    full.unwrap_or_else(|| format!("{WAIT_ONLINE}.service/start"))
}

/// A frame of systemd's progress spinner: `[ *** ] Job UNIT/start running
/// (7s / no limit)` or `A start job is running for ... (1min 5s / 2min 1s)`.
fn is_progress(line: &str) -> bool {
    let msg = message(line);
    msg.contains("start job is running for") || (msg.contains("Job ") && msg.contains(" running ("))
}

/// The units systemd starts right after reaching network-online.target
/// (`Reached target network-online.target`, then `Starting`/`Started
/// UNIT - ...` until the next target): the ones that waited for it.
fn started_once_online(log: &Log) -> Vec<(String, String)> {
    let lines = log.lines();
    let Some(at) = lines
        .iter()
        .position(|l| l.contains("Reached target network-online.target"))
    else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for line in lines[at + 1..].iter().take(AFTER_ONLINE) {
        let msg = journal(line).map_or_else(|| message(line), |j| j.text);
        if msg.contains("Reached target ") {
            break;
        }
        let unit = ["Starting ", "Started "]
            .iter()
            .find_map(|p| msg.strip_prefix(p))
            .and_then(|rest| rest.split_whitespace().next());
        if let Some(unit) = unit.filter(|u| is_unit_name(u) && !u.starts_with(WAIT_ONLINE)) {
            add_new(&mut out, vec![(unit.to_owned(), line.clone())]);
        }
    }
    out
}

fn is_sign(line: &str) -> bool {
    let msg = message(line);
    msg.contains("Timeout occurred while waiting for network connectivity")
        || (msg.contains("start job is running for") && msg.contains("Wait for Network"))
        || (msg.contains("Job ") && msg.contains(WAIT_ONLINE) && msg.contains("/start running"))
        || (msg.contains("Failed to start") && msg.contains(WAIT_ONLINE))
        || (msg.contains(WAIT_ONLINE) && msg.contains("start running"))
}

/// Units `systemctl list-jobs` shows as waiting to start: `42
/// agent.service start waiting`.
fn waiting_units(log: &Log) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in log.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = words.windows(2).position(|w| w == ["start", "waiting"]) else {
            continue;
        };
        let Some(unit) = at.checked_sub(1).map(|u| words[u]) else {
            continue;
        };
        if is_unit_name(unit)
            && !unit.ends_with(".target")
            && !unit.starts_with(WAIT_ONLINE)
            && !out.iter().any(|(u, _)| u == unit)
        {
            out.push((unit.to_owned(), line.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::diagnose_console as found;

    #[test]
    fn systemd_252_job_lines_and_the_waiting_agent_are_shown() {
        // systemd 252 with the serial getty masked, and `systemctl list-jobs`.
        let f = found(
            "[  OK  ] Reached target network.target - Network.\n\
             Starting systemd-networkd-wait-online.service - Wait for Network to be Configured...\n\
             [ *** ] Job systemd-networkd-wait-online.service/start running (7s / no limit)\n\
             [  ***] Job systemd-networkd-wait-online.service/start running (38s / no limit)\n\
             JOB UNIT                                 TYPE  STATE\n\
             104 agent.service                        start waiting\n\
             87  network-online.target                start waiting\n\
             103 systemd-networkd-wait-online.service start running\n\
             3 jobs listed.\n",
        );
        assert_eq!(f.len(), 1, "{f:?}");
        let f = &f[0];
        assert_eq!(f.rule, "waiting_on_network_online");
        assert!(
            f.cause
                .contains("agent.service (waiting behind network-online.target)"),
            "{f:?}"
        );
        assert!(f.evidence.iter().any(|l| l.contains("(7s / no limit)")));
        assert!(f.evidence.iter().any(|l| l.contains("(38s / no limit)")));
        assert!(f
            .evidence
            .iter()
            .any(|l| l.starts_with("104 agent.service")));
        assert!(f.fix.contains("After=network-online.target"));
    }

    /// systemd 252 on the serial console: the spinner redrawn on one line
    /// (80 columns cut the job's name), then, after wait-online's 2
    /// minutes, its failure and the unit that waited being started.
    const SPINNER_THEN_TIMEOUT: &str = "[  OK  ] Reached target network.target - Network.\r\n\
         Starting \u{1b}[0;1;39msystemd-networkd-wait-online.service\u{1b}[0m - Wait for Network to be Configured...\r\n\
         \r\u{1b}[K[\u{1b}[0;31m*     \u{1b}[0m] Job systemd-networkd-wait-online.se…start running (7s / no limit)\
         \r\u{1b}[K[\u{1b}[0;1;31m*\u{1b}[0m\u{1b}[0;31m*    \u{1b}[0m] Job systemd-networkd-wait-online.se…start running (8s / no limit)\
         \r\u{1b}[K[\u{1b}[0;31m*\u{1b}[0;1;31m*\u{1b}[0m\u{1b}[0;31m*   \u{1b}[0m] Job systemd-networkd-wait-online.se…start running (9s / no limit)\r\n\
         \r\u{1b}[K[\u{1b}[0;31m *\u{1b}[0;1;31m*\u{1b}[0m\u{1b}[0;31m*  \u{1b}[0m] Job systemd-networkd-wait-online.se…start running (1min 59s / no limit)\r\n\
         [  121.3] systemd-networkd-wait-online[171]: Timeout occurred while waiting for network connectivity.\r\n\
         [\u{1b}[0;1;31mFAILED\u{1b}[0m] Failed to start \u{1b}[0;1;39msystemd-networkd-wait-online.service\u{1b}[0m - Wait for Network to be Configured.\r\n\
         [  OK  ] Reached target \u{1b}[0;1;39mnetwork-online.target\u{1b}[0m - Network is Online.\r\n\
         Starting \u{1b}[0;1;39mwaiter.service\u{1b}[0m - Agent that waits for the network...\r\n\
         [  OK  ] Started \u{1b}[0;1;39mwaiter.service\u{1b}[0m - Agent that waits for the network.\r\n\
         [  OK  ] Reached target multi-user.target - Multi-User System.\r\n\
         [  OK  ] Started late.service - Started after multi-user.\r\n";

    #[test]
    fn spinner_frames_are_quoted_first_and_last_and_the_waiting_unit_is_named() {
        let f = found(SPINNER_THEN_TIMEOUT);
        assert_eq!(f.len(), 1, "{f:?}");
        let f = &f[0];
        assert_eq!(f.rule, "waiting_on_network_online");
        assert!(
            f.cause
                .contains("waiter.service (waiting behind network-online.target)"),
            "{f:?}"
        );
        assert!(!f.cause.contains("late.service"), "{f:?}");
        assert!(
            f.cause
                .contains("the job systemd-networkd-wait-online.service/start"),
            "{f:?}"
        );
        let frames: Vec<&String> = f.evidence.iter().filter(|l| l.contains("Job ")).collect();
        assert_eq!(frames.len(), 2, "{:#?}", f.evidence);
        assert!(frames[0].ends_with("(7s / no limit)"), "{frames:?}");
        assert!(frames[1].ends_with("(1min 59s / no limit)"), "{frames:?}");
        assert!(f
            .evidence
            .iter()
            .any(|l| l.contains("Timeout occurred while waiting for network connectivity")));
        assert!(f
            .evidence
            .iter()
            .any(|l| l.starts_with("Starting waiter.service")));
        let mut unique = f.evidence.clone();
        unique.dedup();
        assert_eq!(unique, f.evidence, "each line once");
    }

    #[test]
    fn the_jobs_full_name_comes_from_an_uncut_line() {
        let f = found(
            "[ *** ] Job systemd-networkd-wait-online.service/start running (7s / no limit)\n",
        );
        assert!(
            f[0].cause
                .contains("the job systemd-networkd-wait-online.service/start,"),
            "{f:?}"
        );
    }

    #[test]
    fn the_wait_online_timeout_and_its_failure_are_one_finding() {
        let f = found("[\u{1b}[0;1;31m*** \u{1b}[0m] A start job is running for Wait for Network to be Configured (1min 55s / 2min 1s)\r\n\
             [  125.8] systemd-networkd-wait-online[171]: Timeout occurred while waiting for network connectivity.\r\n\
             [\u{1b}[0;1;31mFAILED\u{1b}[0m] Failed to start \u{1b}[0;1;39msystemd-networkd-wait-online.service\u{1b}[0m - Wait for Network to be Configured.\r\n\
             [  OK  ] Reached target network-online.target - Network is Online.\r\n");
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].rule, "waiting_on_network_online");
        assert!(f[0]
            .evidence
            .iter()
            .any(|l| l.contains("Timeout occurred while waiting for network connectivity")));
        assert!(f[0].evidence[0].starts_with("[*** ] A start job is running for Wait for Network"));
    }

    #[test]
    fn reaching_network_online_at_once_is_healthy() {
        assert!(found(
            "[   14.25] systemd[1]: Reached target network-online.target - Network is Online.\n"
        )
        .is_empty());
    }

    #[test]
    fn the_boot_reports_jobs_name_the_waiting_units() {
        use hearth_types::guest::BootReport;

        use super::super::{diagnose_with_agent, AgentFacts, Evidence};

        let agent = AgentFacts {
            boot_report: Some(BootReport {
                waiting_jobs: vec![
                    "104 sync.service start waiting".into(),
                    "87 network-online.target start waiting".into(),
                    "103 systemd-networkd-wait-online.service start running".into(),
                ],
                ..BootReport::default()
            }),
            ..AgentFacts::default()
        };
        let f = diagnose_with_agent(&Evidence::default(), &agent);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].cause
                .contains("sync.service (waiting behind network-online.target)"),
            "{f:?}"
        );
        assert_eq!(
            f[0].evidence,
            [
                "103 systemd-networkd-wait-online.service start running",
                "104 sync.service start waiting"
            ]
        );
    }

    #[test]
    fn an_early_report_where_every_job_waits_is_no_sign() {
        use hearth_types::guest::BootReport;

        use super::super::{diagnose_with_agent, AgentFacts, Evidence};

        // From a real Debian guest, the agent's report 0.5 s after it started.
        let agent = AgentFacts {
            boot_report: Some(BootReport {
                waiting_jobs: vec![
                    "63 systemd-networkd-wait-online.service start waiting".into(),
                    "68 systemd-update-utmp-runlevel.service start waiting".into(),
                    "61 sync.service start waiting".into(),
                ],
                ..BootReport::default()
            }),
            ..AgentFacts::default()
        };
        assert!(diagnose_with_agent(&Evidence::default(), &agent).is_empty());
    }
}
