//! `GET /v1/vms/{id}/exec/attach`: interactive exec over a WebSocket, what
//! replaces SSH. Everything that can fail before the command starts (the
//! token, the tenant, the VM's state, an agent too old) is checked before
//! the upgrade, so it is an ordinary HTTP error. Then the client's frames
//! (`ExecClientMessage`) feed the command and the server's frames
//! (`ExecEvent`, as in the NDJSON stream) carry its output and end.
//!
//! Only the VM's id and the program's name are logged, never arguments,
//! input or output.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use hearth_control::agent_link::ExecEvent as LinkEvent;
use hearth_control::controller::{AttachedExec, Controller, ExecError, ExecTarget};
use hearth_types::api::{ApiError, ExecClientMessage, ExecEvent, ExecRequest};
use hearth_types::guest::TermSize;
use hearth_types::VmId;
use tokio::sync::watch;

use crate::error::Problem;
use crate::exec::{api_event, error_event};
use crate::extract::{Caller, VmPath};
use crate::AppState;

/// How long the client has to send its `start` frame.
pub(crate) const START_WINDOW: Duration = Duration::from_secs(10);
/// The largest client frame taken (a `stdin` frame of about 768 KiB).
pub(crate) const MAX_CLIENT_FRAME: usize = 1 << 20;
/// The largest frame read at all. A frame between this and
/// [`MAX_CLIENT_FRAME`] is read whole and refused with a close reason; one
/// the library refuses mid-read leaves bytes unread, and closing on them
/// resets the connection before the client reads why.
const MAX_READ_FRAME: usize = 4 * MAX_CLIENT_FRAME;
/// How long the server waits for the client's answer to its close frame.
const CLOSE_WINDOW: Duration = Duration::from_secs(2);
/// While no client frame is read (the program is behind on its input), a
/// ping this often finds out whether the client is still there: a client
/// that left is only noticed by a read or a failed write, and a silent
/// program gives nothing to write.
const PROBE_WHILE_HELD: Duration = Duration::from_secs(2);

/// Runs a program in a ready VM interactively, over a WebSocket.
///
/// The first client frame must be `start` (an `ExecClientMessage`, JSON
/// text) within 10 s; its `request` is checked as for `POST .../exec`
/// (plus `size` only with `tty`). Then `stdin` (base64), `stdin_end`,
/// `resize` (ignored without `tty`) and `signal` frames, in any order. The
/// server sends `ExecEvent` JSON text frames: `output` as printed, then
/// one `exit` or `error`, then a close frame (1000). `error` is always the
/// last frame: a client frame the server cannot take (not JSON, an unknown
/// type, a second `start`, bad base64, a zero terminal size, a binary
/// frame) ends the exec with an `invalid_request` error naming it and a
/// close frame 1008, and the program is hung up; a frame above 1 MiB
/// closes with 1009. A client that closes or drops before the end hangs
/// the program up: SIGHUP to its process group, its stdin closed. The
/// timeout (`timeout_secs`, default 60, at most 3600) still applies.
#[utoipa::path(
    get,
    path = "/v1/vms/{id}/exec/attach",
    operation_id = "attach_exec",
    tag = "vms",
    params(("id" = VmId, Path, description = "The VM's id")),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol: client frames are `ExecClientMessage`s (the first `start`), server frames `ExecEvent`s, then a close frame"),
        (status = 400, description = "`invalid_id`, or `not_a_websocket`: the request is not a WebSocket upgrade", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 409, description = "`invalid_state`: the VM is not ready; `no_agent_channel`: a Firecracker VM; `agent_too_old`: the VM's agent predates interactive exec (rebuild the image)", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
        (status = 502, description = "`agent_unavailable`: the guest agent is not connected", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn attach(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Problem> {
    let upgrade = upgrade.map_err(|e| {
        Problem::bad_request(
            "not_a_websocket",
            format!("{e}: this route is a WebSocket; connect with `Upgrade: websocket` (`hearth vm exec -i` does), or use POST /v1/vms/{{id}}/exec"),
        )
    })?;
    let target = state.controller.exec_target(&scope, &id).await?;
    let ctl = Arc::clone(&state.controller);
    let shutdown = state.shutdown.subscribe();
    Ok(upgrade
        .max_message_size(MAX_READ_FRAME)
        .max_frame_size(MAX_READ_FRAME)
        .on_upgrade(move |socket| serve(socket, ctl, id, target, shutdown)))
}

/// How the server ends a connection: an optional last event, then a close
/// frame with `code` and a short `reason` (at most 123 bytes).
struct Ending {
    event: Option<ExecEvent>,
    code: u16,
    reason: &'static str,
}

impl Ending {
    /// The client sent something the server cannot take.
    fn invalid(message: impl Into<String>) -> Self {
        Ending {
            event: Some(ExecEvent::Error {
                code: "invalid_request".into(),
                message: message.into(),
            }),
            code: close_code::POLICY,
            reason: "invalid client frame",
        }
    }

    /// The exec ended (or could not start) with `event`.
    fn after(event: ExecEvent) -> Self {
        Ending {
            event: Some(event),
            code: close_code::NORMAL,
            reason: "the exec ended",
        }
    }

    /// The exec ended and its last event went out already.
    fn closed() -> Self {
        Ending {
            event: None,
            code: close_code::NORMAL,
            reason: "the exec ended",
        }
    }

    fn too_large() -> Self {
        let message = format!(
            "a client frame is larger than {MAX_CLIENT_FRAME} bytes: send stdin in smaller pieces"
        );
        Ending {
            code: close_code::SIZE,
            reason: "client frame above 1 MiB",
            ..Ending::invalid(message)
        }
    }

    fn shutdown() -> Self {
        Ending {
            event: Some(ExecEvent::Error {
                code: "server_shutdown".into(),
                message: "the server is shutting down; the program was hung up".into(),
            }),
            code: close_code::AWAY,
            reason: "server shutting down",
        }
    }
}

/// The connection after the upgrade: the start, then the relay.
async fn serve(
    mut socket: WebSocket,
    ctl: Arc<Controller>,
    vm: VmId,
    target: ExecTarget,
    mut shutdown: watch::Receiver<bool>,
) {
    let (request, tty, size) = match first_frame(&mut socket, START_WINDOW).await {
        Ok(start) => start,
        Err(Some(ending)) => return finish(&mut socket, ending).await,
        Err(None) => return,
    };
    let mut exec = match target.start(&ctl, request, tty, size) {
        Ok(exec) => exec,
        Err(e) => return finish(&mut socket, Ending::after(error_event(e))).await,
    };
    tracing::debug!(%vm, tty, "exec attach: started");
    let ending = relay(&mut socket, &mut exec, &mut shutdown).await;
    match ending {
        Some(ending) => {
            let ended = ending.code == close_code::NORMAL;
            finish(&mut socket, ending).await;
            if !ended {
                hang_up(&vm, exec).await;
            }
        }
        None => hang_up(&vm, exec).await,
    }
}

/// Waits for the `start` frame. `Err(None)`: the client left.
async fn first_frame(
    socket: &mut WebSocket,
    window: Duration,
) -> Result<(ExecRequest, bool, Option<TermSize>), Option<Ending>> {
    let deadline = tokio::time::Instant::now() + window;
    loop {
        let frame = match tokio::time::timeout_at(deadline, socket.recv()).await {
            Ok(frame) => frame,
            Err(_) => {
                return Err(Some(Ending::invalid(format!(
                    "no start frame within {} s: send {{\"type\": \"start\", \"request\": {{\"argv\": [...]}}}} first",
                    window.as_secs_f32()
                ))))
            }
        };
        match client_frame(frame) {
            Frame::Message(ExecClientMessage::Start { request, tty, size }) => {
                return Ok((request, tty, size))
            }
            Frame::Message(other) => {
                return Err(Some(Ending::invalid(format!(
                    "the first frame must be `start`, not `{}`",
                    kind(&other)
                ))))
            }
            Frame::Control => {}
            Frame::Bad(ending) => return Err(Some(ending)),
            Frame::Gone => return Err(None),
        }
    }
}

/// Output to the client and the client's frames to the program until
/// either ends. `None`: the client left. While the program is behind on
/// its input (the host holds a full limit of it), no client frame is
/// read: TCP backpressure slows the client down, and output still flows;
/// pings then notice a client that left (its program is hung up).
async fn relay(
    socket: &mut WebSocket,
    exec: &mut AttachedExec,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Ending> {
    loop {
        let (room, input_room) = (exec.has_input_room(), exec.input_room());
        tokio::select! {
            event = exec.next() => {
                let event = match event {
                    Ok(Some(e)) => e,
                    Ok(None) => return Some(Ending::closed()),
                    Err(e) => return Some(Ending::after(error_event(e))),
                };
                let last = !matches!(event, LinkEvent::Output(..));
                let event = api_event(event);
                if last {
                    return Some(Ending::after(event));
                }
                if send_event(socket, &event).await.is_err() {
                    return None;
                }
            }
            () = input_room, if !room => {}
            () = tokio::time::sleep(PROBE_WHILE_HELD), if !room => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return None;
                }
            }
            frame = socket.recv(), if room => match client_frame(frame) {
                Frame::Message(msg) => {
                    if let Err(ending) = forward(exec, msg) {
                        return Some(ending);
                    }
                }
                Frame::Control => {}
                Frame::Bad(ending) => return Some(ending),
                Frame::Gone => return None,
            },
            () = shutting_down(shutdown) => return Some(Ending::shutdown()),
        }
    }
}

/// Resolves when the server shuts down (or is gone).
async fn shutting_down(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await.is_ok();
}

/// A client frame, sorted.
enum Frame {
    Message(ExecClientMessage),
    /// Ping or pong: nothing to do (pings are answered by the library).
    Control,
    /// The end for a frame the server cannot take.
    Bad(Ending),
    /// Closed, dropped or broken: the client is gone.
    Gone,
}

fn client_frame(frame: Option<Result<Message, axum::Error>>) -> Frame {
    let text = match frame {
        Some(Ok(Message::Text(text))) if text.len() > MAX_CLIENT_FRAME => {
            return Frame::Bad(Ending::too_large())
        }
        Some(Ok(Message::Text(text))) => text,
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Frame::Control,
        Some(Ok(Message::Binary(_))) => {
            return Frame::Bad(Ending::invalid(
                "binary frames are not taken: send JSON text frames (`ExecClientMessage`), stdin as base64",
            ))
        }
        Some(Err(e)) if is_too_large(&e) => return Frame::Bad(Ending::too_large()),
        Some(Ok(Message::Close(_)) | Err(_)) | None => return Frame::Gone,
    };
    match serde_json::from_str(text.as_str()) {
        Ok(msg) => Frame::Message(msg),
        Err(e) => Frame::Bad(Ending::invalid(format!(
            "a client frame is not an ExecClientMessage ({e}): see the exec WebSocket in docs/api.md"
        ))),
    }
}

/// Whether the read failed on the frame size limit. The library's error
/// type is not re-exported; its message says "Space limit exceeded".
fn is_too_large(e: &axum::Error) -> bool {
    let text = e.to_string();
    text.contains("Space limit exceeded") || text.contains("too long")
}

/// Hands one client frame to the program.
fn forward(exec: &AttachedExec, msg: ExecClientMessage) -> Result<(), Ending> {
    let sent = match msg {
        ExecClientMessage::Start { .. } => {
            return Err(Ending::invalid(
                "the exec has started already: send `start` once, as the first frame",
            ))
        }
        ExecClientMessage::Stdin { data } => {
            let bytes = hearth_agent_proto::decode_data(&data)
                .map_err(|e| Ending::invalid(format!("stdin data is not standard base64 ({e})")))?;
            exec.stdin(bytes)
        }
        ExecClientMessage::StdinEnd => exec.stdin_end(),
        ExecClientMessage::Resize { size } => exec.resize(size),
        ExecClientMessage::Signal { signal } => exec.signal(signal),
    };
    sent.map_err(|e| match e {
        ExecError::Control(hearth_control::controller::ControlError::Invalid(why)) => {
            Ending::invalid(why)
        }
        other => Ending::after(error_event(other)),
    })
}

/// The `type` of a client message, for errors.
fn kind(msg: &ExecClientMessage) -> &'static str {
    match msg {
        ExecClientMessage::Start { .. } => "start",
        ExecClientMessage::Stdin { .. } => "stdin",
        ExecClientMessage::StdinEnd => "stdin_end",
        ExecClientMessage::Resize { .. } => "resize",
        ExecClientMessage::Signal { .. } => "signal",
    }
}

async fn send_event(socket: &mut WebSocket, event: &ExecEvent) -> Result<(), axum::Error> {
    let text = serde_json::to_string(event).unwrap_or_default();
    socket.send(Message::text(text)).await
}

/// The last event (if any) and the close frame, then the client's answer
/// to it, briefly, so the close handshake completes.
async fn finish(socket: &mut WebSocket, ending: Ending) {
    if let Some(event) = &ending.event {
        if send_event(socket, event).await.is_err() {
            return;
        }
    }
    let close = CloseFrame {
        code: ending.code,
        reason: ending.reason.into(),
    };
    if socket.send(Message::Close(Some(close))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_WINDOW, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

/// The client left before the end: the program is hung up, and its
/// outcome still reaches the VM's events.
async fn hang_up(vm: &VmId, mut exec: AttachedExec) {
    tracing::info!(%vm, "exec attach: the client left before the end; the program is hung up");
    exec.hang_up();
    while let Ok(Some(_)) = exec.next().await {}
}

#[cfg(test)]
mod tests;
