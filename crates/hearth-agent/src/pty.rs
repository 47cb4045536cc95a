//! Pseudo-terminals for execs with `tty`: made at the size the host asked
//! for before the command starts (so its first look at the terminal is
//! right), resized later from the master side (the kernel then sends
//! SIGWINCH to the terminal's foreground group), and the end-of-file
//! character the terminal's settings name, for when the host's input ends.
//!
//! Termios and window-size ioctls on a master act on its slave, which is
//! the terminal the command sees. Both sides are close-on-exec: the
//! command gets the slave as its stdio only.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use hearth_types::guest::TermSize;

/// The size of a terminal the host gave none for, as docker and ssh use.
pub const DEFAULT_SIZE: TermSize = TermSize { rows: 24, cols: 80 };

/// A new terminal at `size`: its master and slave sides, both
/// close-on-exec from the start. (openpty(3) leaves both inheritable: a
/// command started meanwhile by another thread would keep this terminal's
/// slave open, and its output would not end until that command did.)
pub fn open(size: TermSize) -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: posix_openpt(3) has no memory-safety preconditions.
    let master = unsafe { libc::posix_openpt(flags) };
    if master < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: posix_openpt succeeded: an open descriptor we now own.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    // SAFETY: unlockpt(3) on an open master.
    if unsafe { libc::unlockpt(master.as_raw_fd()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    resize(&master, size)?;
    let slave = open_slave(&master, flags)?;
    Ok((master, slave))
}

/// The slave of `master`: TIOCGPTPEER (Linux 4.13), else by its name.
fn open_slave(master: &OwnedFd, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: the ioctl takes the open flags as its argument.
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if fd >= 0 {
        // SAFETY: the ioctl returned a new open descriptor we now own.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let mut name = [0 as libc::c_char; 64];
    // SAFETY: `name` is writable for its length, which is passed.
    let r = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    // SAFETY: ptsname_r wrote a NUL-terminated path into `name`.
    let fd = unsafe { libc::open(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open succeeded: a descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// TIOCSWINSZ: the terminal's new size; its foreground group gets SIGWINCH.
pub fn resize(master: impl AsFd, size: TermSize) -> io::Result<()> {
    let winsize = winsize(size);
    // SAFETY: the fd is open (borrowed) and the winsize valid for the call.
    let r = unsafe { libc::ioctl(master.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &winsize) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The terminal's end-of-file character (VEOF, usually ^D) as set now: a
/// program may have changed it.
pub fn eof_char(master: impl AsFd) -> io::Result<u8> {
    // SAFETY: an all-zero termios is valid; tcgetattr fills it in.
    let mut termios: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is open (borrowed) and `termios` writable.
    if unsafe { libc::tcgetattr(master.as_fd().as_raw_fd(), &mut termios) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(termios.c_cc[libc::VEOF])
}

fn winsize(size: TermSize) -> libc::winsize {
    libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size_of(fd: &OwnedFd) -> (u16, u16) {
        // SAFETY: an all-zero winsize is valid; the ioctl fills it in.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: the fd is open and `ws` writable.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(r, 0);
        (ws.ws_row, ws.ws_col)
    }

    #[test]
    fn a_terminal_has_its_size_from_the_start_and_after_a_resize() {
        let (master, slave) = open(TermSize {
            rows: 33,
            cols: 101,
        })
        .unwrap();
        assert_eq!(size_of(&slave), (33, 101));
        resize(
            &master,
            TermSize {
                rows: 50,
                cols: 132,
            },
        )
        .unwrap();
        assert_eq!(size_of(&slave), (50, 132));
    }

    #[test]
    fn both_sides_are_closed_on_exec() {
        let (master, slave) = open(DEFAULT_SIZE).unwrap();
        for fd in [&master, &slave] {
            // SAFETY: fcntl(2) on an open descriptor.
            let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
            assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        }
    }

    #[test]
    fn the_end_of_file_character_is_the_terminals() {
        let (master, _slave) = open(DEFAULT_SIZE).unwrap();
        assert_eq!(eof_char(&master).unwrap(), 4, "^D");
    }
}
