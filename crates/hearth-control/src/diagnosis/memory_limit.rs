//! `memory_limit`: the VM's hypervisor went over the VM's memory limit and
//! the memory controller of its cgroup killed it. From the guest's side the
//! VM just stops; from outside the hypervisor was killed by signal 9, as if
//! by the host's OOM killer or a person. The cgroup's counters, recorded in
//! the VM's `isolation.json` when the hypervisor ended, tell them apart.

use hearth_types::api::Finding;
use hearth_vmm::isolation::{CgroupReport, Counters};

use super::{finding, Input};

/// Console and hypervisor log lines quoted after the counters.
const LOG_LINES: usize = 2;

pub(super) fn check(input: &Input) -> Vec<Finding> {
    let Some(report) = &input.evidence.isolation else {
        return Vec::new();
    };
    let (Some(counters), Some(cgroup)) = (report.exit, &report.cgroup) else {
        return Vec::new();
    };
    if counters.oom_kills == 0 {
        return Vec::new();
    }
    let set = cgroup.limits.memory_bytes >> 20;
    let overhead = u64::from(cgroup.overhead_mib);
    let guest = limit_parts(set, overhead);
    let mut evidence = counter_lines(cgroup, &counters);
    evidence.extend(input.hypervisor.tail(LOG_LINES));
    evidence.extend(input.console.tail(LOG_LINES));
    let (cause, fix) = match counters.memory_limit_bytes.map(|b| b >> 20) {
        Some(actual) if actual < set => (
            format!(
                "the VM's hypervisor went over its cgroup's memory limit of {actual} MiB and the \
                 cgroup's OOM killer killed it: the guest stopped at once. hearth had set the \
                 limit at {set} MiB ({guest}); it was lowered since"
            ),
            "the limit was lowered outside hearth: leave the VMs' cgroups (`hearth/<vm-id>`) \
             to hearth, which sets them from the VM's memory"
                .to_owned(),
        ),
        _ => (
            format!(
                "the VM's hypervisor went over the VM's memory limit of {set} MiB ({guest}) and \
                 its cgroup's OOM killer killed it: the guest stopped at once"
            ),
            format!(
                "a guest cannot use more than its own memory, so the hypervisor's own use grew \
                 past its {overhead} MiB (under TCG mostly its translation cache): give the VM \
                 more memory (--memory, or memory_mib in the API), which raises the limit with it"
            ),
        ),
    };
    vec![finding("memory_limit", cause, evidence, fix)]
}

/// `256 MiB of guest memory and 1280 MiB for the hypervisor itself`.
fn limit_parts(limit_mib: u64, overhead_mib: u64) -> String {
    format!(
        "{} MiB of guest memory and {overhead_mib} MiB for the hypervisor itself",
        limit_mib.saturating_sub(overhead_mib)
    )
}

/// What the cgroup counted, as lines of evidence.
fn counter_lines(cgroup: &CgroupReport, c: &Counters) -> Vec<String> {
    let path = cgroup
        .paths
        .first()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut lines = vec![format!(
        "cgroup v{} {path}: oom_kill {}, memory limit reached {} times",
        cgroup.version, c.oom_kills, c.memory_limit_hits
    )];
    if let Some(limit) = c.memory_limit_bytes {
        lines.push(format!("memory limit at the end {} MiB", limit >> 20));
    }
    if let Some(peak) = c.memory_peak_bytes {
        lines.push(format!("peak memory use {} MiB", peak >> 20));
    }
    if c.pids_limit_hits > 0 {
        lines.push(format!(
            "{} new tasks refused at the limit of {}",
            c.pids_limit_hits, cgroup.limits.pids
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use hearth_types::{Failure, FailureCode};
    use hearth_vmm::isolation::{CgroupReport, Counters, IsolationReport, Limits};
    use hearth_vmm::ExitInfo;

    use super::super::{diagnose, Evidence};

    fn killed_at_the_limit(oom_kills: u64) -> Evidence {
        Evidence {
            console: "[    5.1] Run /init as init process\nhearth: ready\n".into(),
            exit: Some(ExitInfo {
                code: None,
                signal: Some(9),
            }),
            failure: Some(Failure {
                code: FailureCode::HypervisorExited,
                message: "the hypervisor was killed at the VM's memory limit".into(),
            }),
            memory_mib: Some(256),
            isolation: Some(IsolationReport {
                uid: Some(2_000_000_001),
                cgroup: Some(CgroupReport {
                    version: 1,
                    paths: vec!["/sys/fs/cgroup/memory/hearth/vm-1".into()],
                    limits: Limits::for_guest(256, 1, 1280),
                    overhead_mib: 1280,
                }),
                seccomp: true,
                exit: Some(Counters {
                    oom_kills,
                    memory_limit_hits: 12,
                    memory_peak_bytes: Some(1536 << 20),
                    memory_limit_bytes: Some(1536 << 20),
                    pids_limit_hits: 0,
                }),
                ..IsolationReport::default()
            }),
            ..Evidence::default()
        }
    }

    #[test]
    fn a_hypervisor_killed_by_its_cgroup_names_the_limit_and_only_that() {
        let found = diagnose(&killed_at_the_limit(1));
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(f.rule, "memory_limit");
        assert!(
            f.cause.contains("1536 MiB") && f.cause.contains("256 MiB of guest memory"),
            "{f:?}"
        );
        assert!(f.evidence[0].contains("oom_kill 1"), "{f:?}");
        assert!(f.evidence[2].contains("peak memory use 1536 MiB"), "{f:?}");
        assert!(f.fix.contains("--memory"), "{f:?}");
    }

    #[test]
    fn a_limit_lowered_behind_hearths_back_is_named_as_such() {
        let mut ev = killed_at_the_limit(1);
        let report = ev.isolation.as_mut().unwrap();
        report.exit.as_mut().unwrap().memory_limit_bytes = Some(241 << 20);
        let f = &diagnose(&ev)[0];
        assert_eq!(f.rule, "memory_limit");
        assert!(
            f.cause.contains("limit of 241 MiB") && f.cause.contains("lowered since"),
            "{f:?}"
        );
        assert!(f.fix.contains("outside hearth"), "{f:?}");
    }

    #[test]
    fn without_an_oom_kill_a_killed_hypervisor_is_the_other_rules_business() {
        let found = diagnose(&killed_at_the_limit(0));
        assert!(found.iter().all(|f| f.rule != "memory_limit"), "{found:#?}");
        assert!(
            found.iter().any(|f| f.rule == "hypervisor_exited"),
            "{found:#?}"
        );
    }
}
