//! `out_of_memory`: the guest ran out of memory and the kernel's OOM killer
//! killed a process (`Out of memory: Killed process 130 (sh) ...`). The
//! victim is often the program that was meant to run, which then just
//! "dies": a crashed service, an exit status of 137, a panic if it was
//! init.

use hearth_types::api::Finding;

use super::log::message;
use super::{finding, Input};

/// How many kills are quoted.
const MAX_KILLS: usize = 3;

pub(super) fn check(input: &Input) -> Vec<Finding> {
    let log = &input.console;
    let kills = log.matching(|l| killed_process(l).is_some());
    let systemd = log.matching(|l| l.contains("killed by the OOM killer"));
    if kills.is_empty() && systemd.is_empty() {
        return Vec::new();
    }
    let mut victims: Vec<String> = kills
        .iter()
        .filter_map(|&i| killed_process(&log.lines()[i]))
        .map(|(pid, name)| format!("{name} (pid {pid})"))
        .collect();
    victims.dedup();
    let mut shown: Vec<usize> = log
        .position(|l| l.contains("invoked oom-killer"))
        .into_iter()
        .collect();
    shown.extend(kills.iter().rev().take(MAX_KILLS));
    shown.extend(systemd.iter().take(2));
    let who = match victims.as_slice() {
        [] => "a service's process".to_owned(),
        [one] => one.clone(),
        many => format!("{} processes: {}", many.len(), many.join(", ")),
    };
    let memory = input
        .evidence
        .memory_mib
        .map(|m| format!(" (it has {m} MiB)"))
        .unwrap_or_default();
    vec![finding(
        "out_of_memory",
        format!("the guest ran out of memory{memory} and the kernel killed {who}"),
        log.pick(&shown),
        format!(
            "give the VM more memory (--memory, or memory_mib in the API){}, or make the \
             program use less",
            input
                .evidence
                .memory_mib
                .map(|m| format!(": try {} MiB", m.saturating_mul(2)))
                .unwrap_or_default()
        ),
    )]
}

/// `Out of memory: Killed process 130 (sh) total-vm:...` → (130, "sh");
/// also the memory-cgroup variant.
fn killed_process(line: &str) -> Option<(u32, &str)> {
    let msg = message(line);
    let (_, rest) = msg
        .split_once("out of memory: Killed process ")
        .or_else(|| msg.split_once("Out of memory: Killed process "))?;
    let (pid, rest) = rest.split_once(' ')?;
    let name = rest.strip_prefix('(')?.split_once(')')?.0;
    Some((pid.parse().ok()?, name))
}

#[cfg(test)]
mod tests {
    use super::super::{diagnose, Evidence};

    /// From a real run: `--memory 128 -- sh -c 'x=a; while :; do x=$x$x; done'`.
    const OOM: &str = "hearth: ready\r
[    8.967763] sh invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, oom_score_adj=0\r
[    8.968201] CPU: 0 PID: 130 Comm: sh Not tainted 6.1.0-56-cloud-amd64 #1  Debian 6.1.192-2\r
[    8.978796] [  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name\r
[    8.979137] [    119]     0   119      565       16    28672        0             0 sh\r
[    8.979301] [    130]     0   130    41527    16475   196608        0             0 sh\r
[    8.979461] oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task=sh,pid=130,uid=0\r
[    8.980874] Out of memory: Killed process 130 (sh) total-vm:166108kB, anon-rss:65900kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:192kB oom_score_adj:0\r
Killed\r
\r
hearth: exit status 137\r
hearth: power off\r
";

    #[test]
    fn the_killed_process_and_the_memory_are_named() {
        let ev = Evidence {
            console: OOM.into(),
            memory_mib: Some(128),
            ..Evidence::default()
        };
        let found = diagnose(&ev);
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!(f.rule, "out_of_memory");
        assert!(
            f.cause.contains("sh (pid 130)") && f.cause.contains("128 MiB"),
            "{f:?}"
        );
        assert!(f
            .evidence
            .iter()
            .any(|l| l.contains("Out of memory: Killed process 130 (sh)")));
        assert!(f.evidence[0].contains("invoked oom-killer"));
        assert!(f.fix.contains("--memory") && f.fix.contains("256 MiB"));
    }

    #[test]
    fn a_service_killed_by_the_oom_killer_is_found_through_systemd() {
        let ev = Evidence {
            console: "[   41.0] systemd[1]: agent.service: A process of this unit has been killed by the OOM killer.\n\
                      [   41.1] systemd[1]: agent.service: Failed with result 'oom-kill'.\n"
                .into(),
            ..Evidence::default()
        };
        let found = diagnose(&ev);
        assert_eq!(found[0].rule, "out_of_memory");
        assert!(found[0].evidence[0].contains("killed by the OOM killer"));
    }
}
