//! Pseudo-terminals for execs with `tty`: made at the size the host asked
//! for before the command starts (so its first look at the terminal is
//! right), resized later from the master side (the kernel then sends
//! SIGWINCH to the terminal's foreground group), and the end-of-file
//! character the terminal's settings name, for when the host's input ends.
//!
//! Termios and window-size ioctls on a master act on its slave, which is
//! the terminal the command sees.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use hearth_types::guest::TermSize;

/// The size of a terminal the host gave none for, as docker and ssh use.
pub const DEFAULT_SIZE: TermSize = TermSize { rows: 24, cols: 80 };

/// openpty(3) at `size`: the master and slave sides of a new terminal.
pub fn open(size: TermSize) -> io::Result<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    let winsize = winsize(size);
    // SAFETY: the out-pointers and the winsize are valid for the call; the
    // name and termios arguments may be null.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &winsize,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded, so both are open descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) })
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
    fn the_end_of_file_character_is_the_terminals() {
        let (master, _slave) = open(DEFAULT_SIZE).unwrap();
        assert_eq!(eof_char(&master).unwrap(), 4, "^D");
    }
}
