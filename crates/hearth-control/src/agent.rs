//! The host end of the guest agent's channel: connect to the socket QEMU
//! listens on for the VM's `hearth.agent` port, shake hands, run one
//! command and collect what it printed and how it ended, then hang up.
//!
//! The conversation is blocking std I/O with socket timeouts under one
//! overall deadline; callers on a runtime run it in `spawn_blocking`.
//! Nothing here logs the command's arguments or output: they may carry
//! secrets.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_agent_proto::{
    decode_data, negotiate, read_frame, write_frame, FrameError, GuestMessage, HostMessage, Stream,
    PROTOCOL,
};
use hearth_types::api::ExecResult;
use hearth_types::VmId;

/// Output kept per stream; the rest is dropped and `truncated` set.
pub const MAX_OUTPUT: usize = 1 << 20;
/// How long to keep trying to reach the agent (QEMU creating its socket,
/// the agent coming back after the previous host hung up).
pub const CONNECT_WINDOW: Duration = Duration::from_secs(5);
/// How long the agent has to say hello once connected.
pub const HELLO_WINDOW: Duration = Duration::from_secs(10);
/// How long one connection waits for a hello before hanging up and
/// trying again (see [`exec`]).
pub const HELLO_TRY: Duration = Duration::from_secs(2);
/// How long to stay away after hanging up, so the agent sees the hang-up
/// before the next host connects.
pub const HANGUP_GAP: Duration = Duration::from_millis(250);
/// Slack on top of the command's timeout for the agent to report the kill.
pub const GRACE: Duration = Duration::from_secs(5);

const FIX: &str =
    "is the image built with the agent? run scripts/build-agent and rebuild the image \
                   (`hearth image build --force`)";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the agent channel of VM {vm} could not be reached within {}s: was the VM started by a hearth with agent channels? (VMs started before have none; create it again)", CONNECT_WINDOW.as_secs())]
    Connect {
        vm: VmId,
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the agent of VM {vm} did not answer within {secs}s: {FIX}")]
    Silent { vm: VmId, secs: u64 },
    #[error("the agent of VM {vm} hung up {when}: it may have crashed; its messages are in the VM's console (`hearth vm console {vm}`)")]
    HungUp { vm: VmId, when: &'static str },
    #[error("the agent of VM {vm} speaks an unsupported protocol: {reason}; rebuild the image with this hearth's agent (scripts/build-agent)")]
    Protocol { vm: VmId, reason: String },
    #[error("the agent of VM {vm} did not report the end of the command within {secs}s (its timeout plus {}s)", GRACE.as_secs())]
    Deadline { vm: VmId, secs: u64 },
    #[error("talking to the agent of VM {vm} failed: try again; the VM's console (`hearth vm console {vm}`) shows the agent's side")]
    Channel {
        vm: VmId,
        #[source]
        source: FrameError,
    },
}

/// One command for the agent.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    pub timeout: Duration,
}

/// Runs `spec` in VM `vm` through the agent listening behind `socket`.
///
/// A guest that missed the previous host's hang-up (the next host connected
/// before the agent woke up) is still in the old session and never says
/// hello: after [`HELLO_TRY`] of silence we hang up, wait [`HANGUP_GAP`] for
/// the agent to notice, and connect again, until [`HELLO_WINDOW`] is over.
pub fn exec(vm: &VmId, socket: &Path, spec: &ExecSpec) -> Result<ExecResult, AgentError> {
    Session::open(vm, socket)?.exec(spec)
    // Dropping the session hangs up; the agent starts over for the next host.
}

/// A connected session past its handshake, asking again as [`exec`] says.
fn open(vm: &VmId, socket: &Path) -> Result<Session, AgentError> {
    let until = Instant::now() + HELLO_WINDOW;
    loop {
        let mut session = Session::connect(vm, socket)?;
        let left = until.saturating_duration_since(Instant::now());
        match session.handshake_within(HELLO_TRY.min(left)) {
            Ok(()) => return Ok(session),
            // Dropping the session hangs up.
            Err(AgentError::Silent { .. }) if Instant::now() + HANGUP_GAP < until => {
                tracing::info!(vm = %vm, "the agent said no hello; hanging up and connecting again");
                drop(session);
                std::thread::sleep(HANGUP_GAP);
            }
            Err(AgentError::Silent { vm, .. }) => {
                return Err(AgentError::Silent {
                    vm,
                    secs: HELLO_WINDOW.as_secs(),
                })
            }
            Err(e) => return Err(e),
        }
    }
}

/// A connection to one VM's agent. [`exec`] is connect, handshake, one
/// exec and hang up; a session can also run several execs in a row.
#[derive(Debug)]
pub struct Session {
    vm: VmId,
    stream: UnixStream,
    next_id: u64,
}

impl Session {
    /// Connects and shakes hands, hanging up and connecting again while
    /// the agent stays silent (see [`exec`]).
    pub fn open(vm: &VmId, socket: &Path) -> Result<Session, AgentError> {
        open(vm, socket)
    }

    /// Connects, retrying for [`CONNECT_WINDOW`] while nobody listens.
    pub fn connect(vm: &VmId, socket: &Path) -> Result<Session, AgentError> {
        let until = Instant::now() + CONNECT_WINDOW;
        loop {
            match UnixStream::connect(socket) {
                Ok(stream) => {
                    return Ok(Session {
                        vm: vm.clone(),
                        stream,
                        next_id: 1,
                    })
                }
                Err(source) if Instant::now() >= until => {
                    return Err(AgentError::Connect {
                        vm: vm.clone(),
                        socket: socket.to_owned(),
                        source,
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Reads the guest's hello and answers with the version both speak.
    pub fn handshake(&mut self) -> Result<(), AgentError> {
        self.handshake_within(HELLO_WINDOW)
    }

    fn handshake_within(&mut self, window: Duration) -> Result<(), AgentError> {
        let deadline = Instant::now() + window;
        let hello = self
            .recv(deadline, 0, "before saying hello")
            .map_err(|e| match e {
                AgentError::Deadline { vm, .. } => AgentError::Silent {
                    vm,
                    secs: window.as_secs(),
                },
                e => e,
            })?;
        let GuestMessage::Hello { protocol, .. } = hello else {
            return Err(AgentError::Protocol {
                vm: self.vm.clone(),
                reason: "its first message was not a hello".into(),
            });
        };
        match negotiate(PROTOCOL, protocol) {
            Ok(chosen) => self.send(&HostMessage::Welcome {
                protocol: chosen,
                acked: 0,
            }),
            Err(e) => {
                let reason = e.to_string();
                let _ = self.send(&HostMessage::Refused {
                    reason: reason.clone(),
                });
                Err(AgentError::Protocol {
                    vm: self.vm.clone(),
                    reason,
                })
            }
        }
    }

    /// Runs one command and waits for its end (after a handshake).
    pub fn exec(&mut self, spec: &ExecSpec) -> Result<ExecResult, AgentError> {
        let id = self.next_id;
        self.next_id += 1;
        let timeout_ms = u64::try_from(spec.timeout.as_millis()).unwrap_or(u64::MAX);
        self.send(&HostMessage::Exec {
            id,
            argv: spec.argv.clone(),
            env: Vec::new(),
            timeout_ms: Some(timeout_ms),
            tty: false,
        })?;
        let budget = spec.timeout + GRACE;
        let deadline = Instant::now() + budget;
        let mut out = Output::default();
        loop {
            match self.recv(deadline, budget.as_secs(), "before the command ended")? {
                GuestMessage::ExecOutput {
                    id: got,
                    stream,
                    data,
                } if got == id => {
                    let bytes = decode_data(&data).map_err(|e| AgentError::Protocol {
                        vm: self.vm.clone(),
                        reason: format!("output that is not base64: {e}"),
                    })?;
                    out.push(stream, &bytes);
                }
                GuestMessage::ExecExit {
                    id: got,
                    code,
                    signal,
                    timed_out,
                } if got == id => return Ok(out.finish(code, signal, timed_out)),
                GuestMessage::ExecError { id: got, message } if got == id => {
                    let mut result = out.finish(None, None, false);
                    result.stderr = format!("hearth-agent: {message}\n");
                    return Ok(result);
                }
                other => {
                    return Err(AgentError::Protocol {
                        vm: self.vm.clone(),
                        reason: format!("unexpected message {}", kind(&other)),
                    })
                }
            }
        }
    }

    fn send(&mut self, msg: &HostMessage) -> Result<(), AgentError> {
        self.stream
            .set_write_timeout(Some(HELLO_WINDOW))
            .map_err(|source| self.channel(FrameError::Io(source)))?;
        write_frame(&mut self.stream, msg).map_err(|e| self.channel(e))
    }

    /// The next message, waiting until `deadline` at most.
    /// `secs`: the whole wait, for the error.
    fn recv(
        &mut self,
        deadline: Instant,
        secs: u64,
        when: &'static str,
    ) -> Result<GuestMessage, AgentError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.deadline(secs));
        }
        self.stream
            .set_read_timeout(Some(left))
            .map_err(|source| self.channel(FrameError::Io(source)))?;
        match read_frame(&mut self.stream) {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err(AgentError::HungUp {
                vm: self.vm.clone(),
                when,
            }),
            Err(FrameError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(self.deadline(secs))
            }
            Err(e) => Err(self.channel(e)),
        }
    }

    fn deadline(&self, secs: u64) -> AgentError {
        AgentError::Deadline {
            vm: self.vm.clone(),
            secs,
        }
    }

    fn channel(&self, source: FrameError) -> AgentError {
        AgentError::Channel {
            vm: self.vm.clone(),
            source,
        }
    }
}

/// The name of a message, never its content.
fn kind(msg: &GuestMessage) -> &'static str {
    match msg {
        GuestMessage::Hello { .. } => "hello",
        GuestMessage::ExecOutput { .. } => "exec_output (for another exec)",
        GuestMessage::ExecExit { .. } => "exec_exit (for another exec)",
        GuestMessage::ExecError { .. } => "exec_error (for another exec)",
        GuestMessage::Record { .. } => "record",
        GuestMessage::Heartbeat { .. } => "heartbeat",
        GuestMessage::FileChunk { .. } => "file_chunk",
        GuestMessage::FileDone { .. } => "file_done",
        GuestMessage::FileError { .. } => "file_error",
    }
}

/// Both streams of one exec, each capped at [`MAX_OUTPUT`].
#[derive(Default)]
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    truncated: bool,
}

impl Output {
    fn push(&mut self, stream: Stream, bytes: &[u8]) {
        let buf = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        let room = MAX_OUTPUT.saturating_sub(buf.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn finish(self, code: Option<i32>, signal: Option<i32>, timed_out: bool) -> ExecResult {
        ExecResult {
            exit_code: code,
            signal,
            timed_out,
            stdout: String::from_utf8_lossy(&self.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&self.stderr).into_owned(),
            truncated: self.truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use hearth_agent_proto::encode_data;

    use super::*;

    /// A fake agent behind a socket: says hello, then answers the first
    /// exec with `answers`.
    fn fake_agent(dir: &Path, answers: Vec<GuestMessage>) -> std::thread::JoinHandle<Vec<String>> {
        let listener = UnixListener::bind(dir.join("agent.sock")).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let hello = GuestMessage::Hello {
                protocol: PROTOCOL,
                agent_version: "test".into(),
                boot_id: "b".into(),
                instance: "i".into(),
                uptime_ms: 1,
            };
            write_frame(&mut s, &hello).unwrap();
            let welcome: HostMessage = read_frame(&mut s).unwrap().unwrap();
            assert_eq!(
                welcome,
                HostMessage::Welcome {
                    protocol: PROTOCOL,
                    acked: 0
                }
            );
            let HostMessage::Exec { argv, .. } = read_frame(&mut s).unwrap().unwrap() else {
                panic!("not an exec")
            };
            for a in answers {
                write_frame(&mut s, &a).unwrap();
            }
            argv
        })
    }

    fn spec(argv: &[&str]) -> ExecSpec {
        ExecSpec {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            timeout: Duration::from_secs(5),
        }
    }

    fn out(stream: Stream, bytes: &[u8]) -> GuestMessage {
        GuestMessage::ExecOutput {
            id: 1,
            stream,
            data: encode_data(bytes),
        }
    }

    #[test]
    fn an_exec_collects_both_streams_and_the_exit() {
        let dir = tempfile::tempdir().unwrap();
        let agent = fake_agent(
            dir.path(),
            vec![
                out(Stream::Stdout, b"o"),
                out(Stream::Stderr, b"e\xff"),
                out(Stream::Stdout, b"k\n"),
                GuestMessage::ExecExit {
                    id: 1,
                    code: Some(3),
                    signal: None,
                    timed_out: false,
                },
            ],
        );
        let vm: VmId = "vm-1".parse().unwrap();
        let r = exec(&vm, &dir.path().join("agent.sock"), &spec(&["x", "y"])).unwrap();
        assert_eq!(agent.join().unwrap(), ["x", "y"]);
        assert_eq!(r.exit_code, Some(3));
        assert_eq!(
            (r.stdout.as_str(), r.stderr.as_str()),
            ("ok\n", "e\u{fffd}")
        );
        assert!(!r.truncated && !r.timed_out);
    }

    #[test]
    fn output_is_capped_per_stream() {
        let dir = tempfile::tempdir().unwrap();
        let chunk = vec![b'a'; 32 * 1024];
        let mut answers: Vec<_> = (0..40).map(|_| out(Stream::Stdout, &chunk)).collect();
        answers.push(out(Stream::Stderr, b"small"));
        answers.push(GuestMessage::ExecExit {
            id: 1,
            code: Some(0),
            signal: None,
            timed_out: false,
        });
        let agent = fake_agent(dir.path(), answers);
        let vm: VmId = "vm-1".parse().unwrap();
        let r = exec(&vm, &dir.path().join("agent.sock"), &spec(&["yes"])).unwrap();
        agent.join().unwrap();
        assert_eq!(r.stdout.len(), MAX_OUTPUT);
        assert_eq!(r.stderr, "small");
        assert!(r.truncated);
    }

    #[test]
    fn a_start_failure_is_the_result_s_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let agent = fake_agent(
            dir.path(),
            vec![GuestMessage::ExecError {
                id: 1,
                message: "/nope: not found".into(),
            }],
        );
        let vm: VmId = "vm-1".parse().unwrap();
        let r = exec(&vm, &dir.path().join("agent.sock"), &spec(&["/nope"])).unwrap();
        agent.join().unwrap();
        assert_eq!((r.exit_code, r.signal), (None, None));
        assert!(r.stderr.contains("/nope: not found"), "{}", r.stderr);
    }

    #[test]
    fn an_agent_that_hangs_up_is_named_with_the_vm() {
        let dir = tempfile::tempdir().unwrap();
        let agent = fake_agent(dir.path(), Vec::new());
        let vm: VmId = "vm-1".parse().unwrap();
        let e = exec(&vm, &dir.path().join("agent.sock"), &spec(&["x"])).unwrap_err();
        agent.join().unwrap();
        assert!(matches!(e, AgentError::HungUp { .. }), "{e}");
        assert!(e.to_string().contains("vm-1"), "{e}");
    }

    #[test]
    fn a_silent_agent_is_hung_up_on_and_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("agent.sock")).unwrap();
        let agent = std::thread::spawn(move || {
            // Still in an old session: says nothing until hung up on.
            let (mut first, _) = listener.accept().unwrap();
            let mut rest = Vec::new();
            std::io::Read::read_to_end(&mut first, &mut rest).unwrap();
            let (mut s, _) = listener.accept().unwrap();
            let hello = GuestMessage::Hello {
                protocol: PROTOCOL,
                agent_version: "test".into(),
                boot_id: "b".into(),
                instance: "i".into(),
                uptime_ms: 1,
            };
            write_frame(&mut s, &hello).unwrap();
            let _: Option<HostMessage> = read_frame(&mut s).unwrap();
            let _: Option<HostMessage> = read_frame(&mut s).unwrap();
            let exit = GuestMessage::ExecExit {
                id: 1,
                code: Some(0),
                signal: None,
                timed_out: false,
            };
            write_frame(&mut s, &exit).unwrap();
        });
        let vm: VmId = "vm-1".parse().unwrap();
        let started = Instant::now();
        let r = exec(&vm, &dir.path().join("agent.sock"), &spec(&["true"])).unwrap();
        agent.join().unwrap();
        assert_eq!(r.exit_code, Some(0));
        assert!(started.elapsed() >= HELLO_TRY, "{:?}", started.elapsed());
    }

    #[test]
    fn no_socket_is_a_connect_error_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let vm: VmId = "vm-1".parse().unwrap();
        let started = Instant::now();
        let e = exec(&vm, &dir.path().join("agent.sock"), &spec(&["x"])).unwrap_err();
        assert!(matches!(e, AgentError::Connect { .. }), "{e}");
        assert!(started.elapsed() >= CONNECT_WINDOW);
    }
}
