//! The routes of the controller hearth replaces, for callers that cannot
//! change yet: `GET /health`, `POST /api/auth/start {userId, provider}` (a
//! login session, answered with the fields its callers read, in its
//! camelCase) and `GET /api/vm/{vmId}/console-log?lines=N` (the console's
//! last lines; `lines` is a plain number or a 400, never part of a
//! command). They are thin: each is a `/v1` call with the same token,
//! tenant rules and errors.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use hearth_control::controller::LogName;
use hearth_types::session::{SessionState, StartSession};
use hearth_types::{ProviderId, SessionId, UserName, VmId};
use serde::{Deserialize, Serialize};

use crate::error::Problem;
use crate::extract::{Caller, JsonBody, VmPath};
use crate::{params, sessions, AppState};

/// The old controller's liveness answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LegacyHealth {
    /// `ok` when the server answers.
    status: &'static str,
}

/// Liveness, as the old controller answered it; no token needed.
#[utoipa::path(
    get,
    path = "/health",
    tag = "legacy",
    responses((status = 200, description = "The server is up", body = LegacyHealth))
)]
pub(crate) async fn health() -> Json<LegacyHealth> {
    Json(LegacyHealth { status: "ok" })
}

/// `POST /api/auth/start`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct AuthStart {
    /// The user, as in `/v1/sessions`' `user`.
    #[schema(value_type = String)]
    user_id: UserName,
    #[schema(value_type = String)]
    provider: ProviderId,
}

/// What the old controller's callers read of a started session.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuthStarted {
    #[schema(value_type = String)]
    session_id: SessionId,
    #[schema(value_type = String)]
    vm_id: VmId,
    status: SessionState,
    /// Open it to log in (in place of the old VM IP and WebRTC stream).
    viewer_url: String,
    /// `GET` it for the session's progress.
    session_url: String,
}

/// Starts a login session, as `POST /v1/sessions` does.
#[utoipa::path(
    post,
    path = "/api/auth/start",
    operation_id = "legacy_auth_start",
    tag = "legacy",
    request_body = AuthStart,
    responses(
        (status = 201, description = "The session started", body = AuthStarted),
        (status = 400, description = "`invalid_request` (naming the field), `unknown_provider`", body = hearth_types::api::ApiError),
        (status = 401, description = "`unauthorized`", body = hearth_types::api::ApiError),
        (status = 409, description = "`session_live`", body = hearth_types::api::ApiError),
        (status = 429, description = "`rate_limited`", body = hearth_types::api::ApiError),
        (status = 503, description = "`sessions_disabled`", body = hearth_types::api::ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn auth_start(
    State(state): State<AppState>,
    Caller(scope): Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<AuthStart>,
) -> Result<(axum::http::StatusCode, Json<AuthStarted>), Problem> {
    let start = StartSession {
        user: body.user_id,
        provider: body.provider,
        ttl_secs: None,
    };
    let session = sessions::start_with_viewer(&state, &scope, &headers, &start).await?;
    let viewer_url = session
        .viewer
        .as_ref()
        .and_then(|v| v.url.clone())
        .unwrap_or_default();
    let started = AuthStarted {
        session_url: format!("/v1/sessions/{}", session.id),
        session_id: session.id,
        vm_id: session
            .vm
            .unwrap_or_else(|| "vm-unknown".parse().expect("a valid id")),
        status: session.state,
        viewer_url,
    };
    Ok((axum::http::StatusCode::CREATED, Json(started)))
}

/// The console's last lines.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConsoleLog {
    #[schema(value_type = String)]
    vm_id: VmId,
    lines: Vec<String>,
}

/// The VM's console, as `GET /v1/vms/{id}/console?lines=N` gives it.
#[utoipa::path(
    get,
    path = "/api/vm/{vmId}/console-log",
    operation_id = "legacy_console_log",
    tag = "legacy",
    params(
        ("vmId" = String, Path, description = "The VM's id"),
        ("lines" = Option<u32>, Query, description = "How many of the last lines, 1 to 10000 (default 100): digits only", minimum = 1, maximum = 10000),
    ),
    responses(
        (status = 200, description = "The last lines", body = ConsoleLog),
        (status = 400, description = "`invalid_id`, `invalid_lines` or `invalid_request`", body = hearth_types::api::ApiError),
        (status = 401, description = "`unauthorized`", body = hearth_types::api::ApiError),
        (status = 404, description = "`not_found`", body = hearth_types::api::ApiError),
        (status = 429, description = "`rate_limited`", body = hearth_types::api::ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn console_log(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
    RawQuery(query): RawQuery,
) -> Result<Json<ConsoleLog>, Problem> {
    let q = params::log_query(query.as_deref(), false)?;
    let tail = state
        .controller
        .log_tail(&scope, &id, LogName::Console, q.lines)
        .await?;
    Ok(Json(ConsoleLog {
        vm_id: id,
        lines: tail.lines,
    }))
}
