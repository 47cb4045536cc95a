//! `hearth vm exec -i`: the exec WebSocket (`GET /v1/vms/{id}/exec/attach`)
//! from the CLI's side. One loop owns the socket: it waits (poll) until the
//! server sent something, [`Inputs`] queued something or the socket takes
//! what waits to be sent; it prints the one and sends the other, so input
//! keeps its order, output is read while input waits, and nothing spins.

use std::io::{self, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hearth_types::api::{ApiError, ExecClientMessage, ExecEvent, ExecRequest};
use hearth_types::guest::TermSize;
use hearth_types::VmId;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::{ClientRequestBuilder, Message, WebSocket};

use super::input::{Input, Inputs};
use super::{Ended, Printer};
use crate::cli::ApiArgs;
use crate::commands::client::ClientError;

/// How long connecting may take before the server is called unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the upgrade may take once connected.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// After the command's end, how long the server has to close the socket.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How the session starts: the request and its terminal, if any.
pub struct Start {
    pub request: ExecRequest,
    pub tty: bool,
    pub size: Option<TermSize>,
}

/// Opens the exec WebSocket of VM `id`. A refusal before the upgrade
/// (401, 404, 409...) is the server's `ApiError`, like any other request.
pub fn connect(api: &ApiArgs, id: &VmId) -> Result<WebSocket<TcpStream>, ClientError> {
    let token = api
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ClientError::NoToken)?;
    let base = api.url.trim_end_matches('/');
    let url = ws_url(base, id)?;
    let request = url
        .parse()
        .map(ClientRequestBuilder::new)
        .map_err(|e| bad_url(base, e))?
        .with_header("Authorization", format!("Bearer {token}"))
        .into_client_request()
        .map_err(|e| bad_url(base, e))?;
    let stream = open(base, &request)?;
    stream
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| transport(&url, e))?;
    let (ws, _) = tungstenite::client(request, stream).map_err(|e| match e {
        HandshakeError::Failure(tungstenite::Error::Http(res)) => refused(&res),
        HandshakeError::Failure(e) => transport(&url, e),
        HandshakeError::Interrupted(_) => transport(&url, "the upgrade timed out"),
    })?;
    ws.get_ref()
        .set_read_timeout(None)
        .map_err(|e| transport(&url, e))?;
    Ok(ws)
}

/// `http://host:port[/prefix]` as `ws://host:port[/prefix]/v1/vms/{id}/exec/attach`.
fn ws_url(base: &str, id: &VmId) -> Result<String, ClientError> {
    let rest = base.strip_prefix("http://").ok_or_else(|| {
        bad_url(
            base,
            "interactive exec speaks plain ws:// only: give an http:// URL (TLS belongs to a proxy)",
        )
    })?;
    Ok(format!("ws://{rest}/v1/vms/{id}/exec/attach"))
}

fn open(
    base: &str,
    request: &tungstenite::handshake::client::Request,
) -> Result<TcpStream, ClientError> {
    let uri = request.uri();
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let port = uri.port_u16().unwrap_or(80);
    let unreachable = |e: io::Error| ClientError::Unreachable {
        url: base.to_owned(),
        source: ureq::Error::Io(e),
    };
    let addrs = std::net::ToSocketAddrs::to_socket_addrs(&(host, port)).map_err(unreachable)?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(unreachable(last))
}

fn bad_url(base: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Api {
        status: 0,
        code: "bad_url".into(),
        message: format!("--url {base} cannot be used for the exec WebSocket: {e}"),
    }
}

fn transport(url: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Api {
        status: 0,
        code: "websocket".into(),
        message: format!("the exec WebSocket {url} failed: {e}"),
    }
}

/// The server's answer instead of the upgrade, as its `ApiError` says.
fn refused(res: &tungstenite::http::Response<Option<Vec<u8>>>) -> ClientError {
    let status = res.status().as_u16();
    let body = res.body().as_deref().unwrap_or_default();
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => ClientError::Api {
            status,
            code: e.code,
            message: e.message,
        },
        Err(_) => ClientError::Api {
            status,
            code: format!("http_{status}"),
            message: format!("the server refused the exec WebSocket with HTTP {status}"),
        },
    }
}

/// Sends `start`, then runs the session to the command's end: the server's
/// events printed, `inputs` forwarded. Returns how the command ended.
pub fn run_session<O: Write, E: Write>(
    ws: &mut WebSocket<TcpStream>,
    start: Start,
    inputs: &Inputs,
    printer: &mut Printer<O, E>,
) -> anyhow::Result<Ended> {
    let Start { request, tty, size } = start;
    ws.get_ref().set_nonblocking(true)?;
    let mut session = Session {
        ws,
        printer,
        end: None,
        closed_at: None,
        sending: true,
        unflushed: false,
    };
    session.send(&ExecClientMessage::Start { request, tty, size })?;
    session.run(inputs)
}

/// The most inputs taken in one turn of the loop before the socket is
/// read again: a peer that takes input as fast as we have it does not
/// keep its output waiting.
const INPUTS_PER_TURN: usize = 64;

/// The session's state. The socket is non-blocking throughout: a send
/// the socket cannot take yet stays in tungstenite's buffer
/// (`unflushed`), and until it is written the loop takes no more input
/// but keeps reading and printing output. A blocking send would deadlock
/// against a server that stops reading us until we read it.
struct Session<'a, O: Write, E: Write> {
    ws: &'a mut WebSocket<TcpStream>,
    printer: &'a mut Printer<O, E>,
    /// The command's end, once the server said it.
    end: Option<Ended>,
    /// When the end arrived: the close must follow within [`CLOSE_GRACE`].
    closed_at: Option<Instant>,
    /// False once the server stopped taking input.
    sending: bool,
    /// True while tungstenite holds bytes the socket would not take yet.
    unflushed: bool,
}

impl<O: Write, E: Write> Session<'_, O, E> {
    fn run(&mut self, inputs: &Inputs) -> anyhow::Result<Ended> {
        loop {
            let wait = self
                .closed_at
                .map(|at| CLOSE_GRACE.saturating_sub(at.elapsed()));
            if wait.is_some_and(|left| left.is_zero()) {
                if let Some(end) = self.closed()? {
                    return Ok(end);
                }
            }
            let more = self.forward_queued(inputs)?;
            self.leave_if_asked_while_held_back(inputs)?;
            let socket_events = match self.unflushed {
                true => libc::POLLIN | libc::POLLOUT,
                false => libc::POLLIN,
            };
            let fds = [
                (self.ws.get_ref().as_fd(), socket_events),
                (inputs.wake_fd(), libc::POLLIN),
            ];
            // Inputs left over from a full turn: look, do not wait.
            let wait = if more { Some(Duration::ZERO) } else { wait };
            let ready = wait_for(&fds, wait)?;
            if ready[1] != 0 {
                // What is queued is taken by `forward_queued`, whatever rang.
                inputs.clear_wake();
                if let Some(why) = inputs.gave_up().filter(|_| self.end.is_none()) {
                    anyhow::bail!(why);
                }
            }
            if ready[0] & libc::POLLOUT != 0 {
                self.flush();
            }
            if ready[0] & !libc::POLLOUT != 0 {
                if let Some(end) = self.read_available()? {
                    return Ok(end);
                }
            }
        }
    }

    /// Sends queued inputs while the socket takes them (at most
    /// [`INPUTS_PER_TURN`]); true when more may be waiting.
    fn forward_queued(&mut self, inputs: &Inputs) -> anyhow::Result<bool> {
        for _ in 0..INPUTS_PER_TURN {
            if self.unflushed || !self.sending || self.end.is_some() {
                return Ok(false);
            }
            let Some(input) = inputs.next() else {
                return Ok(false);
            };
            self.forward(input)?;
        }
        Ok(true)
    }

    /// A SIGTERM or SIGHUP to us while the socket takes no more input
    /// waits behind input the server may never read (its command does not
    /// read stdin): rather than ignore it, we leave, and the server hangs
    /// the command up. `timeout hearth vm exec -i ...` ends on time.
    fn leave_if_asked_while_held_back(&self, inputs: &Inputs) -> anyhow::Result<()> {
        if !self.unflushed || self.end.is_some() {
            return Ok(());
        }
        let Some(signal) = inputs.ending_signal() else {
            return Ok(());
        };
        let name = serde_json::to_value(signal)?;
        let name = name.as_str().unwrap_or("a signal");
        anyhow::bail!(
            "got SIG{name} while the server took no more input: left the session (the command is hung up)"
        )
    }

    /// Sends one input.
    fn forward(&mut self, input: Input) -> anyhow::Result<()> {
        let message = match input {
            Input::Stdin(bytes) => ExecClientMessage::Stdin {
                data: STANDARD.encode(bytes),
            },
            Input::StdinEnd => ExecClientMessage::StdinEnd,
            Input::Resize(size) => ExecClientMessage::Resize { size },
            Input::Signal(signal) => ExecClientMessage::Signal { signal },
        };
        self.send(&message)
    }

    /// Hands `message` to tungstenite and writes what the socket takes
    /// now; the rest goes when it is writable.
    fn send(&mut self, message: &ExecClientMessage) -> anyhow::Result<()> {
        let text = serde_json::to_string(message)?;
        match self.ws.write(Message::text(text)) {
            // WouldBlock: the frame is buffered, the flush below retries.
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                self.stopped_taking_input(e);
                return Ok(());
            }
        }
        self.flush();
        Ok(())
    }

    /// Writes what tungstenite holds, as far as the socket takes it.
    fn flush(&mut self) {
        match self.ws.flush() {
            Ok(()) => self.unflushed = false,
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.unflushed = true;
            }
            Err(e) => self.stopped_taking_input(e),
        }
    }

    /// The server closed its side; its last frames say why.
    fn stopped_taking_input(&mut self, e: tungstenite::Error) {
        tracing::debug!("the exec WebSocket took no more input: {e}");
        self.sending = false;
        self.unflushed = false;
    }

    /// Reads every frame the socket has now; the end once it is closed.
    fn read_available(&mut self) -> anyhow::Result<Option<Ended>> {
        loop {
            let message = match self.ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(None)
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return self.closed()
                }
                Err(e) if self.end.is_some() => {
                    tracing::debug!("the exec WebSocket ended untidily: {e}");
                    return self.closed();
                }
                Err(e) => return Err(anyhow::Error::new(e).context("the exec WebSocket failed")),
            };
            match message {
                Message::Text(text) => self.event(text.as_str())?,
                Message::Close(_) => {
                    // Our answer to the close, if the socket takes it now:
                    // the command has ended, nothing else is owed.
                    let _ = self.ws.flush();
                    return self.closed();
                }
                // Pings are answered by tungstenite; nothing else is sent.
                _ => {}
            }
        }
    }

    fn event(&mut self, text: &str) -> anyhow::Result<()> {
        let event: ExecEvent = serde_json::from_str(text).map_err(|e| {
            anyhow::anyhow!("the server sent an exec event this hearth cannot read: {e}")
        })?;
        if let Some(end) = self.printer.event(event)? {
            self.end = Some(end);
            self.closed_at = Some(Instant::now());
        }
        Ok(())
    }

    fn closed(&mut self) -> anyhow::Result<Option<Ended>> {
        match self.end.take() {
            Some(end) => Ok(Some(end)),
            None => anyhow::bail!(
                "the server closed the exec WebSocket before the command's end: see `hearth vm show` and run it again"
            ),
        }
    }
}

/// Waits until one of `fds` is readable (or hung up), for at most `wait`
/// (`None`: no limit): which ones are. For tests of what is polled.
#[cfg(test)]
pub fn wait_readable(fds: &[BorrowedFd<'_>], wait: Option<Duration>) -> io::Result<Vec<bool>> {
    let fds: Vec<_> = fds.iter().map(|fd| (*fd, libc::POLLIN)).collect();
    Ok(wait_for(&fds, wait)?.iter().map(|r| *r != 0).collect())
}

/// Waits until one of `fds` has one of its events (or hung up, or
/// failed), for at most `wait` (`None`: no limit): the events each has.
fn wait_for(
    fds: &[(BorrowedFd<'_>, libc::c_short)],
    wait: Option<Duration>,
) -> io::Result<Vec<libc::c_short>> {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|(fd, events)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: *events,
            revents: 0,
        })
        .collect();
    let timeout = wait.map_or(-1, |d| d.as_millis().min(i32::MAX as u128) as i32);
    loop {
        // SAFETY: `polls` is a valid array of `polls.len()` pollfds whose
        // fds stay open for the borrows in `fds`.
        let rc = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, timeout) };
        if rc >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(polls.iter().map(|p| p.revents).collect())
}

#[cfg(test)]
mod tests;
