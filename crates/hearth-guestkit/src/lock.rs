//! A cross-process exclusive lock on a file, so that several test processes
//! or CLI invocations build a shared kernel or image once, not concurrently.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Held until dropped; the kernel releases it if the process dies.
#[derive(Debug)]
pub struct BuildLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
#[error("could not lock {path}")]
pub struct LockError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

impl BuildLock {
    /// Blocks until the lock at `path` is ours, creating the file if needed.
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        Self::lock(path, libc::LOCK_EX).map(|l| l.expect("a blocking lock always ends held"))
    }

    /// Takes the lock only if no one holds it: `Ok(None)` when someone does.
    pub fn try_acquire(path: &Path) -> Result<Option<Self>, LockError> {
        Self::lock(path, libc::LOCK_EX | libc::LOCK_NB)
    }

    fn lock(path: &Path, op: libc::c_int) -> Result<Option<Self>, LockError> {
        let err = |source| LockError {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(err)?;
        loop {
            // SAFETY: flock(2) on a descriptor owned by `file`, alive for the call.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                return Ok(Some(BuildLock { _file: file }));
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => return Ok(None),
                _ => return Err(err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks/a.lock");
        let held = BuildLock::acquire(&path).unwrap();
        let other = File::open(&path).unwrap();
        // SAFETY: flock(2) on a descriptor owned by `other`.
        let rc = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, -1, "a second exclusive lock succeeded while held");
        drop(held);
        // SAFETY: as above.
        let rc = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, 0);
    }
}
