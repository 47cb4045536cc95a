//! Running one command for the host: spawn argv directly (no shell), stream
//! its stdout and stderr as they come, kill it at its deadline, report how
//! it ended. Output always precedes the exit message. With `tty` the
//! command runs on a new pseudo-terminal: a session of its own with the
//! terminal as its controlling one; everything it prints is `stdout`.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hearth_agent_proto::{encode_data, GuestMessage, Stream};

use crate::outbox::{Gone, Link};
use crate::reaper::reaper;

/// Output is sent in chunks of at most this many bytes.
const CHUNK: usize = 32 * 1024;

#[derive(Debug)]
pub struct Request {
    pub id: u64,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub tty: bool,
}

/// Runs the request on its own thread.
pub fn spawn(req: Request, out: Link) -> JoinHandle<()> {
    thread::spawn(move || {
        if let Err(e) = run(&req, &out) {
            eprintln!("hearth-agent: exec {}: reply lost: {e}", req.id);
        }
    })
}

fn run(req: &Request, out: &Link) -> Result<(), Gone> {
    let id = req.id;
    let started = if req.tty {
        start_on_tty(req)
    } else {
        start(req).map(|c| (c, None))
    };
    let (mut child, master) = match started {
        Ok(started) => started,
        Err(message) => return out.send(GuestMessage::ExecError { id, message }),
    };
    let pumps = match master {
        Some(master) => vec![pump(Some(master), Stream::Stdout, id, out.clone())],
        None => vec![
            pump(child.stdout.take(), Stream::Stdout, id, out.clone()),
            pump(child.stderr.take(), Stream::Stderr, id, out.clone()),
        ],
    };
    let waited = wait(&mut child, req.timeout);
    for p in pumps {
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

/// Spawns argv in its own process group, so a timeout kills all of it.
fn start(req: &Request) -> Result<Child, String> {
    let (program, args) = req.argv.split_first().ok_or("argv is empty")?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    reaper()
        .spawn(&mut cmd)
        .map_err(|e| format!("cannot start {program:?}: {e}"))
}

/// Spawns argv on a new pseudo-terminal; returns the child and the
/// terminal's master side, which carries its output.
fn start_on_tty(req: &Request) -> Result<(Child, Option<File>), String> {
    let (program, args) = req.argv.split_first().ok_or("argv is empty")?;
    let (master, slave) = open_pty().map_err(|e| format!("cannot open a pseudo-terminal: {e}"))?;
    let stdio = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(req.env.iter().map(|(k, v)| (k, v)))
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
        .map_err(|e| format!("cannot start {program:?}: {e}"))?;
    // The child has its copies; ours would keep the master from seeing the end.
    drop(cmd);
    drop(slave);
    Ok((child, Some(File::from(master))))
}

/// openpty(3): the master and slave sides of a new pseudo-terminal.
fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: the out-pointers are valid; the name, termios and winsize
    // arguments may be null.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded, so both are open descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) })
}

/// Sends everything read from `src` as output chunks of `stream`. Keeps
/// reading after the host is gone, so the command never blocks on a full
/// pipe.
fn pump<R: Read + Send + 'static>(
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

/// Waits for the command (through the reaper), killing its process group
/// at the deadline; returns its status and whether it was killed for time.
fn wait(child: &mut Child, timeout: Option<Duration>) -> io::Result<(ExitStatus, bool)> {
    let deadline = timeout.map(|t| Instant::now() + t);
    if let Some(status) = reaper().wait(child.id(), deadline) {
        return Ok((status, false));
    }
    kill_group(child);
    let status = reaper()
        .wait(child.id(), None)
        .ok_or_else(|| io::Error::other("the reaper lost the command"))?;
    Ok((status, true))
}

fn kill_group(child: &mut Child) {
    let Ok(pgid) = libc::pid_t::try_from(child.id()) else {
        let _ = child.kill();
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions. The group id is
    // the child's pid (it was spawned with process_group(0)); its status
    // was not claimed, so at worst the group just ended (ESRCH).
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

fn exit_message(id: u64, status: ExitStatus, timed_out: bool) -> GuestMessage {
    GuestMessage::ExecExit {
        id,
        code: status.code(),
        signal: status.signal(),
        timed_out,
    }
}
