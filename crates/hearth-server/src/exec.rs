//! `POST /v1/vms/{id}/exec`: run a command in a ready VM through its guest
//! agent and answer with its exit and output.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hearth_control::agent::AgentError;
use hearth_control::controller::ExecError;
use hearth_types::api::{ApiError, ExecRequest, ExecResult};
use hearth_types::VmId;

use crate::error::Problem;
use crate::extract::{Caller, JsonBody, VmPath};
use crate::AppState;

/// Runs a program in a ready VM through its guest agent and waits for it.
///
/// `argv` runs directly, never through a shell (send `["sh", "-c", "..."]`
/// for one), with empty stdin, for at most `timeout_secs` (default 60, at
/// most 3600); past it the program's process group is killed (`signal` 9,
/// `timed_out`). Each stream keeps its first 1 MiB (`truncated` beyond).
/// A program that cannot be started (not found, not executable) is still a
/// 200: `exit_code` and `signal` are null and `stderr` says why. Only the
/// program's name is recorded in the VM's events, never its arguments.
#[utoipa::path(
    post,
    path = "/v1/vms/{id}/exec",
    operation_id = "exec_vm",
    tag = "vms",
    params(("id" = VmId, Path, description = "The VM's id")),
    request_body = ExecRequest,
    responses(
        (status = 200, description = "The program ran (or could not be started: see `stderr`)", body = ExecResult),
        (status = 400, description = "`invalid_id`, `invalid_json` or `invalid_request` (empty argv, unknown field, timeout out of range)", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 409, description = "`invalid_state`: the VM is not ready; `no_agent_channel`: a Firecracker VM", body = ApiError),
        (status = 413, description = "`body_too_large`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
        (status = 502, description = "`agent_unavailable`: the guest agent could not be reached or broke off", body = ApiError),
        (status = 504, description = "`agent_timeout`: the agent did not report the end within the timeout plus 5 s", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn exec(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
    JsonBody(request): JsonBody<ExecRequest>,
) -> Result<Json<ExecResult>, Problem> {
    Ok(Json(state.controller.exec(&scope, &id, request).await?))
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
            ExecError::Agent(AgentError::Deadline { .. }) => {
                Problem::new(StatusCode::GATEWAY_TIMEOUT, "agent_timeout", message)
            }
            ExecError::Agent(ref inner) => {
                tracing::warn!(error = %hearth_types::error_chain(inner), "exec: agent unavailable");
                Problem::new(StatusCode::BAD_GATEWAY, "agent_unavailable", message)
            }
        }
    }
}
