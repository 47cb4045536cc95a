//! Running one command for the host: spawn argv directly (no shell), stream
//! its stdout and stderr as they come, kill it at its deadline, report how
//! it ended. Output always precedes the exit message. With `tty` the
//! command runs on a new pseudo-terminal: a session of its own with the
//! terminal as its controlling one; everything it prints is `stdout`.
//! With `stdin` the host's input goes to its stdin pipe or terminal
//! (`input.rs`), and while it runs it is in the session's registry
//! (`running.rs`) for input, resizes and signals.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hearth_agent_proto::{encode_data, GuestMessage, Stream};
use hearth_types::guest::TermSize;

use crate::input::{Input, Sink};
use crate::outbox::{Gone, Link};
use crate::reaper::reaper;
use crate::running::{Control, Running};
use crate::{not_started, pty};

/// Output is sent in chunks of at most this many bytes.
const CHUNK: usize = 32 * 1024;

#[derive(Debug)]
pub struct Request {
    pub id: u64,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub tty: bool,
    /// The host sends input: stdin is a pipe (or the terminal) fed by it.
    pub stdin: bool,
    /// The terminal's size, with `tty`.
    pub size: Option<TermSize>,
}

/// A started command and the ends the agent keeps.
struct Started {
    child: Child,
    /// With `tty`: the terminal's master, which carries its output.
    master: Option<File>,
    /// With `stdin`: where its input goes.
    sink: Option<Sink>,
}

/// Registers the request in `running` (before the session reads on, so
/// input sent right after it is kept) and runs it on its own thread.
pub fn spawn(req: Request, out: Link, running: Running) -> JoinHandle<()> {
    let queued = req
        .stdin
        .then(|| Input::new(req.id, input_report(req.id, out.clone())));
    let (input, input_error) = match queued.transpose() {
        Ok(input) => (input, None),
        Err(e) => (None, Some(e)),
    };
    let control = Control::new(req.id, input);
    running.add(control.clone());
    thread::spawn(move || {
        let result = match input_error {
            None => run(&req, &out, &running, control),
            Some(e) => {
                running.remove(&control);
                let message = format!("cannot queue its input: {e}");
                out.send(GuestMessage::ExecError {
                    id: req.id,
                    message,
                })
            }
        };
        if let Err(e) = result {
            eprintln!("hearth-agent: exec {}: reply lost: {e}", req.id);
        }
    })
}

/// Tells the host how much of exec `id`'s input left the queue, which
/// lets it send that much more. Lost with the connection, like output.
fn input_report(id: u64, out: Link) -> crate::input::Report {
    Box::new(move |bytes| {
        let _ = out.send(GuestMessage::ExecInputWritten { id, bytes });
    })
}

fn run(req: &Request, out: &Link, running: &Running, control: Arc<Control>) -> Result<(), Gone> {
    let id = req.id;
    let started = if req.tty {
        start_on_tty(req)
    } else {
        start(req)
    };
    let Started {
        mut child,
        master,
        sink,
    } = match started {
        Ok(started) => started,
        Err(message) => {
            running.remove(&control);
            return out.send(GuestMessage::ExecError { id, message });
        }
    };
    let writer = sink.and_then(|sink| feed(&control, sink));
    control.started(child.id(), master.as_ref().and_then(|m| m.try_clone().ok()));
    let pumps = match master {
        Some(master) => vec![pump(Some(master), Stream::Stdout, id, out.clone())],
        None => vec![
            pump(child.stdout.take(), Stream::Stdout, id, out.clone()),
            pump(child.stderr.take(), Stream::Stderr, id, out.clone()),
        ],
    };
    let waited = wait(&mut child, req.timeout);
    // Ended: no more input, resizes or signals; its descriptors go now.
    running.remove(&control);
    control.close_input();
    drop(control);
    for p in writer.into_iter().chain(pumps) {
        let _ = p.join();
    }
    match waited {
        Ok((status, timed_out)) => out.send(exit_message(id, status, timed_out)),
        Err(e) => out.send(GuestMessage::ExecError {
            id,
            message: format!("waiting for the command failed: {e}"),
        }),
    }
}

/// Starts the thread that writes the exec's input to `sink`. Without it
/// the sink is closed: the command reads end-of-file.
fn feed(control: &Control, sink: Sink) -> Option<JoinHandle<()>> {
    let input = control.input.as_ref()?;
    input
        .start(sink)
        .map_err(|e| {
            let id = control.id;
            eprintln!("hearth-agent: exec {id}: its input cannot be fed: {e}");
        })
        .ok()
}

/// Spawns argv in its own process group, so a timeout kills all of it.
fn start(req: &Request) -> Result<Started, String> {
    let (program, args) = req.argv.split_first().ok_or("argv is empty")?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .stdin(if req.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = reaper()
        .spawn(&mut cmd)
        .map_err(|e| not_started::message(program, &req.env, &e))?;
    let sink = child.stdin.take().map(|s| Sink::Pipe(OwnedFd::from(s)));
    Ok(Started {
        child,
        master: None,
        sink,
    })
}

/// Spawns argv on a new pseudo-terminal of the requested size.
fn start_on_tty(req: &Request) -> Result<Started, String> {
    let (program, args) = req.argv.split_first().ok_or("argv is empty")?;
    let size = req.size.unwrap_or(pty::DEFAULT_SIZE);
    let (master, slave) =
        pty::open(size).map_err(|e| format!("cannot open a pseudo-terminal: {e}"))?;
    let sink = match req.stdin {
        true => Some(Sink::Tty(master.try_clone().map_err(|e| e.to_string())?)),
        false => None,
    };
    let stdio = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
    let mut cmd = Command::new(program);
    cmd.args(args);
    // As docker does: a terminal needs a type, and the agent's own (the
    // kernel gives init `linux`) is not the client's.
    if !req.env.iter().any(|(k, _)| k == "TERM") {
        cmd.env("TERM", "xterm");
    }
    cmd.envs(req.env.iter().map(|(k, v)| (k, v)))
        .stdin(stdio(&slave).map_err(|e| e.to_string())?)
        .stdout(stdio(&slave).map_err(|e| e.to_string())?)
        .stderr(stdio(&slave).map_err(|e| e.to_string())?);
    // SAFETY: runs in the child between fork and exec; setsid and ioctl are
    // async-signal-safe. A new session (which is also a new process group,
    // so a timeout still kills all of it) takes stdin, the terminal, as its
    // controlling terminal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = reaper()
        .spawn(&mut cmd)
        .map_err(|e| not_started::message(program, &req.env, &e))?;
    // The child has its copies; ours would keep the master from seeing the end.
    drop(cmd);
    drop(slave);
    Ok(Started {
        child,
        master: Some(File::from(master)),
        sink,
    })
}

/// Sends everything read from `src` as output chunks of `stream`. Keeps
/// reading after the host is gone, so the command never blocks on a full
/// pipe.
fn pump<R: Read + AsFd + Send + 'static>(
    src: Option<R>,
    stream: Stream,
    id: u64,
    out: Link,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let Some(mut src) = src else { return };
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A terminal's master is non-blocking when the writer of
                // its input shares it.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_readable(src.as_fd());
                    continue;
                }
                Err(_) => return,
            };
            let data = encode_data(&buf[..n]);
            if out
                .send(GuestMessage::ExecOutput { id, stream, data })
                .is_err()
            {
                // The host is gone: keep draining so the command never
                // blocks on a full pipe.
                continue;
            }
        }
    })
}

/// Blocks until `fd` has something to read (or its end).
fn wait_readable(fd: BorrowedFd<'_>) {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is valid and writable for the call. An error (EINTR)
    // just means another read.
    unsafe { libc::poll(&mut pfd, 1, -1) };
}

/// Waits for the command (through the reaper), killing its process group
/// at the deadline; returns its status and whether it was killed for time.
fn wait(child: &mut Child, timeout: Option<Duration>) -> io::Result<(ExitStatus, bool)> {
    let deadline = timeout.map(|t| Instant::now() + t);
    if let Some(status) = reaper().wait(child.id(), deadline) {
        return Ok((status, false));
    }
    reaper().signal_group(child.id(), libc::SIGKILL);
    let status = reaper()
        .wait(child.id(), None)
        .ok_or_else(|| io::Error::other("the reaper lost the command"))?;
    Ok((status, true))
}

fn exit_message(id: u64, status: ExitStatus, timed_out: bool) -> GuestMessage {
    GuestMessage::ExecExit {
        id,
        code: status.code(),
        signal: status.signal(),
        timed_out,
    }
}
