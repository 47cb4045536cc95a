//! Running one command for the host: spawn argv directly (no shell), stream
//! its stdout and stderr as they come, kill it at its deadline, report how
//! it ended. Output always precedes the exit message.

use std::io::{self, Read};
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
    let mut child = match start(req) {
        Ok(child) => child,
        Err(message) => return out.send(GuestMessage::ExecError { id, message }),
    };
    let pumps = [
        pump(child.stdout.take(), Stream::Stdout, id, out.clone()),
        pump(child.stderr.take(), Stream::Stderr, id, out.clone()),
    ];
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
