//! TCP streams to and from the guest over the agent's channel (protocol
//! 4): what the host holds of each. A stream the host opens reaches a
//! guest loopback port ([`super::LinkHandle::open_port`]); a stream a guest
//! program opens, by connecting to a loopback listener the host asked for
//! ([`super::LinkHandle::listen`]), arrives on that listener's channel.
//!
//! Both directions are flow-controlled. Host to guest: the bytes go
//! through the same [`InputFlow`] as exec input (at most `PORT_WINDOW`
//! unacknowledged by the agent, the rest held here and counted in a gauge
//! the writer waits on). Guest to host: the agent keeps at most
//! `PORT_WINDOW` unacknowledged, and the stream's owner acknowledges what
//! it has passed on ([`PortWriter::consumed`]), so a slow client holds back
//! only its own stream. Many streams share one channel.

use std::sync::Arc;

use hearth_agent_proto::PORT_CHUNK;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::input_flow::{below, hold_while, wait_below, Gauge};
use super::{LinkError, Request};

/// The first protocol version that carries port streams.
pub use hearth_agent_proto::PORTS_PROTOCOL;

/// Bytes held on the host for one stream (sent by its owner, not yet
/// passed to the agent) above which [`PortWriter::has_room`] says no.
pub const HELD_PORT_LIMIT: usize = 1 << 20;

/// What happens on a stream, in order; the last is `Closed` or `Lost`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortEvent {
    /// Bytes from the guest end; pass them on, then call
    /// [`PortWriter::consumed`].
    Data(Vec<u8>),
    /// The guest end sent all it will (its half closed).
    End,
    /// The stream is over; `Some` says what broke it.
    Closed(Option<String>),
    /// The channel to the agent dropped while the stream was open.
    Lost,
}

/// Why a port could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// The agent's words: nothing listens there, or the connect failed.
    #[error("{0}")]
    Refused(String),
    #[error("the VM's agent speaks protocol {protocol}, too old for port streams (they need protocol {PORTS_PROTOCOL}): rebuild the image with the current agent (`scripts/build-agent`, then `hearth image build --force`) and create the VM again")]
    AgentTooOld { protocol: u32 },
    #[error("the VM's agent link has ended (the VM stopped)")]
    Ended,
    #[error("the channel to the VM's agent dropped before the port answered")]
    Lost,
}

impl From<LinkError> for PortError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::AgentTooOld { protocol } => PortError::AgentTooOld { protocol },
            LinkError::Ended => PortError::Ended,
        }
    }
}

/// One open stream: what comes from the guest, and the way to it.
#[derive(Debug)]
pub struct PortStream {
    pub events: mpsc::UnboundedReceiver<PortEvent>,
    pub writer: PortWriter,
}

/// What the host does to a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PortOp {
    Data(Vec<u8>),
    End,
    Close,
    /// The owner passed on this many bytes from the guest.
    Consumed(u64),
}

/// Sends to the guest end of one stream. Dropping every clone does not
/// close the stream: call [`PortWriter::close`] (or [`PortWriter::end`]).
#[derive(Debug, Clone)]
pub struct PortWriter {
    pub(super) id: u64,
    pub(super) requests: mpsc::UnboundedSender<Request>,
    pub(super) held: Gauge,
    /// Keeps the VM in use (its idle policy) while any clone is held.
    in_use: Option<Arc<crate::controller::InUse>>,
}

impl PortWriter {
    pub(super) fn new(id: u64, requests: mpsc::UnboundedSender<Request>) -> (PortWriter, Gauge) {
        let held: Gauge = Arc::new(watch::channel(0).0);
        let writer = PortWriter {
            id,
            requests,
            held: held.clone(),
            in_use: None,
        };
        (writer, held)
    }

    /// Marks the stream's VM in use for as long as this writer (or a
    /// clone made after) is held.
    pub(crate) fn keep_in_use(&mut self, token: Arc<crate::controller::InUse>) {
        self.in_use = Some(token);
    }

    /// The stream's id on the channel.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Bytes for the guest end. Never waits; a feeder that must bound
    /// what is held waits for [`PortWriter::room`] between sends.
    pub fn send(&self, bytes: Vec<u8>) -> Result<(), LinkError> {
        hold_while(&self.held, bytes.len(), || self.push(PortOp::Data(bytes)))
    }

    /// Whether less than [`HELD_PORT_LIMIT`] is held for the guest.
    pub fn has_room(&self) -> bool {
        below(&self.held, HELD_PORT_LIMIT)
    }

    /// Resolves once [`PortWriter::has_room`].
    pub async fn room(&self) {
        wait_below(&self.held, HELD_PORT_LIMIT).await
    }

    /// No more data from the host: the guest end's write side shuts.
    pub fn end(&self) -> Result<(), LinkError> {
        self.push(PortOp::End)
    }

    /// Aborts the stream, both ways.
    pub fn close(&self) -> Result<(), LinkError> {
        self.push(PortOp::Close)
    }

    /// `bytes` of the guest's data were passed on: the agent may send
    /// that many more.
    pub fn consumed(&self, bytes: u64) -> Result<(), LinkError> {
        self.push(PortOp::Consumed(bytes))
    }

    fn push(&self, op: PortOp) -> Result<(), LinkError> {
        let request = Request::Port { id: self.id, op };
        self.requests.send(request).map_err(|_| LinkError::Ended)
    }
}

/// Carries `stream` to and from `io` (a local socket, say) until both
/// ends are done: what `io` sends goes to the guest (never more than
/// [`HELD_PORT_LIMIT`] held), what the guest sends is written to `io` and
/// only then acknowledged. `Err` says what broke it; the stream is closed.
pub async fn splice<S>(stream: PortStream, io: S) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let PortStream { mut events, writer } = stream;
    let (mut from_io, mut to_io) = tokio::io::split(io);
    let mut buf = vec![0u8; PORT_CHUNK];
    let mut reading = true;
    loop {
        tokio::select! {
            read = from_io.read(&mut buf), if reading && writer.has_room() => match read {
                Ok(0) | Err(_) => {
                    reading = false;
                    writer.end().map_err(|e| e.to_string())?;
                }
                Ok(n) => writer.send(buf[..n].to_vec()).map_err(|e| e.to_string())?,
            },
            () = writer.room(), if reading && !writer.has_room() => {}
            event = events.recv() => match event {
                Some(PortEvent::Data(bytes)) => {
                    if let Err(e) = to_io.write_all(&bytes).await {
                        let _ = writer.close();
                        return Err(format!("writing to the local end failed: {e}"));
                    }
                    writer.consumed(bytes.len() as u64).map_err(|e| e.to_string())?;
                }
                Some(PortEvent::End) => {
                    let _ = to_io.shutdown().await;
                }
                Some(PortEvent::Closed(None)) => return Ok(()),
                Some(PortEvent::Closed(Some(why))) => return Err(why),
                Some(PortEvent::Lost) | None => return Err(PortError::Lost.to_string()),
            },
        }
    }
}
