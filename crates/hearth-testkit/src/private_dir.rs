//! A test's own data directory, and the guarantee that it leaks no VM.
//!
//! `hearth serve` starts hypervisors detached (they outlive the server by
//! design), so a test that fails before destroying its VMs would leave QEMU
//! running for ever on a deleted directory. Dropping a [`PrivateDir`] kills
//! every process whose command line names the directory, then removes it.

use std::path::Path;

/// A temporary directory that kills the processes naming it when dropped.
#[derive(Debug)]
pub struct PrivateDir(tempfile::TempDir);

impl PrivateDir {
    /// A fresh directory named `<prefix>XXXXXX` under the system's temp dir.
    pub fn new(prefix: &str) -> PrivateDir {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("a temporary directory can be made");
        PrivateDir(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        kill_processes_naming(self.0.path());
    }
}

/// SIGKILLs every process (but this one) whose command line contains
/// `dir`: the hypervisors of VMs kept there.
pub fn kill_processes_naming(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id();
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        let names_dir = std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle));
        if names_dir && pid != me {
            // SAFETY: kill(2) on a process whose command line names this
            // test's own temporary directory; a pid that is gone meanwhile
            // only makes kill fail.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn dropping_the_directory_kills_the_processes_that_name_it() {
        let dir = PrivateDir::new("hearth-testkit-");
        let marker = dir.path().join("vm");
        let mut naming = Command::new("sleep")
            .arg("600")
            .arg(&marker)
            .spawn()
            .expect("sleep starts");
        let mut other = Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("sleep starts");
        let path = dir.path().to_owned();
        drop(dir);
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(s) = naming.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the process naming the dir survived"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(!status.success());
        assert!(
            other.try_wait().unwrap().is_none(),
            "an unrelated process was killed"
        );
        other.kill().unwrap();
        other.wait().unwrap();
        assert!(!path.exists(), "the directory is removed");
    }
}
