//! The one part of the diagnosis that touches the host: reading a VM
//! directory's logs (live, a foreground run's, or an archive) into
//! [`Evidence`](super::Evidence). The same files in any of those places
//! give the same evidence.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use hearth_vmm::isolation::IsolationReport;

/// The guest's serial console.
pub const CONSOLE_LOG: &str = "console.log";
/// The hypervisor's stderr, and Firecracker's own log.
pub const HYPERVISOR_LOGS: [&str; 2] = ["hypervisor.log", "firecracker.log"];
/// A log up to this size is read whole; a longer one as its head (the
/// boot) and its tail (the end), where the rules look.
const WHOLE: u64 = 8 << 20;
const HEAD: u64 = 1 << 20;
const TAIL: u64 = 4 << 20;

/// The console and the hypervisor logs (joined) of the VM directory `dir`.
/// Missing files read as empty: a VM that never started has no console.
pub fn read_logs(dir: &Path) -> std::io::Result<(String, String)> {
    let console = read_capped(&dir.join(CONSOLE_LOG))?;
    let mut hypervisor = String::new();
    for name in HYPERVISOR_LOGS {
        let text = read_capped(&dir.join(name))?;
        hypervisor.push_str(&text);
        if !text.is_empty() && !text.ends_with('\n') {
            hypervisor.push('\n');
        }
    }
    Ok((console, hypervisor))
}

/// What isolation the VM of directory `dir` had (its `isolation.json`).
pub fn read_isolation(dir: &Path) -> Option<IsolationReport> {
    IsolationReport::read(dir)
}

/// A log file, never through a link and only if it is a regular file: the
/// VM's directory was writable by its hypervisor's user, which could have
/// put a link to one of the host's files where a log was expected.
fn read_capped(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let mut file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        // A link (ELOOP) or a socket (ENXIO): not a log.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENXIO)) => {
            return Ok(String::new())
        }
        Err(e) => return Err(e),
    };
    if !file.metadata()?.is_file() {
        return Ok(String::new());
    }
    let len = file.metadata()?.len();
    let mut bytes = Vec::new();
    if len <= WHOLE {
        file.read_to_end(&mut bytes)?;
    } else {
        file.by_ref().take(HEAD).read_to_end(&mut bytes)?;
        bytes.extend_from_slice(b"\n[... hearth: the middle of this log was not read ...]\n");
        file.seek(SeekFrom::Start(len - TAIL))?;
        file.read_to_end(&mut bytes)?;
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_empty_and_hypervisor_logs_are_joined() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_logs(dir.path()).unwrap(),
            (String::new(), String::new())
        );
        std::fs::write(dir.path().join("console.log"), "hearth: ready\n").unwrap();
        std::fs::write(dir.path().join("hypervisor.log"), "stderr line").unwrap();
        std::fs::write(dir.path().join("firecracker.log"), "log line\n").unwrap();
        let (console, hypervisor) = read_logs(dir.path()).unwrap();
        assert_eq!(console, "hearth: ready\n");
        assert_eq!(hypervisor, "stderr line\nlog line\n");
    }

    #[test]
    fn a_link_where_a_log_should_be_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("host-secret");
        std::fs::write(&secret, "not for the tenant").unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("firecracker.log")).unwrap();
        std::os::unix::net::UnixListener::bind(dir.path().join("hypervisor.log")).unwrap();
        let (_, hypervisor) = read_logs(dir.path()).unwrap();
        assert_eq!(hypervisor, "");
    }

    #[test]
    fn a_huge_log_is_read_as_its_head_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = "Linux version 6.1\n".to_owned();
        text.push_str(&"x".repeat(10 << 20));
        text.push_str("\nhearth: exit status 132\n");
        std::fs::write(dir.path().join("console.log"), &text).unwrap();
        let (console, _) = read_logs(dir.path()).unwrap();
        assert!(console.starts_with("Linux version 6.1\n"));
        assert!(console.ends_with("hearth: exit status 132\n"));
        assert!(console.len() < 6 << 20);
    }
}
