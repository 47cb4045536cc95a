//! Finding a virtio-serial port by the name the host gave it. Without udev
//! there are no `/dev/virtio-ports/NAME` links, so the name is read from
//! sysfs: `/sys/class/virtio-ports/vport1p1/name` holds it, and the device
//! node has the entry's name, `/dev/vport1p1`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const SYS_DIR: &str = "/sys/class/virtio-ports";

#[derive(Debug, thiserror::Error)]
#[error("no virtio-serial port named {name:?} appeared in {sys_dir} within {waited:?}")]
pub struct NotFound {
    name: String,
    sys_dir: String,
    waited: Duration,
}

/// Polls `sys_dir` until a port named `name` exists; returns its device node.
pub fn wait_for(sys_dir: &str, name: &str, timeout: Duration) -> Result<PathBuf, NotFound> {
    let start = Instant::now();
    loop {
        if let Some(found) = find(Path::new(sys_dir), name) {
            return Ok(found);
        }
        if start.elapsed() >= timeout {
            return Err(NotFound {
                name: name.to_owned(),
                sys_dir: sys_dir.to_owned(),
                waited: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `/dev` node of the port named `name`, if sysfs lists one.
pub fn find(sys_dir: &Path, name: &str) -> Option<PathBuf> {
    std::fs::read_dir(sys_dir)
        .ok()?
        .flatten()
        .find(|entry| {
            std::fs::read_to_string(entry.path().join("name"))
                .is_ok_and(|n| n.trim_end_matches('\n') == name)
        })
        .map(|entry| Path::new("/dev").join(entry.file_name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysfs(ports: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (entry, name) in ports {
            std::fs::create_dir(dir.path().join(entry)).unwrap();
            std::fs::write(dir.path().join(entry).join("name"), format!("{name}\n")).unwrap();
        }
        dir
    }

    #[test]
    fn a_port_is_found_by_name_and_mapped_to_dev() {
        let dir = sysfs(&[("vport1p1", "other"), ("vport1p2", "hearth.agent")]);
        assert_eq!(
            find(dir.path(), "hearth.agent"),
            Some(PathBuf::from("/dev/vport1p2"))
        );
        assert_eq!(find(dir.path(), "missing"), None);
    }

    #[test]
    fn a_missing_port_times_out_with_its_name() {
        let dir = sysfs(&[]);
        let sys = dir.path().to_str().unwrap();
        let err = wait_for(sys, "hearth.agent", Duration::from_millis(60)).unwrap_err();
        assert!(err.to_string().contains("\"hearth.agent\""), "{err}");
    }
}
