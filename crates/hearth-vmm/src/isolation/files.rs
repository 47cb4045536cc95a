//! The files a VM's hypervisor may touch, and only those. Its run
//! directory is root's with the VM's group (`01770`: the hypervisor makes
//! its sockets there; the sticky bit keeps it from removing or replacing
//! what hearth made, such as the console log); its writable disks are the
//! VM user's (`0600`). Shared read-only files (kernel, initramfs, base
//! image) must be readable by everyone, as hearth's own are; a kernel or
//! initramfs that is not is copied into the run directory for the VM.
//! When the hypervisor ends, everything in the run directory goes back to
//! root.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The run directory while a VM runs: root's, the VM's group, sticky.
pub const RUN_DIR_MODE: u32 = 0o1770;
/// The run directory once the VM ended: root's alone.
pub const RECLAIMED_MODE: u32 = 0o700;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("could not give {path} to the VM's user")]
    Grant {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the VM's user cannot reach {path}: {blocker} is not searchable by others; \
         make it so (chmod o+x), or keep VM files under hearth's data directory, which \
         hearth makes searchable (0711) itself"
    )]
    Unreachable { path: PathBuf, blocker: PathBuf },
    #[error(
        "the VM's user cannot read the disk {path}: make it readable by others (chmod o+r) \
         and its directories searchable (o+x), as hearth's own images are"
    )]
    UnreadableDisk { path: PathBuf },
}

/// Hands the run directory to the VM's group.
pub fn grant_run_dir(dir: &Path, gid: u32) -> Result<(), FileError> {
    reachable(dir, gid)?;
    chown(dir, 0, gid)
        .and_then(|()| chmod(dir, RUN_DIR_MODE))
        .map_err(grant(dir))
}

/// Hands a file the hypervisor writes (a writable disk, its own log) to
/// the VM's user.
pub fn grant_file(path: &Path, uid: u32, gid: u32) -> Result<(), FileError> {
    reachable(path, gid)?;
    chown(path, uid, gid)
        .and_then(|()| chmod(path, 0o600))
        .map_err(grant(path))
}

/// Gives `path` to `uid`:`gid` with `mode`, where no path check applies
/// (inside a jail, which the jailer gives to the VM's user).
pub fn own(path: &Path, uid: u32, gid: u32, mode: u32) -> std::io::Result<()> {
    chown(path, uid, gid).and_then(|()| chmod(path, mode))
}

/// `path` if everyone can read it, else a copy in `run_dir` named `name`
/// that the VM's group can read.
pub fn readable_copy(
    path: &Path,
    run_dir: &Path,
    name: &str,
    gid: u32,
) -> Result<PathBuf, FileError> {
    if readable_by_others(path) {
        return Ok(path.to_owned());
    }
    let copy = run_dir.join(name);
    std::fs::copy(path, &copy)
        .and_then(|_| chown(&copy, 0, gid))
        .and_then(|()| chmod(&copy, 0o640))
        .map_err(grant(&copy))?;
    Ok(copy)
}

/// A read-only disk must be readable by everyone: it is shared, and too
/// large to copy per VM.
pub fn check_shared_disk(path: &Path) -> Result<(), FileError> {
    if readable_by_others(path) {
        Ok(())
    } else {
        Err(FileError::UnreadableDisk {
            path: path.to_owned(),
        })
    }
}

/// Whether the VM's user (group `gid`, which its run directory gets) will
/// reach its files: the run directory and writable disks through
/// directories others may search, shared disks readable by others.
pub fn check_reachable(vm: &hearth_types::VmDescription, gid: u32) -> Result<(), FileError> {
    reachable(&vm.run_dir, gid)?;
    for disk in &vm.disks {
        if disk.read_only {
            check_shared_disk(&disk.path)?;
        } else if disk.path.parent() != Some(vm.run_dir.as_path()) {
            reachable(&disk.path, gid)?;
        }
    }
    Ok(())
}

/// Gives everything in the run directory back to root (without following
/// links) and closes the directory to everyone else.
pub fn reclaim(dir: &Path) -> std::io::Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = lchown(&entry.path(), 0, 0);
        }
    }
    match chown(dir, 0, 0).and_then(|()| chmod(dir, RECLAIMED_MODE)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether a user with no rights of its own can read `path`: the file is
/// readable by others, and every directory above it searchable.
pub fn readable_by_others(path: &Path) -> bool {
    let Ok(real) = std::fs::canonicalize(path) else {
        return false;
    };
    let readable = std::fs::metadata(&real).is_ok_and(|m| m.mode() & 0o004 != 0);
    readable && real.parent().is_none_or(|p| blocker(p, None).is_none())
}

/// The outermost of `dir` and the directories above it that others
/// cannot search, if any: what keeps VM users from reaching what is in it.
pub fn unsearchable(dir: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    blocker(&real, None)
}

/// Fails unless the VM's group can search every directory above `path`.
fn reachable(path: &Path, gid: u32) -> Result<(), FileError> {
    let above = path.parent().unwrap_or(Path::new("/"));
    let real = std::fs::canonicalize(above).unwrap_or_else(|_| above.to_owned());
    match blocker(&real, Some(gid)) {
        None => Ok(()),
        Some(blocker) => Err(FileError::Unreachable {
            path: path.to_owned(),
            blocker,
        }),
    }
}

/// The outermost of `dir` and its ancestors that others (or, with `gid`,
/// that group) cannot search.
fn blocker(dir: &Path, gid: Option<u32>) -> Option<PathBuf> {
    let searchable = |m: &std::fs::Metadata| {
        m.mode() & 0o001 != 0 || (gid == Some(m.gid()) && m.mode() & 0o010 != 0)
    };
    dir.ancestors()
        .filter(|d| !std::fs::metadata(d).is_ok_and(|m| searchable(&m)))
        .last()
        .map(Path::to_owned)
}

fn grant(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Grant {
        path: path.to_owned(),
        source,
    }
}

fn chmod(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

fn chown(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
}

fn lchown(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: lchown(2) with a valid C string; it does not follow links.
    if unsafe { libc::lchown(c.as_ptr(), uid, gid) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn readability_needs_the_file_and_every_directory_above_it() {
        let t = tempfile::tempdir().unwrap();
        chmod(t.path(), 0o755).unwrap();
        let dir = t.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("k");
        std::fs::write(&file, "x").unwrap();
        chmod(&file, 0o644).unwrap();
        chmod(&dir, 0o755).unwrap();
        assert!(readable_by_others(&file));
        chmod(&dir, 0o700).unwrap();
        assert!(!readable_by_others(&file));
        assert_eq!(blocker(&dir, None), Some(dir.clone()));
        chmod(&dir, 0o711).unwrap();
        assert!(
            readable_by_others(&file),
            "search without listing is enough"
        );
        chmod(&file, 0o600).unwrap();
        assert!(!readable_by_others(&file));
        assert!(!readable_by_others(&dir.join("missing")));
    }

    #[test]
    fn an_unreadable_kernel_is_copied_for_the_group_and_a_readable_one_is_not() {
        let t = tempfile::tempdir().unwrap();
        chmod(t.path(), 0o711).unwrap();
        let private = t.path().join("private");
        std::fs::create_dir(&private).unwrap();
        chmod(&private, 0o700).unwrap();
        let kernel = private.join("vmlinuz");
        std::fs::write(&kernel, "kernel bytes").unwrap();
        let run = t.path().join("run");
        std::fs::create_dir(&run).unwrap();
        let copy = readable_copy(&kernel, &run, "kernel", 4242).unwrap();
        assert_eq!(copy, run.join("kernel"));
        assert_eq!(std::fs::read(&copy).unwrap(), b"kernel bytes");
        let meta = std::fs::metadata(&copy).unwrap();
        if unsafe_is_root() {
            assert_eq!((meta.uid(), meta.gid(), mode(&copy)), (0, 4242, 0o640));
        }
        chmod(&private, 0o755).unwrap();
        chmod(&kernel, 0o644).unwrap();
        assert_eq!(
            readable_copy(&kernel, &run, "kernel", 4242).unwrap(),
            kernel
        );
        assert!(matches!(
            check_shared_disk(&run.join("nope")),
            Err(FileError::UnreadableDisk { .. })
        ));
    }

    #[test]
    fn granting_and_reclaiming_change_owners_and_modes() {
        if !unsafe_is_root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        chmod(t.path(), 0o711).unwrap();
        let run = t.path().join("vm");
        std::fs::create_dir(&run).unwrap();
        let layer = run.join("layer.ext4");
        std::fs::write(&layer, "").unwrap();
        grant_run_dir(&run, 4242).unwrap();
        grant_file(&layer, 4242, 4242).unwrap();
        let meta = std::fs::metadata(&run).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), mode(&run)),
            (0, 4242, RUN_DIR_MODE)
        );
        assert_eq!(std::fs::metadata(&layer).unwrap().uid(), 4242);
        std::os::unix::fs::symlink("/etc/hostname", run.join("planted")).unwrap();
        reclaim(&run).unwrap();
        assert_eq!(std::fs::metadata(&layer).unwrap().uid(), 0);
        assert_eq!(
            std::fs::symlink_metadata(run.join("planted"))
                .unwrap()
                .uid(),
            0
        );
        assert_eq!(
            std::fs::metadata("/etc/hostname").unwrap().uid(),
            0,
            "links are not followed"
        );
        assert_eq!(mode(&run), RECLAIMED_MODE);
    }

    #[test]
    fn a_directory_others_cannot_search_is_named() {
        let t = tempfile::tempdir().unwrap();
        chmod(t.path(), 0o700).unwrap();
        let run = t.path().join("vm");
        std::fs::create_dir(&run).unwrap();
        let err = grant_run_dir(&run, 4242).unwrap_err().to_string();
        assert!(
            err.contains(&t.path().display().to_string()) && err.contains("o+x"),
            "{err}"
        );
    }

    fn unsafe_is_root() -> bool {
        // SAFETY: geteuid(2) cannot fail.
        unsafe { libc::geteuid() == 0 }
    }
}
