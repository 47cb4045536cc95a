//! Real pseudo-terminals for tests of what runs on a terminal: a pair, its
//! window size set as a terminal emulator would, and its settings compared.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A new pseudo-terminal pair: (master, slave).
pub fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two new fds; the name and settings pointers
    // may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", io::Error::last_os_error());
    // SAFETY: both fds were just opened and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Sets the terminal's window size (TIOCSWINSZ), as a terminal emulator
/// does when its window changes.
pub fn set_size(fd: &impl AsRawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize through the pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    assert_eq!(rc, 0, "TIOCSWINSZ: {}", io::Error::last_os_error());
}

/// The terminal's settings now (tcgetattr).
pub fn settings(fd: &impl AsRawFd) -> libc::termios {
    // SAFETY: all zeroes is a valid termios, overwritten below.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is open; `t` is writable.
    let rc = unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) };
    assert_eq!(rc, 0, "tcgetattr: {}", io::Error::last_os_error());
    t
}

/// Whether two settings agree in every mode flag and control character
/// (the speeds and line discipline are left out: nothing here changes them).
pub fn same_settings(a: &libc::termios, b: &libc::termios) -> bool {
    (a.c_iflag, a.c_oflag, a.c_cflag, a.c_lflag, a.c_cc)
        == (b.c_iflag, b.c_oflag, b.c_cflag, b.c_lflag, b.c_cc)
}
