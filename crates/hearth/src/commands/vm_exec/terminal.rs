//! The local terminal of an interactive `hearth vm exec -it`: raw mode for
//! the session, so every key (Ctrl-C, Ctrl-D, arrows) reaches the remote
//! terminal as typed and the remote one alone echoes and edits; and our
//! window size, which the remote terminal follows.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use hearth_types::guest::TermSize;

/// Our terminal in raw mode until dropped; dropping it (at the session's
/// end, on an error or while a panic unwinds) puts back the settings it
/// found.
pub struct RawMode<'fd> {
    fd: BorrowedFd<'fd>,
    saved: libc::termios,
}

impl<'fd> RawMode<'fd> {
    pub fn enter(fd: BorrowedFd<'fd>) -> io::Result<RawMode<'fd>> {
        let saved = get_attr(fd)?;
        let mut raw = saved;
        // SAFETY: `raw` is a valid termios that cfmakeraw only rewrites.
        unsafe { libc::cfmakeraw(&mut raw) };
        set_attr(fd, &raw)?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        if let Err(e) = set_attr(self.fd, &self.saved) {
            tracing::warn!("could not restore the terminal's settings: {e} (run `stty sane`)");
        }
    }
}

/// The terminal's settings.
pub fn get_attr(fd: BorrowedFd<'_>) -> io::Result<libc::termios> {
    // SAFETY: termios is plain data; all zeroes is a valid value that
    // tcgetattr overwrites.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is open for the borrow's lifetime and `t` is writable.
    if unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(t)
}

/// Applies `t` once the output written so far has drained (TCSADRAIN), so
/// the end of the remote output is shown with the settings it was meant
/// for.
fn set_attr(fd: BorrowedFd<'_>, t: &libc::termios) -> io::Result<()> {
    // SAFETY: the fd is open for the borrow's lifetime; `t` is a termios.
    if unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSADRAIN, t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The window size of the terminal at `fd` (TIOCGWINSZ); `None` when it is
/// not a terminal or reports no size (some consoles say 0x0).
pub fn size(fd: BorrowedFd<'_>) -> Option<TermSize> {
    // SAFETY: winsize is plain data; zeroes are valid.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize through the pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    let size = TermSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    };
    (rc == 0 && size.check().is_ok()).then_some(size)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use hearth_testkit::pty::{openpty, same_settings, set_size};

    use super::*;

    #[test]
    fn raw_mode_turns_off_echo_and_signals_and_is_undone_on_drop() {
        let (_master, slave) = openpty();
        let before = get_attr(slave.as_fd()).unwrap();
        assert_ne!(before.c_lflag & libc::ECHO, 0, "a new pty echoes");
        {
            let _raw = RawMode::enter(slave.as_fd()).unwrap();
            let during = get_attr(slave.as_fd()).unwrap();
            assert_eq!(during.c_lflag & (libc::ECHO | libc::ICANON | libc::ISIG), 0);
        }
        assert!(same_settings(&get_attr(slave.as_fd()).unwrap(), &before));
    }

    #[test]
    fn raw_mode_is_undone_when_a_panic_unwinds() {
        let (_master, slave) = openpty();
        let before = get_attr(slave.as_fd()).unwrap();
        let fd = slave.as_fd();
        let unwound = std::panic::catch_unwind(|| {
            let _raw = RawMode::enter(fd).unwrap();
            panic!("in the session");
        });
        assert!(unwound.is_err());
        assert!(same_settings(&get_attr(slave.as_fd()).unwrap(), &before));
    }

    #[test]
    fn the_size_is_the_terminal_s_and_none_for_a_file() {
        let (_master, slave) = openpty();
        set_size(&slave, 37, 101);
        assert_eq!(
            size(slave.as_fd()),
            Some(TermSize {
                rows: 37,
                cols: 101
            })
        );
        let file = tempfile::tempfile().unwrap();
        assert_eq!(size(file.as_fd()), None);
    }
}
