//! What an interactive exec sends besides `start`: our stdin, the
//! terminal's new sizes and the signals we receive, gathered by threads
//! into one queue in the order they happened. The session's loop owns the
//! WebSocket alone, so each thread also writes a byte to a wake-up socket
//! the loop polls next to the WebSocket: input goes out as soon as it
//! exists, and nothing spins while there is none.
//!
//! Only stdin waits for room in the queue: while the server takes no more
//! input the loop stops taking from the queue, the queue fills and the
//! stdin thread stops reading, so a large file piped in is held back all
//! the way to its source, in bounded memory. Signals and resizes never
//! wait (they are few and small): the same signal pressed again and again
//! is counted as it arrives, so the way out ([`GIVE_UP_AFTER`]) works even
//! while input is held back.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use hearth_types::guest::{ExecSignal, TermSize};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGWINCH};
use signal_hook::iterator::Signals;

use super::terminal;

/// The most bytes of stdin one `stdin` frame carries.
const CHUNK: usize = 32 * 1024;
/// Stdin chunks queued before the stdin thread waits for the loop: a fast
/// producer (a large file piped in) is held back instead of buffered.
const QUEUED: usize = 64;
/// The same signal this many times ends the session on our side (the
/// server then hangs the command up): a way out of a command that ignores
/// what is forwarded, or of a server that takes no more input.
const GIVE_UP_AFTER: u32 = 3;

/// One thing to tell the server, in the order it happened.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    Stdin(Vec<u8>),
    StdinEnd,
    Resize(TermSize),
    Signal(ExecSignal),
}

/// The queue of [`Input`]s and the socket that says it has some.
pub struct Inputs {
    shared: Arc<Shared>,
    wake: UnixStream,
}

/// The queue, shared by the loop and the threads that fill it.
struct Shared {
    state: Mutex<Queue>,
    /// Signalled when a stdin chunk leaves the queue or the loop is gone.
    room: Condvar,
    wake: UnixStream,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Input>,
    /// How many of `items` are stdin chunks.
    chunks: usize,
    /// Why the user wants out, once the same signal came [`GIVE_UP_AFTER`] times.
    gave_up: Option<String>,
    /// The loop is gone: the threads stop.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A thread that panicked holding the lock left a queue that is
        // still whole (each change is one push or pop).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the loop. A full wake-up socket already says "wake up":
    /// WouldBlock is fine.
    fn ring(&self) {
        let _ = (&self.wake).write(&[1]);
    }
}

/// A thread's end of the queue.
#[derive(Clone)]
struct Feeder(Arc<Shared>);

impl Feeder {
    /// Queues `input` (a stdin chunk waits for room) and wakes the loop;
    /// false once the loop is gone.
    fn send(&self, input: Input) -> bool {
        let mut queue = self.0.lock();
        if matches!(input, Input::Stdin(_)) {
            while queue.chunks >= QUEUED && !queue.closed {
                queue = self.0.room.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        }
        if queue.closed {
            return false;
        }
        if matches!(input, Input::Stdin(_)) {
            queue.chunks += 1;
        }
        queue.items.push_back(input);
        drop(queue);
        self.0.ring();
        true
    }

    /// Records that the user wants out and wakes the loop to say so.
    fn give_up(&self, why: String) {
        self.0.lock().gave_up = Some(why);
        self.0.ring();
    }
}

/// Which signals the CLI forwards, and where the terminal whose size is
/// sent on SIGWINCH is.
pub struct Forward<'a> {
    pub signals: bool,
    pub resize_from: Option<BorrowedFd<'a>>,
}

impl Inputs {
    /// Starts reading `stdin` (to its end) and, as `forward` says, the
    /// signals, on threads of their own.
    pub fn start(stdin: impl Read + Send + 'static, forward: Forward<'_>) -> io::Result<Inputs> {
        let (wake, ring) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        ring.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(Queue::default()),
            room: Condvar::new(),
            wake: ring,
        });
        if let Some(signals) = forwarded_signals(&forward)? {
            let f = Feeder(shared.clone());
            let fd = forward
                .resize_from
                .map(|fd| fd.try_clone_to_owned())
                .transpose()?;
            std::thread::Builder::new()
                .name("exec-signals".into())
                .spawn(move || forward_signals(signals, fd, f))?;
        }
        let f = Feeder(shared.clone());
        std::thread::Builder::new()
            .name("exec-stdin".into())
            .spawn(move || read_stdin(stdin, f))?;
        Ok(Inputs { shared, wake })
    }

    /// The socket to poll for readability: something was queued (or the
    /// user gave up) since [`Inputs::clear_wake`].
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Empties the wake-up socket. Call it before [`Inputs::next`], never
    /// between `next` returning `None` and the wait: what is queued later
    /// rings again.
    pub fn clear_wake(&self) {
        let mut sink = [0u8; 256];
        while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
    }

    /// The oldest input, without waiting; it makes room for stdin.
    pub fn next(&self) -> Option<Input> {
        let mut queue = self.shared.lock();
        let input = queue.items.pop_front()?;
        if matches!(input, Input::Stdin(_)) {
            queue.chunks -= 1;
            self.shared.room.notify_one();
        }
        Some(input)
    }

    /// A SIGTERM or SIGHUP queued and not yet sent: one that asks us to
    /// end, which cannot wait behind input the server does not take.
    pub fn ending_signal(&self) -> Option<ExecSignal> {
        self.shared
            .lock()
            .items
            .iter()
            .find_map(|input| match input {
                Input::Signal(s @ (ExecSignal::Term | ExecSignal::Hup)) => Some(*s),
                _ => None,
            })
    }

    /// Why the user wants out (the same signal [`GIVE_UP_AFTER`] times).
    pub fn gave_up(&self) -> Option<String> {
        self.shared.lock().gave_up.clone()
    }
}

impl Drop for Inputs {
    /// Lets a stdin thread that waits for room go.
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.room.notify_all();
    }
}

fn forwarded_signals(forward: &Forward<'_>) -> io::Result<Option<Signals>> {
    let mut wanted = Vec::new();
    if forward.signals {
        wanted.extend([SIGINT, SIGTERM, SIGHUP]);
    }
    if forward.resize_from.is_some() {
        wanted.push(SIGWINCH);
    }
    if wanted.is_empty() {
        return Ok(None);
    }
    Signals::new(wanted).map(Some)
}

fn forward_signals(mut signals: Signals, tty: Option<std::os::fd::OwnedFd>, feeder: Feeder) {
    let mut repeats = Repeats::default();
    for sig in signals.forever() {
        let input = match sig {
            SIGINT => Input::Signal(ExecSignal::Int),
            SIGTERM => Input::Signal(ExecSignal::Term),
            SIGHUP => Input::Signal(ExecSignal::Hup),
            SIGWINCH => match tty.as_ref().and_then(|fd| terminal::size(fd.as_fd())) {
                Some(size) => Input::Resize(size),
                None => continue,
            },
            _ => continue,
        };
        if let Input::Signal(signal) = input {
            if let Err(why) = repeats.count(signal) {
                feeder.give_up(why);
            }
        }
        if !feeder.send(input) {
            return;
        }
    }
}

/// The same signal received again and again: after [`GIVE_UP_AFTER`] in
/// a row the user wants out, whatever the command does with them.
#[derive(Default)]
pub(super) struct Repeats {
    last: Option<ExecSignal>,
    times: u32,
}

impl Repeats {
    /// Counts `signal`; the reason to leave once it came often enough.
    pub(super) fn count(&mut self, signal: ExecSignal) -> Result<(), String> {
        if self.last == Some(signal) {
            self.times += 1;
        } else {
            (self.last, self.times) = (Some(signal), 1);
        }
        if self.times < GIVE_UP_AFTER {
            return Ok(());
        }
        let name = serde_json::to_value(signal).ok();
        let name = name.as_ref().and_then(|v| v.as_str()).unwrap_or("a signal");
        Err(format!(
            "got SIG{name} {GIVE_UP_AFTER} times: left the session (the command is hung up)"
        ))
    }
}

/// Reads stdin as it comes: a chunk per read (a keystroke on a raw
/// terminal), then `StdinEnd` at end of file. A read error (a terminal
/// that hung up) ends input the same way.
fn read_stdin(mut stdin: impl Read, feeder: Feeder) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!("stdin ended with an error: {e}");
                break;
            }
        };
        if !feeder.send(Input::Stdin(buf[..n].to_vec())) {
            return;
        }
    }
    feeder.send(Input::StdinEnd);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::*;

    /// Waits on the wake-up socket's readiness (poll) until `done` says
    /// so, with a deadline; what was queued meanwhile is taken when `take`.
    fn wait_until(
        inputs: &Inputs,
        take: bool,
        mut done: impl FnMut(&[Input]) -> bool,
    ) -> Vec<Input> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut all = Vec::new();
        while !done(&all) {
            assert!(Instant::now() < deadline, "not in time: {all:?}");
            super::super::attach::wait_readable(&[inputs.wake_fd()], Some(Duration::from_secs(1)))
                .unwrap();
            inputs.clear_wake();
            while let Some(input) = take.then(|| inputs.next()).flatten() {
                all.push(input);
            }
        }
        all
    }

    /// Everything until `StdinEnd`.
    fn collect(inputs: &Inputs) -> Vec<Input> {
        wait_until(inputs, true, |all| all.contains(&Input::StdinEnd))
    }

    #[test]
    fn stdin_arrives_whole_and_in_order_then_its_end() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let forward = Forward {
            signals: false,
            resize_from: None,
        };
        let inputs = Inputs::start(io::Cursor::new(data.clone()), forward).unwrap();
        let all = collect(&inputs);
        assert_eq!(all.last(), Some(&Input::StdinEnd));
        let got: Vec<u8> = all
            .iter()
            .flat_map(|i| match i {
                Input::Stdin(b) => b.clone(),
                _ => vec![],
            })
            .collect();
        assert_eq!(got, data);
    }

    /// The next input, waiting on the wake-up socket, with a deadline.
    fn next(inputs: &Inputs, pending: &mut Vec<Input>) -> Input {
        pending.extend(wait_until(inputs, true, |all| !all.is_empty()));
        pending.remove(0)
    }

    /// Real signals to this process (nextest runs each test in a process
    /// of its own): a resize sends the terminal's size as it is then;
    /// SIGINT and SIGTERM become signal frames.
    #[test]
    fn signals_and_resizes_arrive_as_inputs() {
        let (_master, slave) = hearth_testkit::pty::openpty();
        hearth_testkit::pty::set_size(&slave, 30, 90);
        let (stdin, _keep_open) = UnixStream::pair().unwrap();
        let forward = Forward {
            signals: true,
            resize_from: Some(slave.as_fd()),
        };
        let inputs = Inputs::start(stdin, forward).unwrap();
        let mut pending = Vec::new();
        // SAFETY: raise only sends a signal to this process, whose
        // handler signal-hook installed above.
        assert_eq!(unsafe { libc::raise(SIGWINCH) }, 0);
        let size = TermSize { rows: 30, cols: 90 };
        assert_eq!(next(&inputs, &mut pending), Input::Resize(size));
        hearth_testkit::pty::set_size(&slave, 50, 132);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::raise(SIGWINCH) }, 0);
        let size = TermSize {
            rows: 50,
            cols: 132,
        };
        assert_eq!(next(&inputs, &mut pending), Input::Resize(size));
        // SAFETY: as above.
        assert_eq!(unsafe { libc::raise(SIGINT) }, 0);
        let int = Input::Signal(ExecSignal::Int);
        assert_eq!(next(&inputs, &mut pending), int);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::raise(SIGTERM) }, 0);
        let term = Input::Signal(ExecSignal::Term);
        assert_eq!(next(&inputs, &mut pending), term);
        assert_eq!(inputs.gave_up(), None);
    }

    #[test]
    fn an_empty_stdin_is_just_its_end() {
        let forward = Forward {
            signals: false,
            resize_from: None,
        };
        let inputs = Inputs::start(io::empty(), forward).unwrap();
        assert_eq!(collect(&inputs), [Input::StdinEnd]);
    }

    /// A stdin that never ends, counting what was read from it.
    struct Endless(Arc<AtomicUsize>);

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            buf.fill(b'x');
            self.0.fetch_add(buf.len(), Ordering::SeqCst);
            Ok(buf.len())
        }
    }

    /// Nothing taken from the queue (the server takes no input): stdin is
    /// read no further than the queue holds, and signals still arrive, in
    /// order after the stdin queued before them, and three SIGINTs in a
    /// row say the user wants out.
    #[test]
    fn a_full_queue_holds_stdin_back_but_not_signals() {
        let read = Arc::new(AtomicUsize::new(0));
        let forward = Forward {
            signals: true,
            resize_from: None,
        };
        let inputs = Inputs::start(Endless(read.clone()), forward).unwrap();
        wait_until(&inputs, false, |_| inputs.shared.lock().chunks == QUEUED);
        for n in 1..=GIVE_UP_AFTER as usize {
            // SAFETY: raise only sends a signal to this process, whose
            // handler signal-hook installed above.
            assert_eq!(unsafe { libc::raise(SIGINT) }, 0);
            // One at a time: signals not yet handled are merged.
            wait_until(&inputs, false, |_| {
                inputs.shared.lock().items.len() == QUEUED + n
            });
        }
        wait_until(&inputs, false, |_| inputs.gave_up().is_some());
        let why = inputs.gave_up().unwrap();
        assert!(why.starts_with("got SIGINT 3 times"), "{why}");
        let read = read.load(Ordering::SeqCst);
        assert!(read <= (QUEUED + 1) * CHUNK, "read {read} bytes of stdin");
        let first: Vec<Input> = std::iter::from_fn(|| inputs.next())
            .take(QUEUED + 1)
            .collect();
        assert!(first[..QUEUED].iter().all(|i| matches!(i, Input::Stdin(_))));
        assert_eq!(first[QUEUED], Input::Signal(ExecSignal::Int));
    }

    #[test]
    fn the_same_signal_three_times_in_a_row_gives_up() {
        let mut repeats = Repeats::default();
        repeats.count(ExecSignal::Int).unwrap();
        repeats.count(ExecSignal::Int).unwrap();
        repeats.count(ExecSignal::Term).unwrap();
        repeats.count(ExecSignal::Int).unwrap();
        repeats.count(ExecSignal::Int).unwrap();
        let err = repeats.count(ExecSignal::Int).unwrap_err();
        assert!(err.starts_with("got SIGINT 3 times"), "{err}");
    }
}
