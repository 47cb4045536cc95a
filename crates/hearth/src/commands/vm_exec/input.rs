//! What an interactive exec sends besides `start`: our stdin, the
//! terminal's new sizes and the signals we receive, gathered by threads
//! into one queue in the order they happened. The session's loop owns the
//! WebSocket alone (a blocking tungstenite socket is not shared between
//! threads), so each thread also writes a byte to a wake-up socket the
//! loop polls next to the WebSocket: input goes out as soon as it exists,
//! and nothing spins while there is none.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};

use hearth_types::guest::{ExecSignal, TermSize};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGWINCH};
use signal_hook::iterator::Signals;

use super::terminal;

/// The most bytes of stdin one `stdin` frame carries.
const CHUNK: usize = 32 * 1024;
/// Chunks queued before the stdin thread waits for the loop: a fast
/// producer (a large file piped in) is held back instead of buffered.
const QUEUED: usize = 64;

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
    rx: Receiver<Input>,
    wake: UnixStream,
    /// Kept so the queue never reports "disconnected" while the session
    /// runs, even after stdin's thread is done.
    _tx: Feeder,
}

/// A thread's end of the queue.
#[derive(Clone)]
struct Feeder {
    tx: SyncSender<Input>,
    wake: std::sync::Arc<UnixStream>,
}

impl Feeder {
    /// Queues `input` and wakes the loop; false once the loop is gone.
    fn send(&self, input: Input) -> bool {
        if self.tx.send(input).is_err() {
            return false;
        }
        // A full wake-up socket already says "wake up": WouldBlock is fine.
        let _ = (&*self.wake).write(&[1]);
        true
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
        let (tx, rx) = sync_channel(QUEUED);
        let feeder = Feeder {
            tx,
            wake: std::sync::Arc::new(ring),
        };
        if let Some(signals) = forwarded_signals(&forward)? {
            let f = feeder.clone();
            let fd = forward
                .resize_from
                .map(|fd| fd.try_clone_to_owned())
                .transpose()?;
            std::thread::Builder::new()
                .name("exec-signals".into())
                .spawn(move || forward_signals(signals, fd, f))?;
        }
        let f = feeder.clone();
        std::thread::Builder::new()
            .name("exec-stdin".into())
            .spawn(move || read_stdin(stdin, f))?;
        Ok(Inputs {
            rx,
            wake,
            _tx: feeder,
        })
    }

    /// The socket to poll for readability: input is queued.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Everything queued now, oldest first, without waiting.
    pub fn drain(&self) -> Vec<Input> {
        let mut sink = [0u8; 256];
        while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
        let mut out = Vec::new();
        loop {
            match self.rx.try_recv() {
                Ok(input) => out.push(input),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return out,
            }
        }
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
        if !feeder.send(input) {
            return;
        }
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
    use std::time::{Duration, Instant};

    use super::*;

    /// Drains until `StdinEnd`, waiting on the wake-up socket's readiness
    /// (poll), with a deadline.
    fn collect(inputs: &Inputs) -> Vec<Input> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut all = Vec::new();
        while !all.contains(&Input::StdinEnd) {
            assert!(Instant::now() < deadline, "no end of stdin: {all:?}");
            super::super::attach::wait_readable(&[inputs.wake_fd()], Some(Duration::from_secs(1)))
                .unwrap();
            all.extend(inputs.drain());
        }
        all
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
        let deadline = Instant::now() + Duration::from_secs(10);
        while pending.is_empty() {
            assert!(Instant::now() < deadline, "no input");
            super::super::attach::wait_readable(&[inputs.wake_fd()], Some(Duration::from_secs(1)))
                .unwrap();
            pending.extend(inputs.drain());
        }
        pending.remove(0)
    }

    /// Real signals to this process (nextest runs each test in a process
    /// of its own): a resize sends the terminal's size as it is then;
    /// SIGINT and SIGTERM become signal frames.
    #[test]
    fn signals_and_resizes_arrive_as_inputs() {
        let (_master, slave) = terminal::tests::openpty();
        terminal::tests::set_size(&slave, 30, 90);
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
        terminal::tests::set_size(&slave, 50, 132);
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
}
