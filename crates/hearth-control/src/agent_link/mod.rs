//! One persistent link per running VM to its guest agent.
//!
//! The link connects to the socket QEMU listens on for the VM's
//! `hearth.agent` port, reads `hello`, answers `welcome` with the highest
//! record it stored for that agent process, sends the VM's configuration,
//! then for the VM's whole life stores every record (acking after it is
//! stored), keeps the heartbeat and carries execs, file transfers, port
//! streams and credential captures, whose answers it routes by id. When the channel drops it connects again after
//! a short backoff; it ends when the VM stops ([`Links::stop`]).
//!
//! Nothing here logs a command's arguments, input or output, a file's
//! content or a captured credential.

mod capture;
mod greet;
mod input;
mod input_flow;
mod pending;
mod ports;
mod records;
mod restored;
mod session;
mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hearth_store::Store;
use hearth_types::guest::{CaptureSpec, Stream};
use hearth_types::VmId;
use hearth_vmm::AgentEndpoint;
use tokio::sync::{mpsc, oneshot, watch};

pub use self::capture::{CaptureEvent, CapturedCredentialFile, CapturedSet, CAPTURE_PROTOCOL};
use self::input::Input;
pub use self::input::{
    Exec, ExecInput, ExecSpec, LinkError, HELD_INPUT_LIMIT, INTERACTIVE_PROTOCOL,
};
use self::input_flow::Gauge;
use self::ports::PortOp;
pub use self::ports::{
    splice, PortError, PortEvent, PortStream, PortWriter, HELD_PORT_LIMIT, PORTS_PROTOCOL,
};

/// What a link tells its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The agent reported every readiness check passed.
    Ready(VmId),
}

/// What a link needs to run.
#[derive(Clone, Debug)]
pub struct LinkSpec {
    pub vm: VmId,
    /// Where the agent is: QEMU's socket for the VM's `hearth.agent` port,
    /// or Firecracker's vsock socket and port.
    pub endpoint: AgentEndpoint,
    pub store: Arc<dyn Store>,
    pub notices: mpsc::UnboundedSender<Notice>,
}

/// An exec's progress, in order; the last is `Exit`, `Error` or `Lost`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecEvent {
    Output(Stream, Vec<u8>),
    Exit {
        code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
    },
    /// The command could not be started; the agent's words.
    Error(String),
    /// The channel dropped before the command ended.
    Lost,
}

/// A file transfer's progress; the last is `Done`, `Error` or `Lost`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileEvent {
    /// Part of a file being read.
    Chunk(Vec<u8>),
    Done {
        size: u64,
        sha256: String,
    },
    Error(String),
    Lost,
}

/// A request for the agent, answered on its channel. `id` is the
/// request's on the channel (input names the exec it belongs to).
#[derive(Debug)]
pub(crate) enum Request {
    Exec {
        id: u64,
        spec: ExecSpec,
        events: mpsc::UnboundedSender<ExecEvent>,
        /// Its input held on the host, shared with its `ExecInput`.
        held: Gauge,
    },
    /// For the exec `id`, sent after it.
    Input { id: u64, input: Input },
    ReadFile {
        id: u64,
        path: String,
        max_bytes: u64,
        events: mpsc::UnboundedSender<FileEvent>,
    },
    WriteFile {
        id: u64,
        path: String,
        data: Vec<u8>,
        mode: u32,
        events: mpsc::UnboundedSender<FileEvent>,
    },
    /// Open a stream to a guest loopback port.
    PortConnect {
        id: u64,
        port: u16,
        events: mpsc::UnboundedSender<PortEvent>,
        /// Its data held on the host, shared with its `PortWriter`.
        held: Gauge,
        answer: oneshot::Sender<Result<(), PortError>>,
    },
    /// For the stream `id`, sent after it.
    Port { id: u64, op: PortOp },
    /// Keep a guest loopback listener on `port` (asked again after each
    /// welcome); its connections arrive on `incoming`.
    Listen {
        port: u16,
        incoming: mpsc::UnboundedSender<PortStream>,
    },
    /// Keep a capture watch (asked again after each welcome); what it
    /// captures arrives on `events`.
    CaptureWatch {
        id: u64,
        spec: CaptureSpec,
        events: mpsc::UnboundedSender<CaptureEvent>,
    },
    /// The owner of watch `id` dropped its receiver.
    CaptureStop { id: u64 },
    /// Send the VM's stored configuration now (a pooled VM handed out).
    Configure,
}

impl Request {
    /// The requester gave up (its receiver is gone): nothing to send.
    /// Input is never abandoned: it may be the hang-up of a command whose
    /// requester left.
    fn abandoned(&self) -> bool {
        match self {
            Request::Exec { events, .. } => events.is_closed(),
            Request::ReadFile { events, .. } | Request::WriteFile { events, .. } => {
                events.is_closed()
            }
            Request::PortConnect { answer, .. } => answer.is_closed(),
            Request::Listen { incoming, .. } => incoming.is_closed(),
            Request::CaptureWatch { events, .. } => events.is_closed(),
            Request::Input { .. }
            | Request::Port { .. }
            | Request::CaptureStop { .. }
            | Request::Configure => false,
        }
    }
}

/// The way into one VM's link.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    requests: mpsc::UnboundedSender<Request>,
    stop: Arc<watch::Sender<bool>>,
    /// The protocol the connected agent chose; `None` while none is
    /// connected and past its handshake.
    connected: watch::Receiver<Option<u32>>,
    /// Request ids keep counting across connections: an answer from an old
    /// connection's command can never be taken for a new one's.
    next_id: Arc<AtomicU64>,
}

impl LinkHandle {
    /// Whether the agent is connected and past its handshake now.
    pub fn connected(&self) -> bool {
        self.connected.borrow().is_some()
    }

    /// The protocol version the connected agent chose, if one is connected.
    pub fn protocol(&self) -> Option<u32> {
        *self.connected.borrow()
    }

    /// Waits until the agent is connected, at most `window`.
    pub async fn wait_connected(&self, window: Duration) -> bool {
        let mut rx = self.connected.clone();
        tokio::time::timeout(window, rx.wait_for(|c| c.is_some()))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Starts a plain command (empty stdin); its events arrive on the
    /// receiver. `None` when the link has ended.
    pub fn exec(
        &self,
        argv: Vec<String>,
        timeout: Option<Duration>,
        tty: bool,
    ) -> Option<mpsc::UnboundedReceiver<ExecEvent>> {
        let spec = ExecSpec {
            argv,
            timeout,
            tty,
            ..ExecSpec::default()
        };
        self.start_exec(spec).ok().map(|exec| exec.events)
    }

    /// Starts a command that may take input. An interactive one (`stdin`
    /// or `size`) is refused when the connected agent is too old for it;
    /// a link between connections takes it, and the connection that sends
    /// it checks again.
    pub fn start_exec(&self, spec: ExecSpec) -> Result<Exec, LinkError> {
        if let Some(protocol) = self.protocol() {
            if spec.interactive() && protocol < INTERACTIVE_PROTOCOL {
                return Err(LinkError::AgentTooOld { protocol });
            }
        }
        let (events, rx) = mpsc::unbounded_channel();
        let id = self.new_id();
        let held: Gauge = Arc::new(watch::channel(0).0);
        let request = Request::Exec {
            id,
            spec,
            events,
            held: held.clone(),
        };
        self.requests.send(request).map_err(|_| LinkError::Ended)?;
        let input = ExecInput {
            id,
            requests: self.requests.clone(),
            protocol: self.connected.clone(),
            held,
        };
        Ok(Exec { events: rx, input })
    }

    fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Asks for the file at `path` (refused by the agent above `max_bytes`).
    pub fn read_file(
        &self,
        path: String,
        max_bytes: u64,
    ) -> Option<mpsc::UnboundedReceiver<FileEvent>> {
        let (events, rx) = mpsc::unbounded_channel();
        let request = Request::ReadFile {
            id: self.new_id(),
            path,
            max_bytes,
            events,
        };
        self.requests.send(request).ok().map(|()| rx)
    }

    /// Writes `data` to `path` in the guest (mode `mode`).
    pub fn write_file(
        &self,
        path: String,
        data: Vec<u8>,
        mode: u32,
    ) -> Option<mpsc::UnboundedReceiver<FileEvent>> {
        let (events, rx) = mpsc::unbounded_channel();
        let request = Request::WriteFile {
            id: self.new_id(),
            path,
            data,
            mode,
            events,
        };
        self.requests.send(request).ok().map(|()| rx)
    }

    /// Opens a stream to TCP `port` on the guest's loopback; answers once
    /// the agent connected (or could not). Waits for a connection to the
    /// agent if none is up: callers bound it with a timeout.
    pub async fn open_port(&self, port: u16) -> Result<PortStream, PortError> {
        if let Some(protocol) = self.protocol() {
            if protocol < PORTS_PROTOCOL {
                return Err(PortError::AgentTooOld { protocol });
            }
        }
        let id = self.new_id();
        let (events, rx) = mpsc::unbounded_channel();
        let (writer, held) = PortWriter::new(id, self.requests.clone());
        let (answer, answered) = oneshot::channel();
        let request = Request::PortConnect {
            id,
            port,
            events,
            held,
            answer,
        };
        self.requests.send(request).map_err(|_| PortError::Ended)?;
        match answered.await {
            Ok(Ok(())) => Ok(PortStream { events: rx, writer }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(PortError::Lost),
        }
    }

    /// Has the agent listen on `port` of the guest's loopback for as long
    /// as the receiver lives (again after every reconnect); each guest
    /// connection there arrives as a stream.
    pub fn listen(&self, port: u16) -> Result<mpsc::UnboundedReceiver<PortStream>, LinkError> {
        let (incoming, rx) = mpsc::unbounded_channel();
        let request = Request::Listen { port, incoming };
        self.requests.send(request).map_err(|_| LinkError::Ended)?;
        Ok(rx)
    }

    /// Has the agent watch the credential files of `spec` for as long as
    /// the receiver lives (asked again after every reconnect; stopped when
    /// it is dropped). Each complete, stable set arrives as
    /// [`CaptureEvent::Captured`]; a spec that does not pass its check is
    /// one [`CaptureEvent::Failed`] at once, and nothing goes to the agent.
    /// `AgentTooOld` when the connected agent speaks protocol < 5 (an agent
    /// too old met after a reconnect is a `Failed` event). The receiver
    /// ends (`None`) when the link does (the VM stopped).
    pub fn watch_capture(
        &self,
        spec: CaptureSpec,
    ) -> Result<mpsc::UnboundedReceiver<CaptureEvent>, LinkError> {
        if let Some(protocol) = self.protocol() {
            if protocol < CAPTURE_PROTOCOL {
                return Err(LinkError::AgentTooOld { protocol });
            }
        }
        let (events, rx) = mpsc::unbounded_channel();
        if let Err(why) = spec.check() {
            let _ = events.send(CaptureEvent::Failed(format!(
                "the capture spec is not valid: {why}"
            )));
            return Ok(rx);
        }
        let request = Request::CaptureWatch {
            id: self.new_id(),
            spec,
            events,
        };
        self.requests.send(request).map_err(|_| LinkError::Ended)?;
        Ok(rx)
    }

    /// Sends the VM's stored configuration to its agent now, or on the
    /// next connection if none is up (a pooled VM being handed out; its
    /// agent applies the first configuration it gets and ignores later
    /// ones, so a repeat is harmless).
    pub fn configure(&self) -> Result<(), LinkError> {
        self.requests
            .send(Request::Configure)
            .map_err(|_| LinkError::Ended)
    }

    fn stop(&self) {
        self.stop.send_replace(true);
    }
}

/// Starts the link of `spec.vm` in the background.
pub fn spawn(spec: LinkSpec) -> LinkHandle {
    let (requests, rx) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    let (connected_tx, connected) = watch::channel(None);
    tokio::spawn(session::run(
        spec,
        requests.clone(),
        rx,
        stop_rx,
        connected_tx,
    ));
    LinkHandle {
        requests,
        stop: Arc::new(stop),
        connected,
        next_id: Arc::new(AtomicU64::new(1)),
    }
}

/// The links of the running VMs.
#[derive(Debug, Default)]
pub struct Links {
    by_vm: Mutex<HashMap<VmId, LinkHandle>>,
}

impl Links {
    /// Starts a link for `spec.vm`, replacing (and stopping) an older one.
    pub fn start(&self, spec: LinkSpec) {
        let vm = spec.vm.clone();
        if let Some(old) = self.lock().insert(vm, spawn(spec)) {
            old.stop();
        }
    }

    pub fn get(&self, vm: &VmId) -> Option<LinkHandle> {
        self.lock().get(vm).cloned()
    }

    /// Ends the link of `vm`, if any; its requests in flight end `Lost`.
    pub fn stop(&self, vm: &VmId) {
        if let Some(link) = self.lock().remove(vm) {
            link.stop();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<VmId, LinkHandle>> {
        self.by_vm.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod pool_tests;
#[cfg(test)]
mod real_agent_tests;
#[cfg(test)]
mod tests;
