//! [`Nic`]: a guest NIC as the caller made it, handed to a backend at
//! start. The backend is given the TAP already made (by `hearth-net`, as
//! root). QEMU gets it by descriptor and keeps it open across its drop to
//! the VM's own user. Firecracker opens its TAP by name itself, so it runs
//! inside the TAP's namespace and the TAP is handed over: made persistent
//! and owned by the VM's user, the caller's descriptor closed
//! ([`hand_over`]); the namespace's removal takes it away.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// A TAP and the guest MAC the agent finds the NIC by.
#[derive(Debug)]
pub struct Nic {
    pub tap: OwnedFd,
    /// `02:68:74:00:00:02`.
    pub mac: String,
    /// The TAP's name in its namespace (`tap0`).
    pub tap_name: String,
    /// The network namespace the TAP is in (`/run/netns/NAME`), where a
    /// hypervisor that opens the TAP by name must run; `None`: the
    /// caller's own.
    pub namespace: Option<PathBuf>,
}

/// Makes `tap` outlive its descriptor, which is closed, so that a process
/// of user `owner` (uid, gid; `None`: root only) opens it by name.
pub(crate) fn hand_over(tap: OwnedFd, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    let set = |request, value: libc::c_ulong| {
        // SAFETY: a TUN ioctl taking an integer argument, on a TAP
        // descriptor we own.
        let rc = unsafe { libc::ioctl(tap.as_raw_fd(), request, value) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    if let Some((uid, gid)) = owner {
        set(libc::TUNSETOWNER, libc::c_ulong::from(uid))?;
        set(libc::TUNSETGROUP, libc::c_ulong::from(gid))?;
    }
    set(libc::TUNSETPERSIST, 1)?;
    drop(tap);
    Ok(())
}

/// Makes `cmd`'s child enter network namespace `ns` before anything else
/// it does (before it drops privileges). The caller keeps `ns` open until
/// the spawn returned.
pub(crate) fn enter_namespace(cmd: &mut tokio::process::Command, ns: RawFd) {
    // SAFETY: the closure runs in the forked child before exec and only
    // calls setns(2), which is async-signal-safe, on a descriptor number
    // it was given.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A copy of `fd` numbered 3 or above, close-on-exec: the spawn sets up
/// the child's stdin, stdout and stderr after the fork, which would
/// replace a descriptor numbered 0 to 2.
pub(crate) fn above_stdio(fd: &OwnedFd) -> std::io::Result<OwnedFd> {
    // SAFETY: fcntl(2) F_DUPFD_CLOEXEC on a descriptor we hold; the new
    // one is ours alone.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `copy` was just returned by fcntl and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// Makes `cmd`'s child keep `fd` open across exec (only the child: the
/// flag is cleared after the fork, so no other process this one spawns
/// meanwhile inherits it). The caller keeps `fd` open until the spawn
/// returned.
pub(crate) fn inherit(cmd: &mut tokio::process::Command, fd: RawFd) {
    // SAFETY: the closure runs in the forked child before exec and only
    // calls fcntl(2) on a descriptor number it was given; it allocates
    // nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_child_keeps_the_descriptor() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = above_stdio(&OwnedFd::from(file)).unwrap();
        let raw = fd.as_raw_fd();
        assert!(raw >= 3);
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(format!("test -e /proc/self/fd/{raw}"));
        inherit(&mut cmd, raw);
        assert!(cmd.status().await.unwrap().success(), "the child has it");
        let mut plain = tokio::process::Command::new("/bin/sh");
        plain.arg("-c").arg(format!("test -e /proc/self/fd/{raw}"));
        assert!(!plain.status().await.unwrap().success(), "others do not");
        // SAFETY: fcntl(2) F_GETFD on a descriptor we hold.
        let flags = unsafe { libc::fcntl(raw, libc::F_GETFD) };
        assert_eq!(
            flags & libc::FD_CLOEXEC,
            libc::FD_CLOEXEC,
            "ours stays close-on-exec"
        );
    }
}
