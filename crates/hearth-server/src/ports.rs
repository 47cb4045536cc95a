//! `GET /v1/vms/{id}/ports/{port}`: a TCP stream to a port on the VM's
//! loopback, carried by its agent, as a WebSocket of binary frames. What
//! `hearth vm port-forward` and the viewer ride on. Everything that can
//! fail before the first byte (the token, the tenant, the VM's state, the
//! agent's connect: "nothing listens there") is answered before the
//! upgrade, as an ordinary HTTP error.
//!
//! Frames: binary frames carry the stream's bytes both ways. An empty
//! binary frame is a half-close: from the client, "I will send no more"
//! (the guest end's write side shuts); from the server, the guest end sent
//! all it will. The server closes with 1000 once both ends are done, 1011
//! naming what broke the stream otherwise. A text frame is refused (1003).
//! The `binary` subprotocol is answered when offered (websockify's
//! convention, which VNC clients in browsers expect). Nothing of the bytes
//! is logged.

use std::future::Future;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use hearth_control::agent_link::{PortEvent, PortStream};
use hearth_control::controller::PortForwardError;
use hearth_types::api::ApiError;
use hearth_types::VmId;
use tokio::sync::watch;

use crate::error::Problem;
use crate::extract::Caller;
use crate::{params, AppState};

/// The largest client frame read (the server's own frames are at most
/// one agent chunk, 64 KiB).
const MAX_CLIENT_FRAME: usize = 1 << 20;
/// How long the server waits for the client's answer to its close frame.
const CLOSE_WINDOW: Duration = Duration::from_secs(2);

/// Opens a TCP stream to `port` on the VM's loopback, over a WebSocket.
///
/// Binary frames carry the bytes both ways; an empty binary frame is a
/// half-close (no more from that side). The server closes with 1000 when
/// both ends are done, 1011 with the reason when the stream broke, 1003
/// after a text frame. Offered the `binary` subprotocol, it answers it.
#[utoipa::path(
    get,
    path = "/v1/vms/{id}/ports/{port}",
    operation_id = "forward_port",
    tag = "vms",
    params(
        ("id" = VmId, Path, description = "The VM's id"),
        ("port" = u16, Path, description = "A TCP port on the VM's loopback, 1 to 65535", minimum = 1, maximum = 65535),
    ),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol: binary frames carry the stream"),
        (status = 400, description = "`invalid_id`, `invalid_port`, or `not_a_websocket`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 409, description = "`invalid_state`: the VM is not ready; `no_agent_channel`; `agent_too_old`: the VM's agent predates port forwarding (rebuild the image)", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
        (status = 502, description = "`port_refused`: nothing listens on that port in the VM; `agent_unavailable`: the guest agent is not connected", body = ApiError),
        (status = 504, description = "`agent_timeout`: the agent did not answer the connect", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn forward(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Problem> {
    let (id, port) = vm_and_port(path)?;
    let upgrade = upgrade.map_err(|e| {
        Problem::bad_request(
            "not_a_websocket",
            format!("{e}: this route is a WebSocket; connect with `Upgrade: websocket` (`hearth vm port-forward` does)"),
        )
    })?;
    let stream = state.controller.open_port(&scope, &id, port).await?;
    tracing::debug!(vm = %id, port, "port stream opened");
    let stop = shutting_down(state.shutdown.subscribe());
    Ok(upgrade_to_stream(upgrade, stream, stop))
}

/// The upgrade that relays `stream` until both ends are done, or `stop`
/// resolves with the close code and reason to end it with.
pub(crate) fn upgrade_to_stream(
    upgrade: WebSocketUpgrade,
    stream: PortStream,
    stop: impl Future<Output = (u16, String)> + Send + 'static,
) -> Response {
    upgrade
        .protocols(["binary"])
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| serve(socket, stream, stop))
}

/// Resolves when the server shuts down.
pub(crate) async fn shutting_down(mut shutdown: watch::Receiver<bool>) -> (u16, String) {
    let _ = shutdown.wait_for(|s| *s).await;
    (close_code::AWAY, "the server is shutting down".into())
}

/// The VM id and port of the path.
fn vm_and_port(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(VmId, u16), Problem> {
    let Path((raw_id, raw_port)) = path.map_err(|e| {
        Problem::bad_request(
            "invalid_request",
            format!(
                "the path is unreadable ({}): use /v1/vms/ID/ports/PORT",
                e.body_text()
            ),
        )
    })?;
    let id = params::vm_id(&raw_id)?;
    let port = parse_port(&raw_port).map_err(|why| Problem::bad_request("invalid_port", why))?;
    Ok((id, port))
}

/// A TCP port from 1 to 65535, in plain digits.
pub(crate) fn parse_port(raw: &str) -> Result<u16, String> {
    let plain = !raw.is_empty() && raw.len() <= 5 && raw.bytes().all(|b| b.is_ascii_digit());
    match raw.parse::<u16>() {
        Ok(port) if plain && port > 0 => Ok(port),
        _ => Err(format!(
            "{:?} is not a TCP port: give a number from 1 to 65535",
            truncated(raw)
        )),
    }
}

fn truncated(raw: &str) -> String {
    raw.chars().take(40).collect()
}

impl From<PortForwardError> for Problem {
    fn from(e: PortForwardError) -> Self {
        let message = e.to_string();
        match e {
            PortForwardError::Vm(e) => Problem::from(e),
            PortForwardError::BadPort => Problem::bad_request("invalid_port", message),
            PortForwardError::Refused { .. } => {
                Problem::new(StatusCode::BAD_GATEWAY, "port_refused", message)
            }
            PortForwardError::AgentTooOld { .. } => {
                Problem::new(StatusCode::CONFLICT, "agent_too_old", message)
            }
            PortForwardError::NoAnswer { .. } => {
                Problem::new(StatusCode::GATEWAY_TIMEOUT, "agent_timeout", message)
            }
            PortForwardError::Lost { .. } => {
                Problem::new(StatusCode::BAD_GATEWAY, "agent_unavailable", message)
            }
        }
    }
}

/// How a relay ended: the close frame to send, if any.
type Ending = Option<(u16, String)>;

/// Relays until both ends are done, then closes. A client that leaves
/// aborts the stream.
async fn serve(
    mut socket: WebSocket,
    stream: PortStream,
    stop: impl Future<Output = (u16, String)> + Send,
) {
    let writer = stream.writer.clone();
    let ending = relay(&mut socket, stream, stop).await;
    let _ = writer.close();
    if let Some((code, reason)) = ending {
        let frame = CloseFrame {
            code,
            reason: short_reason(&reason).into(),
        };
        if socket.send(Message::Close(Some(frame))).await.is_ok() {
            // The client's answer, briefly, so it reads the reason.
            let _ = tokio::time::timeout(CLOSE_WINDOW, socket.recv()).await;
        }
    }
}

async fn relay(
    socket: &mut WebSocket,
    stream: PortStream,
    stop: impl Future<Output = (u16, String)> + Send,
) -> Ending {
    let PortStream { mut events, writer } = stream;
    let mut reading = true;
    let mut stop = std::pin::pin!(stop);
    loop {
        let room = writer.has_room();
        tokio::select! {
            ending = &mut stop => return Some(ending),
            () = writer.room(), if reading && !room => {}
            frame = socket.recv(), if reading && room => match frame {
                Some(Ok(Message::Binary(bytes))) if bytes.is_empty() => {
                    reading = false;
                    if writer.end().is_err() {
                        return Some(lost());
                    }
                }
                Some(Ok(Message::Binary(bytes))) => {
                    if writer.send(bytes.to_vec()).is_err() {
                        return Some(lost());
                    }
                }
                Some(Ok(Message::Text(_))) => {
                    let why = "text frame: the stream's bytes go in binary frames";
                    return Some((close_code::UNSUPPORTED, why.into()));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
            },
            event = events.recv() => match event {
                Some(PortEvent::Data(bytes)) => {
                    let len = bytes.len() as u64;
                    if socket.send(Message::Binary(bytes.into())).await.is_err() {
                        return None;
                    }
                    if writer.consumed(len).is_err() {
                        return Some(lost());
                    }
                }
                Some(PortEvent::End) => {
                    if socket.send(Message::Binary(Default::default())).await.is_err() {
                        return None;
                    }
                }
                Some(PortEvent::Closed(None)) => {
                    return Some((close_code::NORMAL, "the stream ended".into()));
                }
                Some(PortEvent::Closed(Some(why))) => return Some((close_code::ERROR, why)),
                Some(PortEvent::Lost) | None => return Some(lost()),
            },
        }
    }
}

fn lost() -> (u16, String) {
    (
        close_code::ERROR,
        "the channel to the VM's agent dropped".into(),
    )
}

/// A close frame's reason is at most 123 bytes.
fn short_reason(reason: &str) -> String {
    let mut out = String::new();
    for c in reason.chars() {
        if out.len() + c.len_utf8() > 123 {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_plain_digits_from_1_to_65535() {
        assert_eq!(parse_port("8080"), Ok(8080));
        assert_eq!(parse_port("65535"), Ok(65535));
        for bad in [
            "0", "65536", "-1", "+80", " 80", "80a", "", "0x50", "000080",
        ] {
            let err = parse_port(bad).unwrap_err();
            assert!(err.contains("1 to 65535"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_refused_port_is_a_bad_gateway_naming_the_fix() {
        let vm: VmId = "vm-000000000001".parse().unwrap();
        let why = "nothing listens on port 9 in the guest".to_owned();
        let p = Problem::from(PortForwardError::Refused { vm, why });
        assert_eq!(
            (p.status, p.code),
            (StatusCode::BAD_GATEWAY, "port_refused")
        );
        assert!(
            p.message.contains("nothing listens on port 9"),
            "{}",
            p.message
        );
        assert!(p.message.contains("netstat"), "{}", p.message);
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let long = "é".repeat(100);
        assert!(short_reason(&long).len() <= 123);
        assert_eq!(short_reason("short"), "short");
    }
}
