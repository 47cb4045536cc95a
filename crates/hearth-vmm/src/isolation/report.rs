//! What isolation one VM got, kept in its run directory as
//! `isolation.json` (and archived with its logs): its user, its cgroup and
//! limits, the seccomp sandbox, the jailer, what was off and why, and the
//! cgroup's counters when the hypervisor ended. The diagnosis reads it to
//! tell a VM killed at its memory limit from any other killed hypervisor.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cgroup::{Counters, Limits};

/// The file name in the run directory.
pub const REPORT_FILE: &str = "isolation.json";

/// One VM's isolation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolationReport {
    /// The uid (and gid) the hypervisor ran as; none when it ran as hearth.
    pub uid: Option<u32>,
    pub cgroup: Option<CgroupReport>,
    /// QEMU's seccomp sandbox was on.
    pub seccomp: bool,
    /// Firecracker ran through its jailer.
    pub jailer: bool,
    /// Each part that was off, and why (`user: hearth is not root`).
    pub off: Vec<String>,
    /// The cgroup's counters when the hypervisor ended.
    pub exit: Option<Counters>,
}

/// A VM's cgroup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupReport {
    pub version: u8,
    pub paths: Vec<PathBuf>,
    pub limits: Limits,
    /// The part of the memory limit that is for the hypervisor itself.
    pub overhead_mib: u32,
}

impl IsolationReport {
    /// The report of the run directory `dir`, if it has one.
    pub fn read(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join(REPORT_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes it to `dir` (replacing an earlier one). Only while no process
    /// of the VM's user runs: the temporary file's name is removed first,
    /// but a running hypervisor could make it again.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let path = dir.join(REPORT_FILE);
        let tmp = dir.join(format!(".{REPORT_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        std::io::Write::write_all(&mut file, text.as_bytes())?;
        std::fs::rename(&tmp, &path)
    }

    /// Whether the memory controller's OOM killer killed in the cgroup.
    pub fn oom_killed(&self) -> bool {
        self.exit.is_some_and(|c| c.oom_kills > 0)
    }

    /// One line for a VM's events: what is on, then what is off.
    pub fn summary(&self) -> String {
        let mut on = Vec::new();
        if let Some(uid) = self.uid {
            on.push(format!("uid {uid}"));
        }
        if let Some(c) = &self.cgroup {
            on.push(format!(
                "cgroup v{} (memory {} MiB, {} CPU, {} tasks)",
                c.version,
                c.limits.memory_bytes >> 20,
                c.limits.cpu_quota_us as f64 / super::cgroup::CPU_PERIOD_US as f64,
                c.limits.pids
            ));
        }
        if self.seccomp {
            on.push("seccomp".to_owned());
        }
        if self.jailer {
            on.push("jailer".to_owned());
        }
        let mut line = if on.is_empty() {
            "isolation: none".to_owned()
        } else {
            format!("isolation: {}", on.join(", "))
        };
        if !self.off.is_empty() {
            line.push_str(&format!("; off: {}", self.off.join("; ")));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_round_trips_through_its_file_and_sums_up_in_a_line() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(IsolationReport::read(dir.path()), None);
        let report = IsolationReport {
            uid: Some(2_000_000_007),
            cgroup: Some(CgroupReport {
                version: 1,
                paths: vec!["/sys/fs/cgroup/memory/hearth/vm-1".into()],
                limits: Limits::for_guest(256, 1, 256),
                overhead_mib: 256,
            }),
            seccomp: true,
            jailer: false,
            off: vec!["jailer: not a Firecracker VM".into()],
            exit: None,
        };
        report.write(dir.path()).unwrap();
        assert_eq!(IsolationReport::read(dir.path()), Some(report.clone()));
        assert_eq!(
            report.summary(),
            "isolation: uid 2000000007, cgroup v1 (memory 512 MiB, 1 CPU, 97 tasks), seccomp; \
             off: jailer: not a Firecracker VM"
        );
        assert!(!report.oom_killed());
    }
}
