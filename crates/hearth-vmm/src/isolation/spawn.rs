//! The last steps in the hypervisor's child process, between fork and
//! exec: join the VM's cgroup (so every byte and thread of the hypervisor
//! is counted from its first instruction), then drop to the VM's user.
//! Joining first, as root, works on every kernel (older ones check the
//! writer's credentials, not the opener's).
//!
//! Everything the child runs here was prepared before the fork: the
//! cgroup files are open, the groups are a vector; the child only makes
//! system calls.

use std::fs::File;
use std::os::fd::AsRawFd;

use super::user::VmUser;

/// Makes `cmd`'s child join the cgroups whose `cgroup.procs` are `procs`
/// and then run as `user`. The files are close-on-exec: the hypervisor
/// keeps none of them.
pub fn confine(cmd: &mut tokio::process::Command, procs: Vec<File>, user: Option<VmUser>) {
    // SAFETY: the closure runs in the forked child before exec and only
    // calls getpid(2), write(2), setgroups(2), setgid(2) and setuid(2) on
    // data prepared before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            join(&procs)?;
            if let Some(user) = &user {
                drop_privileges(user)?;
            }
            Ok(())
        });
    }
}

fn join(procs: &[File]) -> std::io::Result<()> {
    // SAFETY: getpid(2) cannot fail.
    let pid = unsafe { libc::getpid() };
    let mut buf = [0u8; 20];
    let digits = decimal(pid as u64, &mut buf);
    for file in procs {
        // SAFETY: write(2) of a stack buffer to a descriptor we own.
        let n = unsafe { libc::write(file.as_raw_fd(), digits.as_ptr().cast(), digits.len()) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn drop_privileges(user: &VmUser) -> std::io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: setgroups(2) reads `groups.len()` gids from a live vector;
    // setgid(2) and setuid(2) take plain ids. The order matters: groups
    // and gid while still root, the uid last.
    unsafe {
        check(libc::setgroups(user.groups.len(), user.groups.as_ptr()))?;
        check(libc::setgid(user.gid))?;
        check(libc::setuid(user.uid))?;
    }
    Ok(())
}

/// `n` in decimal in `buf`, without allocating.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_without_allocating() {
        let mut buf = [0u8; 20];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(4_194_304, &mut buf), b"4194304");
        assert_eq!(decimal(u64::MAX, &mut buf), b"18446744073709551615");
    }

    #[tokio::test]
    async fn the_child_writes_its_own_pid_and_runs_as_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let procs = dir.path().join("cgroup.procs");
        std::fs::write(&procs, "").unwrap();
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&procs)
            .unwrap();
        // SAFETY: geteuid(2) cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let user = root.then(|| VmUser {
            uid: 2_000_000_123,
            gid: 2_000_000_123,
            groups: Vec::new(),
        });
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c").arg("id -u; id -G");
        cmd.stdout(std::process::Stdio::piped());
        confine(&mut cmd, vec![file], user);
        let child = cmd.spawn().unwrap();
        let pid = child.id().unwrap();
        let out = child.wait_with_output().await.unwrap();
        assert_eq!(std::fs::read_to_string(&procs).unwrap(), pid.to_string());
        if root {
            let text = String::from_utf8(out.stdout).unwrap();
            assert_eq!(
                text, "2000000123\n2000000123\n",
                "uid, then the gid and no other group"
            );
        }
    }
}
