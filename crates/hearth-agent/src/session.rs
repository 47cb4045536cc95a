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
    decode_data, read_frame, redacted, write_frame, FrameError, GuestMessage, HostMessage,
    MIN_PROTOCOL, PROTOCOL,
};

use crate::exec;
use crate::files::{self, Uploads};
use crate::guest::Guest;
use crate::outbox::Link;
use crate::ports::Ports;
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
    /// The message's type only: its fields may be secret.
    #[error("the host answered hello with {0} instead of a welcome")]
    Unexpected(&'static str),
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
    /// This session's port streams and loopback listeners.
    ports: Ports,
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
            ports: Ports::default(),
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
                self.guest.captures.connected();
                start_heartbeat(link.clone());
                self.link = Some(link);
                Ok(protocol)
            }
            Some(HostMessage::Refused { reason }) => Err(SessionError::Refused(reason)),
            Some(other) => Err(SessionError::Unexpected(kind(&other))),
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
                Err(FrameError::Decode(e)) => {
                    eprintln!("hearth-agent: bad request: {}", redacted(&e))
                }
                Err(e) => return Err(SessionError::Read(e)),
            }
        }
    }

    /// Ends the session: its interactive execs are hung up, the outbox
    /// drops the write half, the reader goes with `self`.
    pub fn close(self) {
        self.running.hang_up_interactive();
        self.ports.close_all();
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
            HostMessage::Time { unix_ms } => {
                crate::clock::sync(unix_ms, self.guest.settings.keep_clock)
            }
            HostMessage::PortConnect { id, port } => self.ports.connect(id, port, link),
            HostMessage::PortListen { port } => self.ports.listen(port, link),
            HostMessage::PortData { id, data } => match decode_data(&data) {
                Ok(bytes) => self.ports.data(id, bytes),
                Err(_) => {
                    eprintln!("hearth-agent: port stream {id}: data is not base64; closed");
                    self.ports.close(id);
                }
            },
            HostMessage::PortEnd { id } => self.ports.end(id),
            HostMessage::PortAck { id, bytes } => self.ports.ack(id, bytes),
            HostMessage::PortClose { id } => self.ports.close(id),
            HostMessage::CaptureWatch { id, spec } => self.guest.captures.watch(id, spec, link),
            HostMessage::CaptureStop { id } => self.guest.captures.stop(id),
            HostMessage::Restored {
                seed,
                hostname,
                machine_id,
            } => self.guest.restored(&seed.0, &hostname, &machine_id),
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
        HostMessage::Time { .. } => "time",
        HostMessage::PortConnect { .. } => "port_connect",
        HostMessage::PortListen { .. } => "port_listen",
        HostMessage::PortData { .. } => "port_data",
        HostMessage::PortEnd { .. } => "port_end",
        HostMessage::PortAck { .. } => "port_ack",
        HostMessage::PortClose { .. } => "port_close",
        HostMessage::CaptureWatch { .. } => "capture_watch",
        HostMessage::CaptureStop { .. } => "capture_stop",
        HostMessage::Restored { .. } => "restored",
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
mod tests;
