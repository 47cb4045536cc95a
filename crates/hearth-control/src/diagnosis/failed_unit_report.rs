//! `failed_unit` from the agent's boot report: the units systemd lists as
//! failed, each with its last lines from the journal. The console shows a
//! unit's output only when journald forwards it there; the agent reads the
//! journal itself, so its report says why even on a quiet console.

use hearth_types::api::Finding;
use hearth_types::guest::FailedUnit;

use super::failed_unit::fix;
use super::finding;

/// Journal lines quoted per unit.
const LAST_LINES: usize = 4;

/// A failed unit only the boot report names.
pub(super) fn unit_finding(unit: &FailedUnit) -> Finding {
    let mut evidence = last_lines(unit);
    let quiet = evidence.is_empty();
    evidence.push(format!("systemd lists {} as failed", unit.unit));
    finding(
        "failed_unit",
        format!("systemd could not start {}", unit.unit),
        evidence,
        fix(&unit.unit, quiet),
    )
}

/// Puts the report's lines in front of a console finding that had none,
/// and its full unit name where the console had `shown` (perhaps
/// shortened).
pub(super) fn add_last_lines(found: &mut Finding, shown: &str, unit: &FailedUnit) {
    let mut evidence = last_lines(unit);
    if evidence.is_empty() {
        return;
    }
    evidence.append(&mut found.evidence);
    *found = finding(
        "failed_unit",
        found.cause.replacen(shown, &unit.unit, 1),
        evidence,
        fix(&unit.unit, false),
    );
}

fn last_lines(unit: &FailedUnit) -> Vec<String> {
    let lines = &unit.last_lines;
    lines[lines.len().saturating_sub(LAST_LINES)..].to_vec()
}

#[cfg(test)]
mod tests {
    use hearth_types::guest::{BootReport, FailedUnit};

    use super::super::{diagnose_with_agent, AgentFacts, Evidence};

    fn report(lines: &[&str]) -> AgentFacts {
        AgentFacts {
            boot_report: Some(BootReport {
                failed_units: vec![FailedUnit {
                    unit: "setup.service".into(),
                    last_lines: lines.iter().map(|l| l.to_string()).collect(),
                }],
                ..BootReport::default()
            }),
            ..AgentFacts::default()
        }
    }

    const STATUS: &str = "[FAILED] Failed to start setup.service - One-time setup.\n";

    #[test]
    fn a_unit_only_the_report_names_comes_with_its_last_lines() {
        let agent = report(&["sh[204]: cannot find /etc/setup.conf"]);
        let f = diagnose_with_agent(&Evidence::default(), &agent);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].rule, "failed_unit");
        assert_eq!(f[0].cause, "systemd could not start setup.service");
        assert_eq!(
            f[0].evidence,
            [
                "sh[204]: cannot find /etc/setup.conf",
                "systemd lists setup.service as failed"
            ]
        );
        assert!(f[0].fix.contains("last output"), "{f:?}");
    }

    #[test]
    fn a_quiet_console_finding_gets_the_reports_lines_once() {
        let console = Evidence {
            console: STATUS.into(),
            ..Evidence::default()
        };
        let f = diagnose_with_agent(&console, &report(&["sh[204]: cannot find /etc/setup.conf"]));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].cause.contains("(One-time setup)"), "{f:?}");
        assert_eq!(
            f[0].evidence,
            [
                "sh[204]: cannot find /etc/setup.conf",
                "[FAILED] Failed to start setup.service - One-time setup."
            ]
        );
        assert!(!f[0].fix.contains("ForwardToConsole"), "{f:?}");
        // No lines in the report either: the console's finding as it was.
        let f = diagnose_with_agent(&console, &report(&[]));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].fix.contains("ForwardToConsole"), "{f:?}");
    }

    #[test]
    fn a_status_line_shortened_on_the_console_is_the_reports_unit() {
        // From a real Debian guest: journald has systemd's own log, so the
        // console has only the shortened status line.
        let console = Evidence {
            console: "[FAILED] Failed to start site-setti…vice - Load the site settings.\n".into(),
            ..Evidence::default()
        };
        let mut agent = report(&["settings: cannot read /etc/site/settings.conf"]);
        agent.boot_report.as_mut().unwrap().failed_units[0].unit = "site-settings.service".into();
        let f = diagnose_with_agent(&console, &agent);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(
            f[0].cause,
            "systemd could not start site-settings.service (Load the site settings)"
        );
        assert_eq!(
            f[0].evidence[0],
            "settings: cannot read /etc/site/settings.conf"
        );
        assert!(f[0].fix.contains("last output"), "{f:?}");
    }
}
