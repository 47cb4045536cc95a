//! Named network namespaces, kept alive the way `ip netns` keeps them: a
//! bind mount of the namespace on `/run/netns/NAME`, so they outlive the
//! controller and are found again by name. Creating one enters it, so it
//! is only ever done on a thread of its own ([`crate::thread`]).

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::NetError;

/// Where named namespaces live (shared with `ip netns`).
pub const NETNS_DIR: &str = "/run/netns";

fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Creates namespace `name` and moves the calling thread into it. The
/// file is made exclusively, so a name already in use is refused, never
/// taken over.
pub(crate) fn create_and_enter(name: &str) -> Result<(), NetError> {
    let fail = |step: &'static str| {
        move |source: io::Error| NetError::Namespace {
            name: name.to_owned(),
            step,
            source,
        }
    };
    fs::create_dir_all(NETNS_DIR).map_err(fail("creating /run/netns"))?;
    let path = path_of(name);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&path)
        .map_err(fail("creating its file"))?;
    let made = unshare_net().and_then(|()| bind_current(&path));
    if let Err(source) = made {
        let _ = fs::remove_file(&path);
        return Err(fail("unsharing and binding it")(source));
    }
    Ok(())
}

fn unshare_net() -> io::Result<()> {
    // SAFETY: unshare takes no pointers; it changes only the calling thread.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bind-mounts the calling thread's network namespace on `path`.
fn bind_current(path: &Path) -> io::Result<()> {
    let source = CString::new("/proc/thread-self/ns/net").map_err(io::Error::other)?;
    let target = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: both strings are NUL-terminated and outlive the call; a bind
    // mount reads no filesystem type or data.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A handle on namespace `name`, for [`enter`].
pub fn open(name: &str) -> Result<OwnedFd, NetError> {
    File::open(path_of(name))
        .map(OwnedFd::from)
        .map_err(|source| NetError::Namespace {
            name: name.to_owned(),
            step: "opening it",
            source,
        })
}

/// The calling thread's own network namespace.
pub fn current() -> io::Result<OwnedFd> {
    File::open("/proc/thread-self/ns/net").map(OwnedFd::from)
}

/// Moves the calling thread into the namespace `fd` stands for.
pub fn enter(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fd is an open namespace file owned by the caller; setns
    // changes only the calling thread.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unbinds and removes namespace `name`; `false` when there was none. The
/// kernel frees the namespace (and the links in it) once nothing holds it.
pub(crate) fn delete(name: &str) -> Result<bool, NetError> {
    let path = path_of(name);
    let fail = |source| NetError::Namespace {
        name: name.to_owned(),
        step: "removing it",
        source,
    };
    let target =
        CString::new(path.as_os_str().as_bytes()).map_err(|e| fail(io::Error::other(e)))?;
    // SAFETY: target is NUL-terminated and outlives the call.
    let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    let unmount = (rc != 0).then(io::Error::last_os_error);
    // EINVAL: a file that was never bound (a create that died half-way).
    if let Some(e) =
        unmount.filter(|e| !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)))
    {
        return Err(fail(e));
    }
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(fail(e)),
    }
}

/// The names in `/run/netns` (none when it does not exist).
pub(crate) fn list() -> Result<Vec<String>, NetError> {
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(NetError::ListNamespaces(source)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(NetError::ListNamespaces)?;
        names.extend(entry.file_name().to_str().map(str::to_owned));
    }
    Ok(names)
}
