//! `POST /v1/vms/{id}/exec`: run a command in a ready VM through the VM's
//! persistent agent link, and answer with its exit and output, or, with
//! `?stream=true`, stream them as newline-delimited JSON.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream;
use hearth_control::agent_link::ExecEvent as LinkEvent;
use hearth_control::controller::{ExecError, ExecStream};
use hearth_types::api::{ApiError, ExecEvent, ExecRequest, ExecResult};
use hearth_types::VmId;

use crate::error::Problem;
use crate::extract::{Caller, JsonBody, VmPath};
use crate::{params, AppState};

/// Runs a program in a ready VM through its guest agent.
///
/// `argv` runs directly, never through a shell (send `["sh", "-c", "..."]`
/// for one), with empty stdin and `env` added to the VM's environment
/// (`GET .../exec/attach` is the interactive form, with stdin, a terminal
/// size and signals), for at most `timeout_secs` (default 60, at
/// most 3600); past it the program's process group is killed (`signal` 9,
/// `timed_out`). Each stream keeps its first 1 MiB (`truncated` beyond).
/// A program that cannot be started (not found, not executable) is still a
/// 200: `exit_code` and `signal` are null and `stderr` says why. Only the
/// program's name is recorded in the VM's events, never its arguments.
///
/// With `stream=true` the answer is `application/x-ndjson`: one
/// `ExecEvent` per line, output as it is printed (base64), then `exit` or
/// `error`. `tty=true` (with `stream`) runs it on a pseudo-terminal.
#[utoipa::path(
    post,
    path = "/v1/vms/{id}/exec",
    operation_id = "exec_vm",
    tag = "vms",
    params(
        ("id" = VmId, Path, description = "The VM's id"),
        ("stream" = Option<bool>, Query, description = "Stream newline-delimited `ExecEvent`s"),
        ("tty" = Option<bool>, Query, description = "Run on a pseudo-terminal (stdout and stderr merged); needs `stream=true`"),
    ),
    request_body = ExecRequest,
    responses(
        (status = 200, description = "The program ran (or could not be started: see `stderr`); with `stream=true`, `ExecEvent`s, one per line",
            content((ExecResult = "application/json"), (ExecEvent = "application/x-ndjson"))),
        (status = 400, description = "`invalid_id`, `invalid_json` or `invalid_request` (empty argv, unknown field, timeout out of range)", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 409, description = "`invalid_state`: the VM is not ready; `no_agent_channel`: a Firecracker VM", body = ApiError),
        (status = 413, description = "`body_too_large`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
        (status = 502, description = "`agent_unavailable`: the guest agent is not connected or broke off", body = ApiError),
        (status = 504, description = "`agent_timeout`: the agent did not report the end within the timeout plus 5 s", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn exec(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
    RawQuery(query): RawQuery,
    JsonBody(request): JsonBody<ExecRequest>,
) -> Result<Response, Problem> {
    let q = params::query_pairs(query.as_deref(), &["stream", "tty"])?;
    let (streamed, tty) = (params::flag(&q, "stream")?, params::flag(&q, "tty")?);
    if tty && !streamed {
        return Err(Problem::bad_request(
            "invalid_request",
            "tty=true needs stream=true: a terminal's output is only useful as it comes",
        ));
    }
    let ctl = &state.controller;
    if !streamed {
        let result: ExecResult = ctl.exec(&scope, &id, request).await?;
        return Ok(Json(result).into_response());
    }
    let exec = ctl.exec_stream(&scope, &id, request, tty).await?;
    let lines = stream::unfold(Some(exec), |exec| async move {
        let mut exec: ExecStream = exec?;
        let (event, more) = match exec.next().await {
            Ok(Some(e)) => (api_event(e), true),
            Ok(None) => return None,
            Err(e) => (error_event(e), false),
        };
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        let next = more.then_some(exec);
        Some((Ok::<_, std::convert::Infallible>(line), next))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

pub(crate) fn api_event(e: LinkEvent) -> ExecEvent {
    match e {
        LinkEvent::Output(stream, bytes) => ExecEvent::Output {
            stream,
            data: hearth_agent_proto::encode_data(&bytes),
        },
        LinkEvent::Exit {
            code,
            signal,
            timed_out,
        } => ExecEvent::Exit {
            exit_code: code,
            signal,
            timed_out,
        },
        LinkEvent::Error(message) => ExecEvent::Error {
            code: "not_started".into(),
            message: format!("hearth-agent: {message}"),
        },
        LinkEvent::Lost => ExecEvent::Error {
            code: "agent_unavailable".into(),
            message: "the agent hung up before the command ended".into(),
        },
    }
}

pub(crate) fn error_event(e: ExecError) -> ExecEvent {
    let p = Problem::from(e);
    ExecEvent::Error {
        code: p.code.into(),
        message: p.message,
    }
}

impl From<ExecError> for Problem {
    fn from(e: ExecError) -> Self {
        let message = e.to_string();
        match e {
            ExecError::Control(e) => Problem::from(e),
            ExecError::NotReady { .. } => {
                Problem::new(StatusCode::CONFLICT, "invalid_state", message)
            }
            ExecError::NoChannel(_) => {
                Problem::new(StatusCode::CONFLICT, "no_agent_channel", message)
            }
            ExecError::AgentTooOld { .. } => {
                Problem::new(StatusCode::CONFLICT, "agent_too_old", message)
            }
            ExecError::Deadline { .. } => {
                Problem::new(StatusCode::GATEWAY_TIMEOUT, "agent_timeout", message)
            }
            ExecError::Unreachable { .. } | ExecError::Lost { .. } => {
                tracing::warn!(error = %message, "exec: agent unavailable");
                Problem::new(StatusCode::BAD_GATEWAY, "agent_unavailable", message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_too_old_is_a_conflict_that_names_the_fix() {
        let vm: VmId = "vm-000000000001".parse().unwrap();
        let p = Problem::from(ExecError::AgentTooOld { vm, protocol: 2 });
        assert_eq!((p.status, p.code), (StatusCode::CONFLICT, "agent_too_old"));
        assert!(p.message.contains("protocol 2"), "{}", p.message);
        assert!(
            p.message.contains("hearth image build --force"),
            "{}",
            p.message
        );
        let event = error_event(ExecError::Lost {
            vm: "vm-000000000001".parse().unwrap(),
        });
        assert!(matches!(event, ExecEvent::Error { code, .. } if code == "agent_unavailable"));
    }
}
