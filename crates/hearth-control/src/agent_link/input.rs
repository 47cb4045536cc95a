//! Interactive execs: what a command needs to be typed into (stdin, a
//! terminal's size) and the handle that feeds it while it runs.
//!
//! Input is protocol 3. An agent that chose protocol 2 (an image built
//! before) still runs plain execs, but an interactive one is refused here,
//! with the fix, rather than sent to an agent that would misread it.

use std::time::Duration;

use hearth_types::guest::{ExecSignal, TermSize};
use tokio::sync::{mpsc, watch};

use super::input_flow::{below, hold_while, wait_below, Gauge};
use super::PORTS_PROTOCOL;
use super::{ExecEvent, Request};

/// The first protocol version that carries exec input, sizes and signals.
pub const INTERACTIVE_PROTOCOL: u32 = 3;

/// Raw bytes per `exec_input` message: far below a frame's limit once in
/// base64, however much one [`ExecInput::send`] carries.
pub(super) const INPUT_CHUNK: usize = 64 * 1024;
/// Input held on the host for one exec (sent, not yet passed to the agent
/// because the command is behind) above which [`ExecInput::has_room`] says
/// no: a feeder that waits for room keeps the host's memory bounded.
pub const HELD_INPUT_LIMIT: usize = 1 << 20;

/// One command for the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    /// Added to the agent's environment for this command.
    pub env: Vec<(String, String)>,
    /// The agent kills the command's process group after it.
    pub timeout: Option<Duration>,
    /// On a new pseudo-terminal (stdout and stderr merged).
    pub tty: bool,
    /// Its stdin is fed by [`ExecInput::send`] until [`ExecInput::end`];
    /// without, it is empty.
    pub stdin: bool,
    /// The terminal's size at the start (with `tty`; default 24x80).
    pub size: Option<TermSize>,
}

impl ExecSpec {
    /// Whether it needs protocol 3 at the start.
    pub fn interactive(&self) -> bool {
        self.stdin || self.size.is_some()
    }
}

/// Why a request could not be sent: an exec started or fed, a capture
/// watched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The request needs a newer protocol; the message names what this
    /// agent's protocol lacks.
    #[error("the VM's agent speaks protocol {protocol}, too old for {}: rebuild the image with the current agent (`scripts/build-agent`, then `hearth image build --force`) and create the VM again", lacking(*protocol))]
    AgentTooOld { protocol: u32 },
    #[error("the VM's agent link has ended (the VM stopped)")]
    Ended,
}

/// What an agent of `protocol` cannot do, with the version each needs.
fn lacking(protocol: u32) -> &'static str {
    if protocol < INTERACTIVE_PROTOCOL {
        "interactive exec (stdin, terminal size and signals need protocol 3), port streams (4) and credential capture (5)"
    } else if protocol < PORTS_PROTOCOL {
        "port streams (they need protocol 4) and credential capture (5)"
    } else {
        "credential capture (it needs protocol 5)"
    }
}

/// What the host sends to a running exec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Input {
    Data(Vec<u8>),
    End,
    Resize(TermSize),
    Signal(i32),
}

/// An exec started with [`super::LinkHandle::start_exec`].
#[derive(Debug)]
pub struct Exec {
    /// Output, then `Exit`, `Error` or `Lost`.
    pub events: mpsc::UnboundedReceiver<ExecEvent>,
    pub input: ExecInput,
}

/// Feeds one running exec. Everything sent goes to the agent in the order
/// sent, after the exec itself; what arrives after the command ended (or
/// after the connection that ran it dropped) is dropped.
#[derive(Debug, Clone)]
pub struct ExecInput {
    pub(super) id: u64,
    pub(super) requests: mpsc::UnboundedSender<Request>,
    /// The connected agent's protocol, `None` while none is connected.
    pub(super) protocol: watch::Receiver<Option<u32>>,
    /// Input bytes held on the host (see `input_flow`).
    pub(super) held: Gauge,
}

impl ExecInput {
    /// The exec's id on the channel.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Bytes for its stdin (its terminal, with `tty`). Never waits: the
    /// link holds what the command has not taken yet; a feeder that must
    /// bound that waits for [`ExecInput::room`] between sends.
    pub fn send(&self, bytes: Vec<u8>) -> Result<(), LinkError> {
        hold_while(&self.held, bytes.len(), || self.push(Input::Data(bytes)))
    }

    /// Whether less than [`HELD_INPUT_LIMIT`] of its input is held.
    pub fn has_room(&self) -> bool {
        below(&self.held, HELD_INPUT_LIMIT)
    }

    /// Resolves once [`ExecInput::has_room`] (the command took input, or
    /// the exec ended and its input was dropped).
    pub async fn room(&self) {
        wait_below(&self.held, HELD_INPUT_LIMIT).await
    }

    /// No more input: the pipe is closed; on a terminal, end-of-file typed.
    pub fn end(&self) -> Result<(), LinkError> {
        self.push(Input::End)
    }

    /// The terminal's new size.
    pub fn resize(&self, size: TermSize) -> Result<(), LinkError> {
        self.push(Input::Resize(size))
    }

    /// Signal number `signal` for the command's process group.
    pub fn signal(&self, signal: i32) -> Result<(), LinkError> {
        self.push(Input::Signal(signal))
    }

    /// The client went away: SIGHUP to the command, and its input closed.
    pub fn hang_up(&self) -> Result<(), LinkError> {
        self.signal(ExecSignal::Hup.number())?;
        self.end()
    }

    fn push(&self, input: Input) -> Result<(), LinkError> {
        if let Some(protocol) = *self.protocol.borrow() {
            if protocol < INTERACTIVE_PROTOCOL {
                return Err(LinkError::AgentTooOld { protocol });
            }
        }
        let request = Request::Input { id: self.id, input };
        self.requests.send(request).map_err(|_| LinkError::Ended)
    }
}
