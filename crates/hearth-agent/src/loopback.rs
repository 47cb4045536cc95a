//! Brings the loopback interface up. The kernel creates `lo` down; systemd
//! raises it in systemd images, but when the agent is PID 1 nobody else
//! will, and without it nothing in the guest can reach 127.0.0.1: not the
//! readiness checks, not a service talking to another.

use std::io;

/// Sets IFF_UP on `lo` (a no-op when it is up already).
pub fn bring_up() -> io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = set_up(fd);
    // SAFETY: `fd` is the socket opened above, closed once.
    unsafe { libc::close(fd) };
    result
}

fn set_up(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: an all-zero ifreq is a valid value of this plain C struct.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming "lo"; SIOCGIFFLAGS fills its
    // flags member.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS just wrote the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: `req` names "lo" and carries the new flags.
    if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    /// Runs `f` on a thread of its own in a new network namespace (its
    /// `lo` starts down); the namespace goes with the thread.
    fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        std::thread::spawn(move || {
            // SAFETY: unshare(2) only moves this thread to a new namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return None;
            }
            Some(f())
        })
        .join()
        .unwrap()
    }

    fn lo_reaches_itself() -> bool {
        let Ok(listener) = TcpListener::bind("127.0.0.1:0") else {
            return false;
        };
        TcpStream::connect(listener.local_addr().unwrap()).is_ok()
    }

    #[test]
    fn a_down_loopback_is_brought_up_and_reaches_itself() {
        let Some((before, brought, after)) = in_new_netns(|| {
            let before = lo_reaches_itself();
            let brought = bring_up();
            (
                before,
                brought.map_err(|e| e.to_string()),
                lo_reaches_itself(),
            )
        }) else {
            println!("skipped: cannot make a network namespace here (needs root)");
            return;
        };
        assert!(!before, "lo of a new namespace starts down");
        assert_eq!(brought, Ok(()));
        assert!(after, "127.0.0.1 answers once lo is up");
    }

    #[test]
    fn an_up_loopback_stays_up() {
        let Some(result) = in_new_netns(|| {
            bring_up()
                .and_then(|()| bring_up())
                .map_err(|e| e.to_string())
        }) else {
            println!("skipped: cannot make a network namespace here (needs root)");
            return;
        };
        assert_eq!(result, Ok(()));
    }
}
