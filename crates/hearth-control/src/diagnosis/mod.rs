//! Why a VM failed, in plain words. Each rule reads the evidence a VM
//! leaves behind — its serial console, its hypervisor's log and exit, the
//! failure and events the store recorded, and what the in-guest agent
//! reported ([`AgentFacts`]) — and says what went wrong, which lines show
//! it, and what to do about it.
//!
//! Every rule is a pure function of [`Evidence`] and [`AgentFacts`]: the
//! diagnosis of a VM is the same while it runs, at the end of a foreground
//! run, and from the archived logs and stored records of a VM destroyed
//! last week. The console rules match the lines the kernel, hearth's
//! initramfs and init, systemd and journald print there; the agent's
//! records add services' exits and stderr, readiness and the boot report.
//! When both show the same thing there is one finding. `docs/diagnosis.md`
//! lists the rules.

mod agent_facts;
mod agent_never_connected;
mod crash_loop;
mod exec;
mod failed_unit;
mod failed_unit_report;
mod files;
mod hypervisor_exited;
mod initramfs;
mod kernel_not_elf;
mod kernel_panic;
mod log;
mod memory_limit;
mod missing_interpreter;
mod network_online;
mod never_ready;
mod out_of_memory;
mod readiness_never_passed;
mod service_crash_loop;
mod service_lines;
mod sigill;
mod stage;
mod units;

use hearth_types::api::Finding;
use hearth_types::{Failure, FailureCode};
use hearth_vmm::isolation::IsolationReport;
use hearth_vmm::ExitInfo;

pub use self::agent_facts::{AgentFacts, OutputLine, ServiceFacts, MAX_SERVICE_LINES};
pub use self::files::{read_isolation, read_logs, CONSOLE_LOG, HYPERVISOR_LOGS};
use self::log::Log;

/// Everything the rules read about one VM. Missing pieces are empty: a VM
/// that never started has no console, a foreground run has no events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// The guest's serial console as written (colour codes and carriage
    /// returns included; the rules clean each line).
    pub console: String,
    /// The hypervisor's own output: its stderr and, for Firecracker, its log.
    pub hypervisor_log: String,
    /// How the hypervisor process ended, when it is known and it was not
    /// hearth that killed it (a deadline's kill is not a crash).
    pub exit: Option<ExitInfo>,
    /// The failure the VM was recorded with (`hearth serve`), or the one a
    /// foreground run's verdict amounts to.
    pub failure: Option<Failure>,
    /// The messages of the VM's events, oldest first.
    pub events: Vec<String>,
    /// The guest's memory, when known.
    pub memory_mib: Option<u32>,
    /// What isolation the hypervisor had and what its cgroup counted when
    /// it ended (the VM directory's `isolation.json`), when known.
    pub isolation: Option<IsolationReport>,
}

/// The findings of every rule from the logs alone (no agent facts), most
/// likely cause first. A healthy VM has none.
pub fn diagnose(evidence: &Evidence) -> Vec<Finding> {
    diagnose_with_agent(evidence, &AgentFacts::default())
}

/// The findings of every rule from the logs and what the in-guest agent
/// reported, most likely cause first. A healthy VM has none.
pub fn diagnose_with_agent(evidence: &Evidence, agent: &AgentFacts) -> Vec<Finding> {
    let input = Input::new(evidence, agent);
    RULES.iter().flat_map(|rule| rule(&input)).collect()
}

/// A rule: the evidence in, its findings out (usually none or one).
type Rule = fn(&Input) -> Vec<Finding>;

/// In the order findings are reported: what stops a boot or kills a
/// process comes before the panics, failed units, timeouts and exits it
/// leads to.
const RULES: &[Rule] = &[
    memory_limit::check,
    kernel_not_elf::check,
    initramfs::check,
    out_of_memory::check,
    sigill::check,
    exec::check_format,
    missing_interpreter::check,
    exec::check_library,
    kernel_panic::check,
    crash_loop::check,
    service_crash_loop::check,
    failed_unit::check,
    network_online::check,
    readiness_never_passed::check,
    agent_never_connected::check,
    never_ready::check,
    hypervisor_exited::check,
    hypervisor_exited::check_not_started,
];

/// The evidence with its logs split into clean lines, once for all rules.
#[derive(Debug)]
struct Input<'a> {
    console: Log,
    hypervisor: Log,
    evidence: &'a Evidence,
    agent: &'a AgentFacts,
}

impl<'a> Input<'a> {
    fn new(evidence: &'a Evidence, agent: &'a AgentFacts) -> Self {
        Input {
            console: Log::new(&evidence.console),
            hypervisor: Log::new(&evidence.hypervisor_log),
            evidence,
            agent,
        }
    }

    fn failure_code(&self) -> Option<FailureCode> {
        self.evidence.failure.as_ref().map(|f| f.code)
    }
}

/// A finding; evidence lines are capped in length so one runaway line
/// cannot swamp a report, and each is quoted once (in its first place):
/// a service that ran three times printed the same words three times.
fn finding(
    rule: &str,
    cause: impl Into<String>,
    evidence: Vec<String>,
    fix: impl Into<String>,
) -> Finding {
    let mut lines: Vec<String> = Vec::with_capacity(evidence.len());
    for line in evidence.iter().map(|l| log::cap(l)) {
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    Finding {
        rule: rule.to_owned(),
        cause: cause.into(),
        evidence: lines,
        fix: fix.into(),
    }
}

/// The findings for a console log alone (for the rules' unit tests).
#[cfg(test)]
fn diagnose_console(console: &str) -> Vec<Finding> {
    diagnose(&Evidence {
        console: console.into(),
        ..Evidence::default()
    })
}

#[cfg(test)]
mod tests;
