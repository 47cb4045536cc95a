//! cgroup v2: one hierarchy, so a VM's cgroup is one directory with
//! `memory.max`, `cpu.max` and `pids.max`. A child gets a controller only
//! when each parent lists it in `cgroup.subtree_control`, so those are
//! written first, from the top of the hierarchy down to `hearth/`.

use std::path::Path;

use super::cgroup::{
    keyed, read_number, write_file, write_if_present, Controller, Counters, Limits, CPU_PERIOD_US,
    HEARTH_DIR,
};

/// Creates the VM's cgroup `dir` under `<mount>/hearth` with `limits`.
pub(super) fn create(
    mount: &Path,
    dir: &Path,
    controllers: &[Controller],
    limits: &Limits,
) -> std::io::Result<()> {
    let hearth = mount.join(HEARTH_DIR);
    enable(mount, controllers)?;
    std::fs::create_dir_all(&hearth)?;
    enable(&hearth, controllers)?;
    std::fs::create_dir_all(dir)?;
    for c in controllers {
        match c {
            Controller::Memory => {
                write_file(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
                // No swapping past the limit: at the limit is at the limit.
                write_if_present(&dir.join("memory.swap.max"), "0")?;
            }
            Controller::Cpu => write_file(
                &dir.join("cpu.max"),
                &format!("{} {CPU_PERIOD_US}", limits.cpu_quota_us),
            )?,
            Controller::Pids => write_file(&dir.join("pids.max"), &limits.pids.to_string())?,
        }
    }
    Ok(())
}

/// Lists `controllers` in `dir`'s `cgroup.subtree_control`: writes
/// `+name` for each one not listed yet (the kernel adds them to those
/// already enabled).
fn enable(dir: &Path, controllers: &[Controller]) -> std::io::Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let current = std::fs::read_to_string(&file).unwrap_or_default();
    let listed: Vec<&str> = current
        .split_whitespace()
        .map(|w| w.trim_start_matches('+'))
        .collect();
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| !listed.contains(&c.name()))
        .map(|c| format!("+{}", c.name()))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write_file(&file, &missing.join(" ")).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "{e} (cgroup v2 hands a controller to children only from a cgroup that holds no \
                 processes: run hearth where the hierarchy's top can, such as the host's root \
                 cgroup)"
            ),
        )
    })
}

/// The counters of a VM's cgroup: `memory.events` (`oom_kill`, `max`),
/// `memory.peak` and `pids.events` (`max`).
pub(super) fn counters(dir: &Path) -> Counters {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let memory = read("memory.events");
    Counters {
        oom_kills: keyed(&memory, "oom_kill").unwrap_or(0),
        memory_limit_hits: keyed(&memory, "max").unwrap_or(0),
        memory_peak_bytes: read_number(&dir.join("memory.peak")),
        // `max` (no limit) does not parse: none.
        memory_limit_bytes: read_number(&dir.join("memory.max")),
        pids_limit_hits: keyed(&read("pids.events"), "max").unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn read(p: PathBuf) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn controllers_are_enabled_down_to_hearth_and_limits_written() {
        let mount = tempfile::tempdir().unwrap();
        let root = mount.path();
        std::fs::write(root.join("cgroup.subtree_control"), "cpuset io\n").unwrap();
        let dir = root.join("hearth/vm-1");
        let limits = Limits::for_guest(256, 2, 256);
        create(root, &dir, &Controller::ALL, &limits).unwrap();
        assert_eq!(
            read(root.join("cgroup.subtree_control")),
            "+memory +cpu +pids"
        );
        assert_eq!(
            read(root.join("hearth/cgroup.subtree_control")),
            "+memory +cpu +pids"
        );
        assert_eq!(read(dir.join("memory.max")), (512u64 << 20).to_string());
        assert_eq!(read(dir.join("cpu.max")), "200000 100000");
        assert_eq!(read(dir.join("pids.max")), "98");
        assert!(
            !dir.join("memory.swap.max").exists(),
            "no swap controller, no file"
        );
    }

    #[test]
    fn enabled_controllers_are_not_written_again_and_missing_ones_are_skipped() {
        let mount = tempfile::tempdir().unwrap();
        let root = mount.path();
        std::fs::write(root.join("cgroup.subtree_control"), "memory\n").unwrap();
        std::fs::create_dir(root.join("hearth")).unwrap();
        std::fs::write(root.join("hearth/cgroup.subtree_control"), "memory\n").unwrap();
        let dir = root.join("hearth/vm-1");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("memory.swap.max"), "max").unwrap();
        create(
            root,
            &dir,
            &[Controller::Memory],
            &Limits::for_guest(64, 1, 0),
        )
        .unwrap();
        assert_eq!(read(root.join("cgroup.subtree_control")), "memory\n");
        assert_eq!(read(dir.join("memory.swap.max")), "0");
        assert!(!dir.join("cpu.max").exists() && !dir.join("pids.max").exists());
    }

    #[test]
    fn a_refused_subtree_control_says_why() {
        let mount = tempfile::tempdir().unwrap();
        std::fs::create_dir(mount.path().join("cgroup.subtree_control")).unwrap();
        let dir = mount.path().join("hearth/vm-1");
        let err = create(
            mount.path(),
            &dir,
            &Controller::ALL,
            &Limits::for_guest(64, 1, 0),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("cgroup.subtree_control") && err.contains("holds no processes"),
            "{err}"
        );
    }

    #[test]
    fn counters_come_from_memory_and_pids_events() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("memory.events"),
            "low 0\nhigh 0\nmax 17\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("memory.peak"), "402653184\n").unwrap();
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.path().join("pids.events"), "max 0\n").unwrap();
        let c = counters(dir.path());
        assert_eq!(
            c,
            Counters {
                oom_kills: 1,
                memory_limit_hits: 17,
                memory_peak_bytes: Some(384 << 20),
                memory_limit_bytes: None,
                pids_limit_hits: 0,
            }
        );
    }
}
