//! Requests in flight on one connection, by id, and the routing of the
//! agent's answers to them (exec output and ends, file chunks and ends);
//! heartbeats go to the store.

use std::collections::HashMap;

use hearth_agent_proto::{decode_data, GuestMessage};
use hearth_types::{error_chain, Timestamp};
use tokio::sync::{mpsc, oneshot};

use super::input_flow::InputFlow;
use super::{ExecEvent, FileEvent, LinkSpec, PortError, PortEvent};

/// A request in flight, by id.
pub(super) enum Pending {
    Exec(RunningExec),
    File(mpsc::UnboundedSender<FileEvent>),
    Port(OpenPort),
}

/// A port stream: where its events go, its data's flow to the guest, and,
/// until the agent answered the connect, who waits for that answer.
pub(super) struct OpenPort {
    pub(super) events: mpsc::UnboundedSender<PortEvent>,
    pub(super) flow: InputFlow,
    pub(super) answer: Option<oneshot::Sender<Result<(), PortError>>>,
}

/// An exec the agent runs: where its events go, and its input's flow.
pub(super) struct RunningExec {
    pub(super) events: mpsc::UnboundedSender<ExecEvent>,
    pub(super) input: InputFlow,
}

impl Pending {
    pub(super) fn lost(self) {
        match self {
            Pending::Exec(exec) => drop(exec.events.send(ExecEvent::Lost)),
            Pending::File(tx) => drop(tx.send(FileEvent::Lost)),
            Pending::Port(port) => match port.answer {
                Some(answer) => drop(answer.send(Err(PortError::Lost))),
                None => drop(port.events.send(PortEvent::Lost)),
            },
        }
    }
}

/// Hands an answer to the request it belongs to; heartbeats to the store.
pub(super) async fn route(spec: &LinkSpec, msg: GuestMessage, pending: &mut HashMap<u64, Pending>) {
    match msg {
        GuestMessage::Heartbeat { .. } => {
            if let Err(e) = spec.store.agent_heartbeat(&spec.vm, Timestamp::now()).await {
                tracing::warn!(vm = %spec.vm, error = %error_chain(&e), "a heartbeat was not recorded");
            }
        }
        GuestMessage::ExecOutput { id, stream, data } => {
            if let Some(Pending::Exec(exec)) = pending.get(&id) {
                let event = match decode_data(&data) {
                    Ok(bytes) => ExecEvent::Output(stream, bytes),
                    Err(_) => ExecEvent::Error("the agent sent output that is not base64".into()),
                };
                let _ = exec.events.send(event);
            }
        }
        GuestMessage::ExecExit {
            id,
            code,
            signal,
            timed_out,
        } => {
            if let Some(Pending::Exec(exec)) = pending.remove(&id) {
                let _ = exec.events.send(ExecEvent::Exit {
                    code,
                    signal,
                    timed_out,
                });
            }
        }
        GuestMessage::ExecError { id, message } => {
            if let Some(Pending::Exec(exec)) = pending.remove(&id) {
                let _ = exec.events.send(ExecEvent::Error(message));
            }
        }
        GuestMessage::FileChunk { id, data } => {
            if let Some(Pending::File(tx)) = pending.get(&id) {
                let event = match decode_data(&data) {
                    Ok(bytes) => FileEvent::Chunk(bytes),
                    Err(_) => FileEvent::Error("the agent sent a chunk that is not base64".into()),
                };
                let _ = tx.send(event);
            }
        }
        GuestMessage::FileDone { id, size, sha256 } => {
            if let Some(Pending::File(tx)) = pending.remove(&id) {
                let _ = tx.send(FileEvent::Done { size, sha256 });
            }
        }
        GuestMessage::FileError { id, message } => {
            if let Some(Pending::File(tx)) = pending.remove(&id) {
                let _ = tx.send(FileEvent::Error(message));
            }
        }
        GuestMessage::PortConnected { id } => {
            if let Some(Pending::Port(port)) = pending.get_mut(&id) {
                if let Some(answer) = port.answer.take() {
                    let _ = answer.send(Ok(()));
                }
            }
        }
        GuestMessage::PortRefused { id, message } => {
            if let Some(Pending::Port(mut port)) = pending.remove(&id) {
                if let Some(answer) = port.answer.take() {
                    let _ = answer.send(Err(PortError::Refused(message)));
                }
            }
        }
        GuestMessage::PortData { id, data } => {
            if let Some(Pending::Port(port)) = pending.get(&id) {
                let event = match decode_data(&data) {
                    Ok(bytes) => PortEvent::Data(bytes),
                    Err(_) => {
                        PortEvent::Closed(Some("the agent sent data that is not base64".into()))
                    }
                };
                let _ = port.events.send(event);
            }
        }
        GuestMessage::PortEnd { id } => {
            if let Some(Pending::Port(port)) = pending.get(&id) {
                let _ = port.events.send(PortEvent::End);
            }
        }
        GuestMessage::PortClosed { id, message } => {
            if let Some(Pending::Port(port)) = pending.remove(&id) {
                let _ = port.events.send(PortEvent::Closed(message));
            }
        }
        GuestMessage::PortListenFailed { port, message } => {
            tracing::warn!(vm = %spec.vm, port, %message, "the agent could not listen on a guest port");
        }
        // Taken in `take_messages`, which can send what it lets through.
        GuestMessage::ExecInputWritten { .. }
        | GuestMessage::PortAck { .. }
        | GuestMessage::PortAccepted { .. }
        | GuestMessage::Captured { .. }
        | GuestMessage::CaptureFailed { .. } => {}
        // Taken in `take_messages` too: a hello drops the connection.
        GuestMessage::Hello { .. } | GuestMessage::Record { .. } => {
            tracing::warn!(vm = %spec.vm, "ignoring an unexpected message from the agent");
        }
    }
}
