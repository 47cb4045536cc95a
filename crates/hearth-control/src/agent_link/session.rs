//! One link's life: connect, greet, serve until the channel drops, and
//! again, until the VM stops. What outlives a connection (listeners,
//! capture watches) is asked for again after each welcome.

use std::collections::HashMap;
use std::time::Duration;

use hearth_agent_proto::{encode_data, FrameError, GuestMessage, HostMessage, Record};
use hearth_types::guest::{CaptureSpec, ExecSignal};
use hearth_types::{error_chain, Timestamp};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use super::capture::{self, Watches, CAPTURE_PROTOCOL};
use super::greet::{greet, time_now, Connection, Greet};
use super::input::{Input, INTERACTIVE_PROTOCOL};
use super::input_flow::{InputFlow, Outgoing};
use super::pending::{route, OpenPort, Pending, RunningExec};
use super::ports::PortOp;
use super::records::to_row;
use super::{
    wire, CaptureEvent, ExecEvent, ExecSpec, LinkError, LinkSpec, Notice, PortError, PortStream,
    PortWriter, Request, PORTS_PROTOCOL,
};

/// The first pause before connecting again; doubled per failure.
const RETRY: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a connection waits for the hello. An agent that missed the
/// previous host's hang-up (see docs/agent.md) stays silent: hanging up
/// and connecting again after [`HANGUP_GAP`] wakes it.
const HELLO_TRY: Duration = Duration::from_secs(2);
const HANGUP_GAP: Duration = Duration::from_millis(250);
/// Silences in a row that get [`HELLO_TRY`]; after them a connection
/// waits [`HELLO_LONG`] (an agent still starting says hello at once on the
/// open connection; an image without one costs a connect per 10 s).
const QUICK_SILENCES: u32 = 5;
const HELLO_LONG: Duration = Duration::from_secs(10);
/// A write the agent does not take within this ends the connection.
const WRITE_WINDOW: Duration = Duration::from_secs(30);
/// Records stored (and acked) in one transaction, at most.
const BATCH: usize = 512;
/// Raw bytes per `file_chunk` (base64 keeps it far below a frame's limit).
const CHUNK: usize = 256 * 1024;
/// How often a connected agent gets the host's time again (protocol 4).
/// Under TCG a busy guest's clock was seen losing 5-6 s in 30 s (its timer
/// ticks are late while the emulated CPUs are saturated), so the time goes
/// out as often as the agent's heartbeat comes in: a 60-byte frame.
const TIME_EVERY: Duration = Duration::from_secs(2);

/// What outlives one connection: the guest loopback listeners and the
/// capture watches asked for (sent again after each welcome), and the way
/// back into the link for the writers of streams the guest opens and for
/// the stops of watches whose owner left.
pub(super) struct Standing {
    by_port: HashMap<u16, mpsc::UnboundedSender<PortStream>>,
    watches: Watches,
    requests: mpsc::UnboundedSender<Request>,
}

/// Why a connection ended.
enum End {
    Stopped,
    Dropped(String),
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped sender means nobody can stop us any more: stop now.
    let _ = stop.wait_for(|s| *s).await;
}

pub(super) async fn run(
    spec: LinkSpec,
    own_requests: mpsc::UnboundedSender<Request>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    mut stop: watch::Receiver<bool>,
    connected: watch::Sender<Option<u32>>,
) {
    let mut backoff = RETRY;
    let mut silences = 0u32;
    let mut standing = Standing {
        by_port: HashMap::new(),
        watches: Watches::default(),
        requests: own_requests,
    };
    loop {
        let greeted = tokio::select! {
            _ = stopped(&mut stop) => return,
            g = greet(&spec, if silences < QUICK_SILENCES { HELLO_TRY } else { HELLO_LONG }) => g,
        };
        let pause = match greeted {
            Ok(conn) => {
                backoff = RETRY;
                silences = 0;
                connected.send_replace(Some(conn.protocol));
                tracing::info!(vm = %spec.vm, protocol = conn.protocol, "agent connected");
                let end = conn
                    .serve(&spec, &mut requests, &mut stop, &mut standing)
                    .await;
                connected.send_replace(None);
                if let Err(e) = spec
                    .store
                    .agent_disconnected(&spec.vm, Timestamp::now())
                    .await
                {
                    tracing::warn!(vm = %spec.vm, error = %error_chain(&e), "the agent's disconnection was not recorded");
                }
                match end {
                    End::Stopped => return,
                    End::Dropped(why) => {
                        tracing::info!(vm = %spec.vm, %why, "agent channel dropped; connecting again");
                    }
                }
                HANGUP_GAP
            }
            Err(Greet::Silent) => {
                silences += 1;
                HANGUP_GAP
            }
            Err(Greet::Unreachable) => {
                let pause = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                pause
            }
            Err(Greet::Failed(why)) => {
                tracing::warn!(vm = %spec.vm, %why, "agent handshake failed");
                backoff = MAX_BACKOFF;
                MAX_BACKOFF
            }
        };
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

impl Connection {
    async fn serve(
        mut self,
        spec: &LinkSpec,
        requests: &mut mpsc::UnboundedReceiver<Request>,
        stop: &mut watch::Receiver<bool>,
        standing: &mut Standing,
    ) -> End {
        let mut pending = HashMap::new();
        let mut clock =
            tokio::time::interval_at(tokio::time::Instant::now() + TIME_EVERY, TIME_EVERY);
        if let Err(e) = self.ask_again(standing).await {
            return End::Dropped(error_chain(&e));
        }
        let end = loop {
            tokio::select! {
                _ = stopped(stop) => break End::Stopped,
                msg = self.frames.recv() => {
                    let Some(first) = msg else {
                        break End::Dropped("the agent hung up".into());
                    };
                    if let Err(why) = self.take_messages(spec, first, &mut pending, standing).await {
                        break End::Dropped(why);
                    }
                }
                request = requests.recv() => {
                    let Some(request) = request else { break End::Stopped };
                    if request.abandoned() {
                        continue;
                    }
                    if matches!(request, Request::Configure) {
                        if let Err(why) = self.send_config(spec).await {
                            break End::Dropped(why);
                        }
                        continue;
                    }
                    if let Err(e) = self.send_request(request, &mut pending, standing).await {
                        break End::Dropped(error_chain(&e));
                    }
                }
                _ = clock.tick(), if self.protocol >= PORTS_PROTOCOL => {
                    if let Err(e) = self.send(&time_now()).await {
                        break End::Dropped(error_chain(&e));
                    }
                }
            }
        };
        self.reader.abort();
        for (_, p) in pending.drain() {
            p.lost();
        }
        end
    }

    /// `first` and whatever else already arrived (up to [`BATCH`]): answers
    /// routed at once, records stored in one transaction, then acked.
    async fn take_messages(
        &mut self,
        spec: &LinkSpec,
        first: Result<GuestMessage, FrameError>,
        pending: &mut HashMap<u64, Pending>,
        standing: &mut Standing,
    ) -> Result<(), String> {
        let mut batch = Vec::new();
        let mut next = Some(first);
        let mut broken = None;
        while let Some(msg) = next.take() {
            match msg {
                Ok(GuestMessage::Record { seq, record }) => batch.push((seq, record)),
                Ok(beat @ GuestMessage::Heartbeat { uptime_ms }) => {
                    self.clock.observe(Timestamp::now(), uptime_ms);
                    route(spec, beat, pending).await;
                }
                Ok(GuestMessage::ExecInputWritten { id, bytes }) => {
                    if let Some(Pending::Exec(exec)) = pending.get_mut(&id) {
                        exec.input.written(bytes);
                    }
                    self.flush_input(id, pending)
                        .await
                        .map_err(|e| error_chain(&e))?;
                }
                Ok(GuestMessage::PortAck { id, bytes }) => {
                    if let Some(Pending::Port(port)) = pending.get_mut(&id) {
                        port.flow.written(bytes);
                    }
                    self.flush_input(id, pending)
                        .await
                        .map_err(|e| error_chain(&e))?;
                }
                Ok(GuestMessage::PortAccepted { id, port }) => self
                    .accepted(id, port, pending, standing)
                    .await
                    .map_err(|e| error_chain(&e))?,
                Ok(GuestMessage::Captured { id, files }) => self
                    .deliver_capture(id, capture::decode(files), standing)
                    .await
                    .map_err(|e| error_chain(&e))?,
                Ok(GuestMessage::CaptureFailed { id, message }) => self
                    .deliver_capture(id, CaptureEvent::Failed(message), standing)
                    .await
                    .map_err(|e| error_chain(&e))?,
                // The agent began a session anew on this connection (it
                // restarted, or its end of the channel went and came back):
                // it waits for a welcome this connection will never send.
                // Dropping it makes the link connect and greet it again.
                Ok(GuestMessage::Hello { .. }) => {
                    broken = Some("the agent said hello again: it began a new session".into());
                    break;
                }
                Ok(other) => route(spec, other, pending).await,
                Err(e) => {
                    broken = Some(error_chain(&e));
                    break;
                }
            }
            if batch.len() < BATCH {
                next = self.frames.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            self.store_batch(spec, batch).await?;
        }
        broken.map_or(Ok(()), Err)
    }

    /// Stores the records and acks them. A store that fails ends the
    /// connection unacked: the agent sends them again after the reconnect.
    async fn store_batch(
        &mut self,
        spec: &LinkSpec,
        batch: Vec<(u64, Record)>,
    ) -> Result<(), String> {
        let rows: Vec<_> = batch
            .iter()
            .map(|(seq, r)| to_row(*seq, r, self.clock))
            .collect();
        let acked = spec
            .store
            .store_agent_records(&spec.vm, &self.instance, &rows)
            .await
            .map_err(|e| format!("storing the agent's records failed: {}", error_chain(&e)))?;
        self.send(&HostMessage::Ack { seq: acked })
            .await
            .map_err(|e| error_chain(&e))?;
        if batch.iter().any(|(_, r)| matches!(r, Record::Ready { .. })) {
            let _ = spec.notices.send(Notice::Ready(spec.vm.clone()));
        }
        Ok(())
    }

    /// The configuration as stored now (a pooled VM's, once handed out).
    async fn send_config(&mut self, spec: &LinkSpec) -> Result<(), String> {
        let config = super::greet::config_to_send(spec)
            .await
            .map_err(|e| format!("reading the configuration failed: {}", error_chain(&e)))?;
        let Some(config) = config else {
            return Ok(());
        };
        self.send(&HostMessage::Config { config })
            .await
            .map_err(|e| error_chain(&e))
    }

    async fn send(&mut self, msg: &HostMessage) -> Result<(), FrameError> {
        match tokio::time::timeout(WRITE_WINDOW, wire::write_message(&mut self.writer, msg)).await {
            Ok(r) => r,
            Err(_) => Err(FrameError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the agent took no message for {} s", WRITE_WINDOW.as_secs()),
            ))),
        }
    }

    async fn send_request(
        &mut self,
        request: Request,
        pending: &mut HashMap<u64, Pending>,
        standing: &mut Standing,
    ) -> Result<(), FrameError> {
        match request {
            Request::Exec {
                id,
                spec,
                events,
                held,
            } => {
                let exec = RunningExec {
                    events,
                    input: InputFlow::new(held),
                };
                self.exec(id, spec, exec, pending).await
            }
            Request::Input { id, input } => self.input(id, input, pending).await,
            Request::ReadFile {
                id,
                path,
                max_bytes,
                events,
            } => {
                pending.insert(id, Pending::File(events));
                self.send(&HostMessage::FileRead {
                    id,
                    path,
                    max_bytes,
                })
                .await
            }
            Request::WriteFile {
                id,
                path,
                data,
                mode,
                events,
            } => {
                pending.insert(id, Pending::File(events));
                self.write_file(id, path, &data, mode).await
            }
            Request::PortConnect {
                id,
                port,
                events,
                held,
                answer,
            } => {
                if self.protocol < PORTS_PROTOCOL {
                    let too_old = PortError::AgentTooOld {
                        protocol: self.protocol,
                    };
                    let _ = answer.send(Err(too_old));
                    return Ok(());
                }
                let open = OpenPort {
                    events,
                    flow: InputFlow::new(held),
                    answer: Some(answer),
                };
                pending.insert(id, Pending::Port(open));
                self.send(&HostMessage::PortConnect { id, port }).await
            }
            Request::Port { id, op } => self.port_op(id, op, pending).await,
            Request::Listen { port, incoming } => {
                standing.by_port.insert(port, incoming);
                if self.protocol < PORTS_PROTOCOL {
                    return Ok(());
                }
                self.send(&HostMessage::PortListen { port }).await
            }
            Request::CaptureWatch { id, spec, events } => {
                self.watch_capture(id, spec, events, standing).await
            }
            Request::CaptureStop { id } => {
                if standing.watches.remove(id) && self.protocol >= CAPTURE_PROTOCOL {
                    return self.send(&HostMessage::CaptureStop { id }).await;
                }
                Ok(())
            }
            // Sent by `serve`, which has the store.
            Request::Configure => Ok(()),
        }
    }

    /// Asks the agent again for every listener and capture watch whose
    /// owner is still there; the watches of owners that left while the
    /// agent was away are stopped.
    async fn ask_again(&mut self, standing: &mut Standing) -> Result<(), FrameError> {
        standing.by_port.retain(|_, tx| !tx.is_closed());
        if self.protocol < PORTS_PROTOCOL {
            return Ok(());
        }
        let ports: Vec<u16> = standing.by_port.keys().copied().collect();
        for port in ports {
            self.send(&HostMessage::PortListen { port }).await?;
        }
        let (live, gone) = standing.watches.sweep();
        if self.protocol < CAPTURE_PROTOCOL {
            return Ok(());
        }
        for id in gone {
            self.send(&HostMessage::CaptureStop { id }).await?;
        }
        for (id, spec) in live {
            self.send(&HostMessage::CaptureWatch { id, spec }).await?;
        }
        Ok(())
    }

    /// A new capture watch: kept (for the reconnects to come) and sent,
    /// unless the agent is too old for it: then its owner hears why. A
    /// task waits for the owner to leave and has the watch stopped, or
    /// for the link to end (so the owner's receiver ends with it).
    async fn watch_capture(
        &mut self,
        id: u64,
        spec: CaptureSpec,
        events: mpsc::UnboundedSender<CaptureEvent>,
        standing: &mut Standing,
    ) -> Result<(), FrameError> {
        if self.protocol < CAPTURE_PROTOCOL {
            let why = LinkError::AgentTooOld {
                protocol: self.protocol,
            };
            let _ = events.send(CaptureEvent::Failed(why.to_string()));
            return Ok(());
        }
        let requests = standing.requests.clone();
        let owner = events.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = owner.closed() => drop(requests.send(Request::CaptureStop { id })),
                () = requests.closed() => {}
            }
        });
        standing.watches.add(id, spec.clone(), events);
        self.send(&HostMessage::CaptureWatch { id, spec }).await
    }

    /// What watch `id` reported goes to its owner; a watch nobody owns
    /// (any more) is stopped.
    async fn deliver_capture(
        &mut self,
        id: u64,
        event: CaptureEvent,
        standing: &mut Standing,
    ) -> Result<(), FrameError> {
        if standing.watches.deliver(id, event) {
            return Ok(());
        }
        self.send(&HostMessage::CaptureStop { id }).await
    }

    /// A guest program connected to the listener on `port`: its stream
    /// goes to the listener's owner, or is closed when there is none.
    async fn accepted(
        &mut self,
        id: u64,
        port: u16,
        pending: &mut HashMap<u64, Pending>,
        standing: &Standing,
    ) -> Result<(), FrameError> {
        let Some(incoming) = standing.by_port.get(&port) else {
            return self.send(&HostMessage::PortClose { id }).await;
        };
        let (events, rx) = mpsc::unbounded_channel();
        let (writer, held) = PortWriter::new(id, standing.requests.clone());
        if incoming.send(PortStream { events: rx, writer }).is_err() {
            return self.send(&HostMessage::PortClose { id }).await;
        }
        let open = OpenPort {
            events,
            flow: InputFlow::new(held),
            answer: None,
        };
        pending.insert(id, Pending::Port(open));
        Ok(())
    }

    /// What the owner of stream `id` does to it. Data and its end go
    /// through the stream's flow; for a stream gone, nothing is sent.
    async fn port_op(
        &mut self,
        id: u64,
        op: PortOp,
        pending: &mut HashMap<u64, Pending>,
    ) -> Result<(), FrameError> {
        let Some(Pending::Port(port)) = pending.get_mut(&id) else {
            return Ok(());
        };
        match op {
            PortOp::Data(bytes) => port.flow.push(&bytes),
            PortOp::End => port.flow.end(),
            PortOp::Consumed(bytes) => return self.send(&HostMessage::PortAck { id, bytes }).await,
            PortOp::Close => {
                pending.remove(&id);
                return self.send(&HostMessage::PortClose { id }).await;
            }
        }
        self.flush_input(id, pending).await
    }

    /// Sends exec `id`, unless it is interactive and the agent too old:
    /// then its requester hears why and the agent nothing.
    async fn exec(
        &mut self,
        id: u64,
        spec: ExecSpec,
        exec: RunningExec,
        pending: &mut HashMap<u64, Pending>,
    ) -> Result<(), FrameError> {
        if spec.interactive() && self.protocol < INTERACTIVE_PROTOCOL {
            let why = LinkError::AgentTooOld {
                protocol: self.protocol,
            };
            let _ = exec.events.send(ExecEvent::Error(why.to_string()));
            return Ok(());
        }
        pending.insert(id, Pending::Exec(exec));
        let timeout_ms = spec
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        self.send(&HostMessage::Exec {
            id,
            argv: spec.argv,
            env: spec.env,
            timeout_ms,
            tty: spec.tty,
            stdin: spec.stdin,
            size: spec.size,
        })
        .await
    }

    /// Input for the running exec `id`: data and its end go through the
    /// exec's flow (at most the window unreported by the agent); resizes
    /// and signals go at once, ahead of data still held. Input for an exec
    /// that ended, or ran on a connection that dropped, is dropped. A
    /// protocol 2 agent gets none (the handle refuses it before; this is
    /// for a reconnect to an older agent in between).
    async fn input(
        &mut self,
        id: u64,
        input: Input,
        pending: &mut HashMap<u64, Pending>,
    ) -> Result<(), FrameError> {
        let Some(Pending::Exec(exec)) = pending.get_mut(&id) else {
            return Ok(());
        };
        if self.protocol < INTERACTIVE_PROTOCOL {
            tracing::warn!(
                exec = id,
                protocol = self.protocol,
                "input for an exec dropped: the agent is too old for it"
            );
            return Ok(());
        }
        match input {
            Input::Data(bytes) => exec.input.push(&bytes),
            Input::End => exec.input.end(),
            Input::Resize(size) => return self.send(&HostMessage::ExecResize { id, size }).await,
            Input::Signal(signal) => {
                // The client is gone: its held input goes nowhere.
                if signal == ExecSignal::Hup.number() {
                    exec.input.hang_up();
                }
                return self.send(&HostMessage::ExecSignal { id, signal }).await;
            }
        }
        self.flush_input(id, pending).await
    }

    /// Sends what the window of exec or stream `id` allows of what is
    /// held for it.
    async fn flush_input(
        &mut self,
        id: u64,
        pending: &mut HashMap<u64, Pending>,
    ) -> Result<(), FrameError> {
        loop {
            let msg = match pending.get_mut(&id) {
                Some(Pending::Exec(exec)) => match exec.input.next() {
                    Some(Outgoing::Data(chunk)) => HostMessage::ExecInput {
                        id,
                        data: encode_data(&chunk),
                    },
                    Some(Outgoing::End) => HostMessage::ExecInputEnd { id },
                    None => return Ok(()),
                },
                Some(Pending::Port(port)) => match port.flow.next() {
                    Some(Outgoing::Data(chunk)) => HostMessage::PortData {
                        id,
                        data: encode_data(&chunk),
                    },
                    Some(Outgoing::End) => HostMessage::PortEnd { id },
                    None => return Ok(()),
                },
                _ => return Ok(()),
            };
            self.send(&msg).await?;
        }
    }

    async fn write_file(
        &mut self,
        id: u64,
        path: String,
        data: &[u8],
        mode: u32,
    ) -> Result<(), FrameError> {
        let size = data.len() as u64;
        self.send(&HostMessage::FileWrite {
            id,
            path,
            size,
            mode,
        })
        .await?;
        let mut sha = Sha256::new();
        for chunk in data.chunks(CHUNK) {
            sha.update(chunk);
            let data = encode_data(chunk);
            self.send(&HostMessage::FileChunk { id, data }).await?;
        }
        let sha256 = hex::encode(sha.finalize());
        self.send(&HostMessage::FileEnd { id, sha256 }).await
    }
}
