//! Input for one exec started with `stdin`. The session's read loop, which
//! also carries acks, other execs and file transfers, hands the host's
//! bytes to a bounded queue and never waits; the exec's own writer thread
//! feeds them to the command's stdin pipe or terminal as fast as the
//! command reads.
//!
//! Every byte that leaves the queue (written to the command, or discarded
//! because the input was closed) is reported to the host, which keeps at
//! most `INPUT_WINDOW` bytes unreported: that is the flow control that
//! keeps input from being lost. At the bound (`QUEUE_BYTES` waiting, which
//! only a host ignoring the window reaches) input is dropped, with one log
//! line per run of drops: a command that does not read its stdin cannot
//! stall the session or grow the agent without limit. The writer never
//! blocks for good either: its descriptor is non-blocking and it waits in
//! poll(2) together with an eventfd that [`Input::close`] signals, so it
//! ends with its exec even when something else (a background child) keeps
//! the pipe or terminal open without reading.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use crate::pty;

/// Input bytes waiting for the command, at most: four windows, so a host
/// that keeps to the window is never near it.
pub const QUEUE_BYTES: usize = 4 * hearth_agent_proto::INPUT_WINDOW as usize;

/// Told how many bytes left the queue (written or discarded).
pub type Report = Box<dyn Fn(u64) + Send + Sync>;

/// Where the input goes.
#[derive(Debug)]
pub enum Sink {
    /// The write end of the command's stdin pipe: closed at the end.
    Pipe(OwnedFd),
    /// The master of the command's terminal: the end is typed (VEOF).
    Tty(OwnedFd),
}

impl Sink {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Sink::Pipe(fd) | Sink::Tty(fd) => fd.as_fd(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Vec<u8>>,
    bytes: usize,
    /// No more input: write out what waits, then end it.
    ended: bool,
    /// Stop now, dropping what waits (hang-up, the exec ended, the
    /// command closed its input).
    closed: bool,
    /// Input is being dropped (logged once per run of drops).
    dropping: bool,
}

struct Shared {
    id: u64,
    state: Mutex<State>,
    changed: Condvar,
    /// Readable once closed: wakes a writer waiting in poll(2).
    wake: OwnedFd,
    report: Report,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("id", &self.id).finish()
    }
}

/// The exec's side of its input queue.
#[derive(Debug)]
pub struct Input {
    shared: Arc<Shared>,
}

impl Input {
    /// An input queue for exec `id`, before the command starts (so a
    /// failure here is the exec's start failure).
    pub fn new(id: u64, report: Report) -> io::Result<Input> {
        // SAFETY: eventfd(2) has no memory-safety preconditions.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: eventfd succeeded: an open descriptor we now own.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        let shared = Shared {
            id,
            state: Mutex::default(),
            changed: Condvar::new(),
            wake,
            report,
        };
        Ok(Input {
            shared: Arc::new(shared),
        })
    }

    /// Starts the writer thread feeding `sink`; it ends once the input
    /// ended and was written, or at [`Input::close`].
    pub fn start(&self, sink: Sink) -> io::Result<JoinHandle<()>> {
        set_nonblocking(sink.fd())?;
        let shared = self.shared.clone();
        Ok(thread::spawn(move || shared.write_loop(sink)))
    }

    /// Queues `data` for the command; never waits. Ignored after the end,
    /// dropped (with a log line) beyond `QUEUE_BYTES`; either way reported
    /// as gone, so the host's window stays open.
    pub fn push(&self, data: Vec<u8>) {
        if data.is_empty() {
            return;
        }
        let len = data.len();
        let mut st = self.shared.lock();
        let taken = !st.ended && !st.closed && st.bytes + len <= QUEUE_BYTES;
        if taken {
            st.dropping = false;
            st.bytes += len;
            st.queue.push_back(data);
            self.shared.changed.notify_all();
            return;
        }
        if !st.ended && !st.closed && !st.dropping {
            eprintln!(
                "hearth-agent: exec {}: input dropped (queue full)",
                self.shared.id
            );
            st.dropping = true;
        }
        drop(st);
        (self.shared.report)(len as u64);
    }

    /// No more input: what waits is written, then the pipe is closed or
    /// the terminal's end-of-file character typed.
    pub fn end(&self) {
        self.shared.lock().ended = true;
        self.shared.changed.notify_all();
    }

    /// Stops the input now; what waits is dropped and the pipe closed.
    pub fn close(&self) {
        self.shared.close();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.queue.clear();
        let discarded = std::mem::take(&mut st.bytes);
        drop(st);
        if discarded > 0 {
            (self.report)(discarded as u64);
        }
        self.changed.notify_all();
        let one = 1u64.to_ne_bytes();
        // SAFETY: the eventfd is open and `one` is 8 readable bytes. A
        // failure (the counter at its maximum) leaves it readable anyway.
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Waits for the next chunk; `None` at the end of the input, `Err` once
    /// closed.
    fn next(&self) -> Result<Option<Vec<u8>>, Closed> {
        let mut st = self.lock();
        loop {
            if st.closed {
                return Err(Closed);
            }
            if let Some(chunk) = st.queue.pop_front() {
                st.bytes -= chunk.len();
                return Ok(Some(chunk));
            }
            if st.ended {
                return Ok(None);
            }
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn write_loop(&self, sink: Sink) {
        // Whether a line was started and not ended: the end of input then
        // types VEOF twice, as a user would.
        let mut mid_line = false;
        loop {
            let result = match self.next() {
                Ok(Some(chunk)) => {
                    mid_line = !matches!(chunk.last(), Some(b'\n' | b'\r'));
                    let written = self.write_all(sink.fd(), &chunk);
                    // Written or, when it failed, discarded: gone either way.
                    (self.report)(chunk.len() as u64);
                    written
                }
                Ok(None) => {
                    if let Sink::Tty(master) = &sink {
                        self.type_eof(master, mid_line);
                    }
                    return;
                }
                Err(Closed) => return,
            };
            if result.is_err() {
                // The command closed its input or ended: nothing more goes in.
                self.close();
                return;
            }
        }
    }

    /// Types the terminal's end-of-file character: once at the start of a
    /// line (a canonical reader sees end-of-file), twice after a partial
    /// line (the first only hands that line to the reader).
    fn type_eof(&self, master: &OwnedFd, mid_line: bool) {
        match pty::eof_char(master) {
            Ok(eof) => {
                let eofs = if mid_line {
                    &[eof, eof][..]
                } else {
                    &[eof][..]
                };
                let _ = self.write_all(master.as_fd(), eofs);
            }
            Err(e) => eprintln!(
                "hearth-agent: exec {}: cannot read the terminal's end-of-file character: {e}",
                self.id
            ),
        }
    }

    /// Writes all of `buf`, waiting in poll(2) for room or for the close.
    fn write_all(&self, fd: BorrowedFd<'_>, mut buf: &[u8]) -> Result<(), Closed> {
        while !buf.is_empty() {
            // SAFETY: the fd is open (borrowed) and `buf` readable for its length.
            let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
            if n >= 0 {
                buf = &buf[n as usize..];
                continue;
            }
            match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => self.wait_for_room(fd)?,
                _ => return Err(Closed),
            }
        }
        Ok(())
    }

    /// Blocks until `fd` takes more bytes; `Closed` when the input was
    /// closed meanwhile.
    fn wait_for_room(&self, fd: BorrowedFd<'_>) -> Result<(), Closed> {
        let mut fds = [
            libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            },
            libc::pollfd {
                fd: self.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is valid and writable for its length.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return Err(Closed);
        }
        if fds[1].revents != 0 {
            return Err(Closed);
        }
        Ok(())
    }
}

/// The input was closed: stop writing.
#[derive(Debug)]
struct Closed;

/// O_NONBLOCK on the file description behind `fd`.
fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl(2) on an open (borrowed) descriptor.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn pipe() -> (std::fs::File, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` is valid for two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe2 succeeded: two open descriptors we now own.
        unsafe {
            (
                std::fs::File::from_raw_fd(fds[0]),
                OwnedFd::from_raw_fd(fds[1]),
            )
        }
    }

    /// A report that adds up what it is told.
    fn counter() -> (Arc<std::sync::atomic::AtomicU64>, Report) {
        let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = total.clone();
        let report = Box::new(move |n| {
            seen.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        });
        (total, report)
    }

    #[test]
    fn input_is_written_in_order_and_the_pipe_closed_at_the_end() {
        let (mut read, write) = pipe();
        let (reported, report) = counter();
        let input = Input::new(1, report).unwrap();
        let writer = input.start(Sink::Pipe(write)).unwrap();
        input.push(b"hello ".to_vec());
        input.push(b"world".to_vec());
        input.end();
        input.push(b"late".to_vec());
        let mut got = String::new();
        read.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello world");
        writer.join().unwrap();
        // Written, and the late input discarded: all of it reported.
        let total = reported.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(total, "hello world".len() as u64 + 4);
    }

    #[test]
    fn input_nobody_reads_is_bounded_and_a_close_ends_the_writer() {
        let (_read, write) = pipe();
        let (reported, report) = counter();
        let input = Input::new(2, report).unwrap();
        let writer = input.start(Sink::Pipe(write)).unwrap();
        for _ in 0..64 {
            input.push(vec![b'x'; 64 * 1024]);
        }
        let waiting = input.shared.lock().bytes;
        assert!(waiting <= QUEUE_BYTES, "{waiting} bytes queued");
        // The writer is blocked on a full pipe nobody reads: the close
        // still ends it.
        input.close();
        writer.join().unwrap();
        // Written to the pipe, dropped at the bound or discarded at the
        // close: every byte is reported, so a host's window never sticks.
        let total = reported.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(total, 64 * 64 * 1024);
    }
}
