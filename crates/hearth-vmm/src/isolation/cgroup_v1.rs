//! cgroup v1: one hierarchy per controller, so a VM's cgroup is one
//! directory in each (memory, cpu, pids), each with its own knobs and
//! counters.

use std::path::{Path, PathBuf};

use super::cgroup::{
    keyed, read_number, write_file, write_if_present, Controller, Counters, Limits, CPU_PERIOD_US,
};

/// Creates `dir` in `controller`'s hierarchy and writes its limit.
pub(super) fn create(controller: Controller, dir: &Path, limits: &Limits) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    match controller {
        Controller::Memory => {
            let bytes = limits.memory_bytes.to_string();
            write_file(&dir.join("memory.limit_in_bytes"), &bytes)?;
            // With swap accounting, memory plus swap gets the same limit:
            // a hypervisor at its limit is not pushed into swap instead.
            write_if_present(&dir.join("memory.memsw.limit_in_bytes"), &bytes)
        }
        Controller::Cpu => {
            write_file(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write_file(
                &dir.join("cpu.cfs_quota_us"),
                &limits.cpu_quota_us.to_string(),
            )
        }
        Controller::Pids => write_file(&dir.join("pids.max"), &limits.pids.to_string()),
    }
}

/// The counters of a VM's directories: `memory.oom_control`'s `oom_kill`,
/// `memory.failcnt`, `memory.max_usage_in_bytes`, and `pids.events`' `max`.
pub(super) fn counters(dirs: &[(Controller, PathBuf)]) -> Counters {
    let dir = |c: Controller| dirs.iter().find(|(k, _)| *k == c).map(|(_, d)| d.as_path());
    let read = |d: Option<&Path>, name: &str| {
        d.and_then(|d| std::fs::read_to_string(d.join(name)).ok())
            .unwrap_or_default()
    };
    let memory = dir(Controller::Memory);
    Counters {
        oom_kills: keyed(&read(memory, "memory.oom_control"), "oom_kill").unwrap_or(0),
        memory_limit_hits: memory
            .and_then(|d| read_number(&d.join("memory.failcnt")))
            .unwrap_or(0),
        memory_peak_bytes: memory.and_then(|d| read_number(&d.join("memory.max_usage_in_bytes"))),
        memory_limit_bytes: memory.and_then(|d| read_number(&d.join("memory.limit_in_bytes"))),
        pids_limit_hits: keyed(&read(dir(Controller::Pids), "pids.events"), "max").unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory laid out like a v1 cgroup: its knobs exist (the kernel
    /// makes them with the directory), so writes go to files.
    fn fake_cgroup(root: &Path, files: &[&str]) -> PathBuf {
        let dir = root.join("hearth/vm-1");
        std::fs::create_dir_all(&dir).unwrap();
        for f in files {
            std::fs::write(dir.join(f), "").unwrap();
        }
        dir
    }

    #[test]
    fn each_controller_writes_its_own_knobs() {
        let t = tempfile::tempdir().unwrap();
        let limits = Limits::for_guest(256, 2, 256);
        let mem = fake_cgroup(&t.path().join("memory"), &["memory.limit_in_bytes"]);
        create(Controller::Memory, &mem, &limits).unwrap();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(
            read(mem.join("memory.limit_in_bytes")),
            (512u64 << 20).to_string()
        );
        assert!(
            !mem.join("memory.memsw.limit_in_bytes").exists(),
            "no swap accounting, no file"
        );
        let cpu = fake_cgroup(
            &t.path().join("cpu"),
            &["cpu.cfs_period_us", "cpu.cfs_quota_us"],
        );
        create(Controller::Cpu, &cpu, &limits).unwrap();
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "200000");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
        let pids = fake_cgroup(&t.path().join("pids"), &["pids.max"]);
        create(Controller::Pids, &pids, &limits).unwrap();
        assert_eq!(read(pids.join("pids.max")), "98");
    }

    #[test]
    fn a_refused_write_is_an_error_naming_the_file() {
        let t = tempfile::tempdir().unwrap();
        let dir = fake_cgroup(&t.path().join("memory"), &[]);
        std::fs::create_dir(dir.join("memory.limit_in_bytes")).unwrap();
        let err = create(Controller::Memory, &dir, &Limits::for_guest(64, 1, 0)).unwrap_err();
        assert!(err.to_string().contains("memory.limit_in_bytes"), "{err}");
    }

    #[test]
    fn counters_come_from_oom_control_failcnt_and_pids_events() {
        let t = tempfile::tempdir().unwrap();
        let mem = fake_cgroup(&t.path().join("memory"), &[]);
        std::fs::write(
            mem.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        std::fs::write(mem.join("memory.failcnt"), "42\n").unwrap();
        std::fs::write(mem.join("memory.max_usage_in_bytes"), "268435456\n").unwrap();
        std::fs::write(mem.join("memory.limit_in_bytes"), "402653184\n").unwrap();
        let pids = fake_cgroup(&t.path().join("pids"), &[]);
        std::fs::write(pids.join("pids.events"), "max 3\n").unwrap();
        let c = counters(&[(Controller::Memory, mem), (Controller::Pids, pids)]);
        assert_eq!(
            c,
            Counters {
                oom_kills: 1,
                memory_limit_hits: 42,
                memory_peak_bytes: Some(256 << 20),
                memory_limit_bytes: Some(384 << 20),
                pids_limit_hits: 3,
            }
        );
    }
}
