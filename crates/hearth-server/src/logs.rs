//! A VM's logs: the last lines of its console or of its hypervisor's own
//! output, live or archived after it is destroyed, and the console as a
//! stream of Server-Sent Events while the VM runs.
//!
//! The stream sends one event per line, its data the line as a JSON string
//! (so empty lines and stray carriage returns survive), first the tail,
//! then each new line; it ends with `event: end` whose data says why (the
//! VM's console closed, or the server is shutting down).

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use hearth_control::controller::{ConsoleFollow, LogName};
use hearth_types::api::{ApiError, ConsoleStreamEvent, ConsoleTail};
use hearth_types::VmId;
use hearth_vmm::console::LineSplitter;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;

use crate::error::Problem;
use crate::extract::{Caller, VmPath};
use crate::{params, AppState};

/// The guest's serial console: the kernel's boot lines, `hearth: ready`,
/// the command's output. `follow=true` streams it (Server-Sent Events).
#[utoipa::path(
    get,
    path = "/v1/vms/{id}/console",
    operation_id = "vm_console",
    tag = "logs",
    params(
        ("id" = VmId, Path, description = "The VM's id"),
        ("lines" = Option<u32>, Query, description = "How many of the last lines, 1 to 10000 (default 100)", minimum = 1, maximum = 10000),
        ("follow" = Option<bool>, Query, description = "Stream the lines as they come, as Server-Sent Events"),
    ),
    responses(
        (status = 200, description = "The last lines; with `follow=true` a `text/event-stream`: one event per line (data: the line as a JSON string), then `event: end` (data: `{\"reason\": ...}`); the schema is one event's",
            content((ConsoleTail = "application/json"), (ConsoleStreamEvent = "text/event-stream"))),
        (status = 400, description = "`invalid_id`, `invalid_lines` or `invalid_request`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn console(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let q = params::log_query(query.as_deref(), true)?;
    let ctl = &state.controller;
    if !q.follow {
        let tail = ctl.log_tail(&scope, &id, LogName::Console, q.lines).await?;
        return Ok(Json(tail).into_response());
    }
    let follow = ctl
        .log_follow(&scope, &id, LogName::Console, q.lines)
        .await?;
    Ok(sse(follow, state.shutdown.subscribe()).into_response())
}

/// The hypervisor's own output (QEMU's or Firecracker's stderr): why it
/// refused to start, or what it said when it ended.
#[utoipa::path(
    get,
    path = "/v1/vms/{id}/logs/hypervisor",
    operation_id = "vm_hypervisor_log",
    tag = "logs",
    params(
        ("id" = VmId, Path, description = "The VM's id"),
        ("lines" = Option<u32>, Query, description = "How many of the last lines, 1 to 10000 (default 100)", minimum = 1, maximum = 10000),
    ),
    responses(
        (status = 200, description = "The last lines", body = ConsoleTail),
        (status = 400, description = "`invalid_id`, `invalid_lines` or `invalid_request`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn hypervisor(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
    RawQuery(query): RawQuery,
) -> Result<Json<ConsoleTail>, Problem> {
    let q = params::log_query(query.as_deref(), false)?;
    let tail = state
        .controller
        .log_tail(&scope, &id, LogName::Hypervisor, q.lines)
        .await?;
    Ok(Json(tail))
}

fn sse(
    follow: ConsoleFollow,
    shutdown: watch::Receiver<bool>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let head = stream::iter(follow.tail.lines).map(|l| Ok(line_event(&l)));
    let live = Live {
        console: follow.stream,
        lines: LineSplitter::default(),
        queue: VecDeque::new(),
        shutdown,
        ended: false,
    };
    let rest = stream::unfold(live, |mut live| async move {
        live.next_event().await.map(|e| (Ok(e), live))
    });
    Sse::new(head.chain(rest)).keep_alive(KeepAlive::default())
}

fn line_event(line: &str) -> Event {
    Event::default().data(serde_json::Value::from(line).to_string())
}

/// The live part of a console stream.
struct Live {
    /// None: the VM does not run; only the end is left to send.
    console: Option<broadcast::Receiver<Bytes>>,
    lines: LineSplitter,
    queue: VecDeque<Event>,
    shutdown: watch::Receiver<bool>,
    ended: bool,
}

impl Live {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            self.fill().await;
        }
    }

    /// Waits for the next chunk of console, or the end.
    async fn fill(&mut self) {
        let Some(console) = self.console.as_mut() else {
            return self.end("the VM is not running");
        };
        let mut shutdown = self.shutdown.clone();
        let stopping = async move {
            // An error means the server is gone: that ends the stream too.
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        tokio::select! {
            chunk = console.recv() => match chunk {
                Ok(bytes) => {
                    let events = self.lines.push(&bytes).into_iter().map(|l| line_event(&l));
                    self.queue.extend(events);
                }
                Err(RecvError::Lagged(n)) => {
                    let data = format!("{n} chunks of console were skipped: this reader was too slow");
                    self.queue.push_back(Event::default().event("lagged").data(data));
                }
                Err(RecvError::Closed) => {
                    if let Some(last) = self.lines.finish() {
                        self.queue.push_back(line_event(&last));
                    }
                    self.end("the VM's console closed");
                }
            },
            () = stopping => self.end("the server is shutting down"),
        }
    }

    fn end(&mut self, reason: &str) {
        let data = serde_json::json!({ "reason": reason }).to_string();
        self.queue
            .push_back(Event::default().event("end").data(data));
        self.ended = true;
    }
}
