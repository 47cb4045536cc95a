//! One conversation with the host: the hello/welcome handshake, then the
//! host's requests until it hangs up; and the loop that starts a new
//! conversation each time a host goes away. Generic over the byte streams,
//! so it is tested over socket pairs instead of a virtio-serial port.
//!
//! Once welcomed, the write half goes to the [`Outbox`]'s writer thread,
//! which first sends again every record the host has not stored.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use hearth_agent_proto::{
    decode_data, read_frame, write_frame, FrameError, GuestMessage, HostMessage, MIN_PROTOCOL,
    PROTOCOL,
};

use crate::exec;
use crate::files::{self, Uploads};
use crate::guest::Guest;
use crate::outbox::Link;
use crate::running::{Control, Running};

/// How often a connected agent says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("sending hello to the host failed")]
    Hello(#[source] FrameError),
    #[error("reading the host's welcome failed")]
    Welcome(#[source] FrameError),
    #[error("the host closed the channel before welcoming the agent")]
    ClosedEarly,
    #[error("the host refused the agent: {0}")]
    Refused(String),
    #[error("the host chose protocol {0}; this agent speaks {MIN_PROTOCOL} to {PROTOCOL}")]
    Version(u32),
    #[error("the host answered hello with {0:?} instead of a welcome")]
    Unexpected(Box<HostMessage>),
    #[error("reading a request from the host failed")]
    Read(#[source] FrameError),
}

pub struct Session<R> {
    reader: R,
    /// The write half until the handshake hands it to the outbox.
    writer: Option<Box<dyn Write + Send>>,
    guest: Arc<Guest>,
    link: Option<Link>,
    uploads: Uploads,
    /// This session's running execs.
    running: Running,
}

impl<R> std::fmt::Debug for Session<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session")
    }
}

impl<R: Read> Session<R> {
    pub fn new(reader: R, writer: impl Write + Send + 'static, guest: Arc<Guest>) -> Self {
        Session {
            reader,
            writer: Some(Box::new(writer)),
            guest,
            link: None,
            uploads: Uploads::default(),
            running: Running::default(),
        }
    }

    /// Sends `hello` and waits for the host's answer; on a welcome the
    /// write half goes to the outbox. Returns the protocol version the host
    /// chose.
    pub fn handshake(&mut self, hello: GuestMessage) -> Result<u32, SessionError> {
        let mut writer = self.writer.take().ok_or(SessionError::ClosedEarly)?;
        write_frame(&mut writer, &hello).map_err(SessionError::Hello)?;
        let answer = read_frame(&mut self.reader).map_err(SessionError::Welcome)?;
        match answer {
            Some(HostMessage::Welcome { protocol, acked }) => {
                let protocol = check_version(protocol)?;
                let link = self.guest.outbox.attach(writer, acked);
                start_heartbeat(link.clone());
                self.link = Some(link);
                Ok(protocol)
            }
            Some(HostMessage::Refused { reason }) => Err(SessionError::Refused(reason)),
            Some(other) => Err(SessionError::Unexpected(Box::new(other))),
            None => Err(SessionError::ClosedEarly),
        }
    }

    /// Serves the host's requests until it hangs up. A host that closes
    /// its end with messages still unread there makes the read fail with
    /// ECONNRESET instead of ending: that is a hang-up too.
    pub fn serve(&mut self) -> Result<(), SessionError> {
        loop {
            match read_frame(&mut self.reader) {
                Ok(Some(msg)) => self.dispatch(msg),
                Ok(None) => return Ok(()),
                Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Ok(())
                }
                // The whole body was consumed, so the next frame is intact.
                Err(FrameError::Decode(e)) => eprintln!("hearth-agent: bad request: {e}"),
                Err(e) => return Err(SessionError::Read(e)),
            }
        }
    }

    /// Ends the session: its interactive execs are hung up, the outbox
    /// drops the write half, the reader goes with `self`.
    pub fn close(self) {
        self.running.hang_up_interactive();
        if self.link.is_some() {
            self.guest.outbox.detach();
        }
    }

    fn dispatch(&mut self, msg: HostMessage) {
        let Some(link) = self.link.clone() else {
            return;
        };
        match msg {
            HostMessage::Ack { seq } => self.guest.outbox.ack(seq),
            HostMessage::Config { config } => self.guest.host_config(config),
            HostMessage::Exec {
                id,
                argv,
                env,
                timeout_ms,
                tty,
                stdin,
                size,
            } => {
                let mut all_env = self.guest.env();
                all_env.extend(env);
                let request = exec::Request {
                    id,
                    argv,
                    env: all_env,
                    timeout: timeout_ms.map(Duration::from_millis),
                    tty,
                    stdin,
                    size,
                };
                exec::spawn(request, link, self.running.clone());
            }
            HostMessage::ExecInput { id, data } => match decode_data(&data) {
                Ok(bytes) => self.with_exec(id, |c| c.input(bytes)),
                Err(_) => eprintln!("hearth-agent: exec {id}: input is not base64; dropped"),
            },
            HostMessage::ExecInputEnd { id } => self.with_exec(id, Control::end_input),
            HostMessage::ExecResize { id, size } => self.with_exec(id, |c| c.resize(size)),
            HostMessage::ExecSignal { id, signal } => self.with_exec(id, |c| c.signal(signal)),
            HostMessage::FileRead {
                id,
                path,
                max_bytes,
            } => files::read(id, path, max_bytes, link),
            HostMessage::FileWrite {
                id,
                path,
                size,
                mode,
            } => reply(&link, self.uploads.begin(id, &path, size, mode)),
            HostMessage::FileChunk { id, data } => reply(&link, self.uploads.chunk(id, &data)),
            HostMessage::FileEnd { id, sha256 } => {
                reply(&link, Some(self.uploads.end(id, &sha256)))
            }
            other => eprintln!(
                "hearth-agent: ignoring {} after the handshake",
                kind(&other)
            ),
        }
    }
}

impl<R> Session<R> {
    /// Runs `f` on exec `id` if it is still running; a message for an
    /// unknown or finished exec is ignored.
    fn with_exec(&self, id: u64, f: impl FnOnce(&Control)) {
        if let Some(control) = self.running.get(id) {
            f(&control);
        }
    }
}

fn reply(link: &Link, msg: Option<GuestMessage>) {
    if let Some(msg) = msg {
        let _ = link.send(msg);
    }
}

/// `heartbeat` every `HEARTBEAT` while this connection lasts.
fn start_heartbeat(link: Link) {
    std::thread::spawn(move || loop {
        std::thread::sleep(HEARTBEAT);
        let beat = GuestMessage::Heartbeat {
            uptime_ms: crate::uptime_ms(),
        };
        if link.send(beat).is_err() {
            return;
        }
    });
}

/// A message's type, for logs (never its contents: they may be secret).
fn kind(msg: &HostMessage) -> &'static str {
    match msg {
        HostMessage::Welcome { .. } => "welcome",
        HostMessage::Refused { .. } => "refused",
        HostMessage::Ack { .. } => "ack",
        HostMessage::Config { .. } => "config",
        HostMessage::Exec { .. } => "exec",
        HostMessage::FileRead { .. } => "file_read",
        HostMessage::FileWrite { .. } => "file_write",
        HostMessage::FileChunk { .. } => "file_chunk",
        HostMessage::FileEnd { .. } => "file_end",
        HostMessage::ExecInput { .. } => "exec_input",
        HostMessage::ExecInputEnd { .. } => "exec_input_end",
        HostMessage::ExecResize { .. } => "exec_resize",
        HostMessage::ExecSignal { .. } => "exec_signal",
    }
}

/// Serves one host after another: `connect` opens the channel (`None`
/// ends the loop; the real transports never do), then hello, welcome and
/// requests until the host hangs up, then the channel is closed and opened
/// again for the next host. A host that leaves before welcoming, refuses the
/// agent or errs costs a pause of `pause` before the next try. Commands
/// still running when their host leaves run on to their end or deadline,
/// their output dropped, except interactive ones (`stdin`), which are hung
/// up: their client is gone for good. Records wait in the outbox for the
/// next host.
pub fn serve_hosts<R: Read, W: Write + Send + 'static>(
    mut connect: impl FnMut() -> anyhow::Result<Option<(R, W)>>,
    hello: impl Fn() -> GuestMessage,
    pause: Duration,
    guest: &Arc<Guest>,
) -> anyhow::Result<()> {
    while let Some((reader, writer)) = connect()? {
        let mut session = Session::new(reader, writer, guest.clone());
        match session.handshake(hello()) {
            Ok(_) => {
                eprintln!("hearth-agent: connected");
                match session.serve() {
                    Ok(()) => eprintln!("hearth-agent: the host hung up"),
                    Err(e) => eprintln!("hearth-agent: {}", hearth_types::error_chain(&e)),
                }
                session.close();
            }
            Err(e) => {
                // With no host, hello waits, so this is a host that came
                // and went, or one that refused us: try again shortly.
                if !matches!(e, SessionError::ClosedEarly) {
                    eprintln!("hearth-agent: {}", hearth_types::error_chain(&e));
                }
                session.close();
                std::thread::sleep(pause);
            }
        }
    }
    Ok(())
}

fn check_version(protocol: u32) -> Result<u32, SessionError> {
    if (MIN_PROTOCOL..=PROTOCOL).contains(&protocol) {
        Ok(protocol)
    } else {
        Err(SessionError::Version(protocol))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::thread::JoinHandle;

    use hearth_agent_proto::{decode_data, Stream};

    use super::*;

    fn test_guest() -> Arc<Guest> {
        let guest = Guest::new(crate::guest::Settings {
            image_config: "/nonexistent/agent.json".into(),
            run_dir: std::env::temp_dir().join("hearth-agent-unit"),
            console: "/dev/null".into(),
            wait_for_host: false,
        });
        guest.start();
        guest
    }

    fn hello() -> GuestMessage {
        GuestMessage::Hello {
            protocol: PROTOCOL,
            agent_version: "test".into(),
            boot_id: "boot".into(),
            instance: "i".into(),
            uptime_ms: 1,
        }
    }

    /// Starts an agent session on one end of a socket pair; returns the other.
    fn agent() -> (UnixStream, JoinHandle<Result<(), SessionError>>) {
        let (host, guest) = UnixStream::pair().unwrap();
        let handle = std::thread::spawn(move || {
            let mut s = Session::new(guest.try_clone().unwrap(), guest, test_guest());
            s.handshake(hello())?;
            s.serve()
        });
        (host, handle)
    }

    /// The next message that is not a record (the guest's own
    /// `config_applied` and `ready` come first) or a heartbeat.
    fn recv(host: &mut UnixStream) -> GuestMessage {
        loop {
            match read_frame(host).unwrap().expect("the agent hung up") {
                GuestMessage::Record { .. }
                | GuestMessage::Heartbeat { .. }
                | GuestMessage::ExecInputWritten { .. } => {}
                other => return other,
            }
        }
    }

    fn welcome(host: &mut UnixStream) {
        assert!(matches!(
            recv(host),
            GuestMessage::Hello {
                protocol: PROTOCOL,
                ..
            }
        ));
        write_frame(
            host,
            &HostMessage::Welcome {
                protocol: PROTOCOL,
                acked: 0,
            },
        )
        .unwrap();
    }

    fn exec(host: &mut UnixStream, id: u64, argv: &[&str], timeout_ms: Option<u64>) {
        let msg = HostMessage::Exec {
            id,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("GREETING".into(), "hi".into())],
            timeout_ms,
            tty: false,
            stdin: false,
            size: None,
        };
        write_frame(host, &msg).unwrap();
    }

    /// Collects output until the exit; returns (stdout, stderr, exit).
    fn outcome(host: &mut UnixStream) -> (String, String, GuestMessage) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            match recv(host) {
                GuestMessage::ExecOutput { stream, data, .. } => {
                    let buf = if stream == Stream::Stdout {
                        &mut out
                    } else {
                        &mut err
                    };
                    buf.extend(decode_data(&data).unwrap());
                }
                end => {
                    let s = |b: Vec<u8>| String::from_utf8(b).unwrap();
                    return (s(out), s(err), end);
                }
            }
        }
    }

    #[test]
    fn exec_streams_both_outputs_and_the_exit_code() {
        let (mut host, agent) = agent();
        welcome(&mut host);
        exec(
            &mut host,
            1,
            &["sh", "-c", "echo $GREETING; echo err >&2; exit 3"],
            None,
        );
        let (out, err, end) = outcome(&mut host);
        assert_eq!((out.as_str(), err.as_str()), ("hi\n", "err\n"));
        let want = GuestMessage::ExecExit {
            id: 1,
            code: Some(3),
            signal: None,
            timed_out: false,
        };
        assert_eq!(end, want);
        drop(host);
        agent.join().unwrap().unwrap();
    }

    #[test]
    fn input_sent_right_after_an_exec_reaches_it_and_a_signal_ends_it() {
        let (mut host, _agent) = agent();
        welcome(&mut host);
        let interactive = |id, argv: &[&str]| HostMessage::Exec {
            id,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            timeout_ms: Some(20_000),
            tty: false,
            stdin: true,
            size: None,
        };
        write_frame(
            &mut host,
            &interactive(1, &["sh", "-c", "read x; echo got $x"]),
        )
        .unwrap();
        let input = HostMessage::ExecInput {
            id: 1,
            data: hearth_agent_proto::encode_data(b"it\n"),
        };
        write_frame(&mut host, &input).unwrap();
        let (out, _, end) = outcome(&mut host);
        assert_eq!(out, "got it\n");
        assert!(matches!(end, GuestMessage::ExecExit { code: Some(0), .. }));

        write_frame(&mut host, &interactive(2, &["cat"])).unwrap();
        write_frame(&mut host, &HostMessage::ExecSignal { id: 2, signal: 1 }).unwrap();
        let (_, _, end) = outcome(&mut host);
        let hung_up = GuestMessage::ExecExit {
            id: 2,
            code: None,
            signal: Some(1),
            timed_out: false,
        };
        assert_eq!(end, hung_up);
    }

    #[test]
    fn a_host_leaving_with_unread_messages_has_hung_up() {
        let (mut host, agent) = agent();
        welcome(&mut host);
        exec(&mut host, 1, &["echo", "unread"], None);
        // The reply waits unread in the host's socket when it closes, so
        // the agent's next read fails with ECONNRESET instead of EOF.
        std::thread::sleep(Duration::from_millis(300));
        drop(host);
        agent.join().unwrap().unwrap();
    }

    #[test]
    fn a_missing_program_is_an_exec_error() {
        let (mut host, _agent) = agent();
        welcome(&mut host);
        exec(&mut host, 2, &["/nonexistent/prog"], None);
        let (_, _, end) = outcome(&mut host);
        assert!(
            matches!(&end, GuestMessage::ExecError { id: 2, message } if message.contains("/nonexistent/prog")),
            "{end:?}"
        );
        exec(&mut host, 3, &[], None);
        assert!(matches!(
            outcome(&mut host).2,
            GuestMessage::ExecError { id: 3, .. }
        ));
    }

    #[test]
    fn a_command_past_its_deadline_is_killed() {
        let (mut host, _agent) = agent();
        welcome(&mut host);
        exec(&mut host, 4, &["sh", "-c", "sleep 1 & sleep 30"], Some(100));
        let (_, _, end) = outcome(&mut host);
        let want = GuestMessage::ExecExit {
            id: 4,
            code: None,
            signal: Some(9),
            timed_out: true,
        };
        assert_eq!(end, want);
    }

    #[test]
    fn a_refusal_ends_the_handshake_with_its_reason() {
        let (mut host, agent) = agent();
        recv(&mut host);
        let refusal = HostMessage::Refused {
            reason: "too new".into(),
        };
        write_frame(&mut host, &refusal).unwrap();
        let err = agent.join().unwrap().unwrap_err();
        assert!(err.to_string().contains("too new"), "{err}");
    }

    #[test]
    fn an_unsupported_version_is_refused_by_the_agent() {
        let (mut host, agent) = agent();
        recv(&mut host);
        write_frame(
            &mut host,
            &HostMessage::Welcome {
                protocol: 99,
                acked: 0,
            },
        )
        .unwrap();
        assert!(matches!(
            agent.join().unwrap(),
            Err(SessionError::Version(99))
        ));
    }

    /// Runs `serve_hosts` over socket pairs handed to it one by one;
    /// returns the sender of guest ends (drop it to end the loop).
    fn agent_loop() -> (
        std::sync::mpsc::Sender<UnixStream>,
        JoinHandle<anyhow::Result<()>>,
    ) {
        let (tx, rx) = std::sync::mpsc::channel::<UnixStream>();
        let handle = std::thread::spawn(move || {
            serve_hosts(
                || Ok(rx.recv().ok().map(|g| (g.try_clone().unwrap(), g))),
                hello,
                Duration::from_millis(10),
                &test_guest(),
            )
        });
        (tx, handle)
    }

    fn connect(guests: &std::sync::mpsc::Sender<UnixStream>) -> UnixStream {
        let (host, guest) = UnixStream::pair().unwrap();
        guests.send(guest).unwrap();
        host
    }

    #[test]
    fn the_agent_serves_one_host_after_another() {
        let (guests, agent) = agent_loop();
        for round in 1..=3 {
            let mut host = connect(&guests);
            welcome(&mut host);
            exec(&mut host, round, &["sh", "-c", "echo $GREETING"], None);
            let (out, _, end) = outcome(&mut host);
            assert_eq!(out, "hi\n");
            assert!(matches!(end, GuestMessage::ExecExit { code: Some(0), .. }));
        }
        drop(guests);
        agent.join().unwrap().unwrap();
    }

    #[test]
    fn a_host_leaving_before_welcome_is_followed_by_the_next() {
        let (guests, agent) = agent_loop();
        let mut early = connect(&guests);
        recv(&mut early);
        drop(early);
        let mut host = connect(&guests);
        welcome(&mut host);
        exec(&mut host, 1, &["true"], None);
        assert!(matches!(
            outcome(&mut host).2,
            GuestMessage::ExecExit { code: Some(0), .. }
        ));
        drop(host);
        drop(guests);
        agent.join().unwrap().unwrap();
    }

    #[test]
    fn a_command_outlives_its_host_and_its_output_goes_nowhere() {
        let dir = tempfile::tempdir().unwrap();
        let done = dir.path().join("done");
        let script = format!(
            "sleep 0.3; echo late; echo late >&2; echo done > {}",
            done.display()
        );
        let (guests, agent) = agent_loop();
        let mut first = connect(&guests);
        welcome(&mut first);
        exec(&mut first, 1, &["sh", "-c", &script], None);
        drop(first);

        let mut second = connect(&guests);
        welcome(&mut second);
        let start = std::time::Instant::now();
        while !done.exists() {
            assert!(start.elapsed() < Duration::from_secs(10), "never finished");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        exec(&mut second, 2, &["true"], None);
        // The first thing the new host hears of is its own command.
        assert_eq!(
            recv(&mut second),
            GuestMessage::ExecExit {
                id: 2,
                code: Some(0),
                signal: None,
                timed_out: false
            }
        );
        drop(second);
        drop(guests);
        agent.join().unwrap().unwrap();
    }
}
