//! Reading and writing the virtio-serial port across host hang-ups.
//!
//! The port behaves like this when the host side (QEMU's chardev socket)
//! has no client: writes block until one connects, reads return end-of-file
//! at once, and poll(2) reports `POLLHUP`. The port is opened blocking, so
//! the agent's hello simply waits for the next host. Once the host's first
//! bytes (its welcome) arrive, the port is switched to non-blocking and
//! every later write waits with poll(2) instead: when the host hangs up a
//! write fails at once with `BrokenPipe` rather than blocking until some
//! later host connects and receiving a stale frame before its hello.
//!
//! A host that hangs up and a new one that connects at once can both reach
//! the guest before the agent's blocked read wakes: then the read sees a
//! connected host and no data, never end-of-file, and each side waits for
//! the other. The driver signals every change of the host's connection
//! with SIGIO (the port is opened with `O_ASYNC`); the agent counts them.
//! Data arrival raises SIGIO too, under the same lock as the data is
//! queued, so a count that had moved before a read that then found nothing
//! is a connection change: the read ends as if the host had hung up. The
//! count is taken before the read: one taken after it would also see the
//! signal of data that arrived meanwhile and end a live session (with the
//! host's acks streaming in, that happened). Idle reads wake every 50 ms.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// How long a write waits for room before checking again.
const WRITE_POLL_MS: libc::c_int = 100;
/// How long a read waits for data before checking for a host change.
const READ_POLL_MS: libc::c_int = 50;

/// SIGIOs received: changes of the host's connection.
static HOST_CHANGES: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_sigio(_: libc::c_int) {
    HOST_CHANGES.fetch_add(1, Ordering::SeqCst);
}

#[derive(Debug)]
struct Shared {
    file: File,
    nonblocking: AtomicBool,
    /// `HOST_CHANGES` at the last read that returned data.
    mark: AtomicU64,
}

impl Shared {
    /// True when `before`, the count taken before a read that found
    /// nothing, differs from the count at the last read that returned data.
    fn host_changed(&self, before: u64) -> bool {
        self.nonblocking.load(Ordering::SeqCst) && before != self.mark.load(Ordering::SeqCst)
    }
}

fn hung_up() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the host hung up")
}

/// `struct f_owner_ex` and its constants (not in the libc crate for glibc).
#[repr(C)]
struct OwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;

/// Asks for SIGIO, sent to the calling thread (the reader), on every host
/// connection change and data arrival of `file`.
fn watch_host_changes(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    let owner = OwnerEx {
        kind: F_OWNER_TID,
        pid: gettid(),
    };
    // SAFETY: a zeroed sigaction is valid; the handler only touches an
    // atomic, which is async-signal-safe; fcntl takes integer arguments.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigio as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGIO, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::fcntl(fd, F_SETOWN_EX, &owner as *const OwnerEx) < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_ASYNC) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The read half of an open port.
#[derive(Debug)]
pub struct PortReader(Arc<Shared>);

/// The write half of an open port.
#[derive(Debug)]
pub struct PortWriter(Arc<Shared>);

/// The open port, kept open across hosts: the device allows one open
/// handle at a time, so it is never closed and reopened.
#[derive(Debug)]
pub struct Port(Arc<Shared>);

impl Port {
    /// Opens the port read-write.
    pub fn open(path: &Path) -> io::Result<Port> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        watch_host_changes(&file)?;
        Ok(Port(Arc::new(Shared {
            file,
            nonblocking: AtomicBool::new(false),
            mark: AtomicU64::new(0),
        })))
    }

    /// Halves for the next host, in blocking mode again (so the hello
    /// waits for a host); the previous halves must be dropped or closed.
    pub fn halves(&self) -> io::Result<(PortReader, PortWriter)> {
        set_blocking(&self.0, false)?;
        Ok((PortReader(self.0.clone()), PortWriter(self.0.clone())))
    }
}

fn poll(file: &File, events: libc::c_short, timeout_ms: libc::c_int) -> io::Result<libc::c_short> {
    let mut fd = libc::pollfd {
        fd: file.as_raw_fd(),
        events,
        revents: 0,
    };
    loop {
        // SAFETY: `fd` is a valid pollfd for the duration of the call and
        // the count is 1.
        let n = unsafe { libc::poll(&mut fd, 1, timeout_ms) };
        if n >= 0 {
            return Ok(fd.revents);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn set_blocking(shared: &Shared, nonblocking: bool) -> io::Result<()> {
    let fd = shared.file.as_raw_fd();
    // SAFETY: fcntl on a file descriptor we own, with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if nonblocking {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    shared
        .mark
        .store(HOST_CHANGES.load(Ordering::SeqCst), Ordering::SeqCst);
    shared.nonblocking.store(nonblocking, Ordering::SeqCst);
    Ok(())
}

fn gettid() -> libc::pid_t {
    // SAFETY: gettid(2) has no preconditions and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t }
}

impl Read for PortReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let before = HOST_CHANGES.load(Ordering::SeqCst);
            match (&self.0.file).read(buf) {
                Ok(n) => {
                    if n > 0 {
                        if self.0.nonblocking.load(Ordering::SeqCst) {
                            self.0
                                .mark
                                .store(HOST_CHANGES.load(Ordering::SeqCst), Ordering::SeqCst);
                        } else {
                            set_blocking(&self.0, true)?;
                        }
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.0.host_changed(before) {
                        return Ok(0);
                    }
                    // Wakes for data and for a hang-up (then read says EOF).
                    poll(&self.0.file, libc::POLLIN, READ_POLL_MS)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for PortWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match (&self.0.file).write(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let revents = poll(&self.0.file, libc::POLLOUT, WRITE_POLL_MS)?;
                    if revents & libc::POLLHUP != 0 && revents & libc::POLLOUT == 0 {
                        return Err(hung_up());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
