//! `/v1/sessions` and `/v1/providers`: login sessions. A session starts a
//! browser VM in the caller's tenant for one of its users and answers with
//! a viewer link (its key in this answer only); the person logs in there,
//! and hearth seals the credential. Sessions of other tenants answer
//! `404 not_found` like their VMs.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use hearth_control::controller::Scope;
use hearth_sessions::{SessionError, Sessions};
use hearth_types::api::ApiError;
use hearth_types::session::{EgressConnection, ProviderInfo, Session, SessionEvent, StartSession};
use hearth_types::SessionId;

use crate::error::Problem;
use crate::extract::{Caller, JsonBody};
use crate::{viewer_links, AppState};

/// Starts a login session: its browser VM boots, and the answer carries
/// the viewer link the person opens to log in.
#[utoipa::path(
    post,
    path = "/v1/sessions",
    operation_id = "start_session",
    tag = "sessions",
    request_body = StartSession,
    responses(
        (status = 201, description = "The session, `starting`, with its viewer link", body = Session),
        (status = 400, description = "`invalid_request` (naming the field), `unknown_provider`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 409, description = "`session_live`: the user has a live session for the provider", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
        (status = 503, description = "`sessions_disabled`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn start(
    State(state): State<AppState>,
    Caller(scope): Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<StartSession>,
) -> Result<(StatusCode, Json<Session>), Problem> {
    let session = start_with_viewer(&state, &scope, &headers, &body).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

/// A session started, with a viewer link to its VM that lives as long as
/// the session may.
pub(crate) async fn start_with_viewer(
    state: &AppState,
    scope: &Scope,
    headers: &HeaderMap,
    body: &StartSession,
) -> Result<Session, Problem> {
    let sessions = enabled(state)?;
    let record = sessions.start(&scope.tenant, body).await.map_err(problem)?;
    let vm = record
        .vm
        .clone()
        .ok_or_else(|| Problem::internal(&std::io::Error::other("a started session has no VM")))?;
    let ttl = record.expires_at.since(hearth_types::Timestamp::now());
    let ttl = ttl.max(std::time::Duration::from_secs(1));
    let link = viewer_links::make(state, headers, vm, record.tenant.clone(), ttl).await?;
    tracing::info!(session = %record.id, user = %record.user, provider = %record.provider, "session started");
    let mut session = sessions.get(scope, &record.id).await.map_err(problem)?;
    session.viewer = Some(link);
    Ok(session)
}

/// One session, with the last lines its login command printed.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}",
    operation_id = "get_session",
    tag = "sessions",
    params(("id" = String, Path, description = "The session's id, `ses-` and 12 hex digits")),
    responses(
        (status = 200, description = "The session", body = Session),
        (status = 400, description = "`invalid_id`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
        (status = 503, description = "`sessions_disabled`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Session>, Problem> {
    let id = session_id(path)?;
    let session = enabled(&state)?.get(&scope, &id).await.map_err(problem)?;
    Ok(Json(session))
}

/// The caller's tenant's sessions (an admin's: all), newest first.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    operation_id = "list_sessions",
    tag = "sessions",
    responses(
        (status = 200, description = "The sessions", body = [Session]),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
        (status = 503, description = "`sessions_disabled`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(scope): Caller,
) -> Result<Json<Vec<Session>>, Problem> {
    let sessions = enabled(&state)?.list(&scope).await.map_err(problem)?;
    Ok(Json(sessions))
}

/// Cancels a live session: it ends `cancelled` and its VM is destroyed.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/cancel",
    operation_id = "cancel_session",
    tag = "sessions",
    params(("id" = String, Path, description = "The session's id")),
    responses(
        (status = 200, description = "The session, cancelled", body = Session),
        (status = 400, description = "`invalid_id`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 409, description = "`session_ended`: it had ended already", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
        (status = 503, description = "`sessions_disabled`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Session>, Problem> {
    let id = session_id(path)?;
    let session = enabled(&state)?
        .cancel(&scope, &id)
        .await
        .map_err(problem)?;
    tracing::info!(session = %id, "session cancelled");
    Ok(Json(session))
}

/// The session's transitions and notes, in order.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/events",
    operation_id = "session_events",
    tag = "sessions",
    params(("id" = String, Path, description = "The session's id")),
    responses(
        (status = 200, description = "The events", body = [SessionEvent]),
        (status = 400, description = "`invalid_id`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
        (status = 503, description = "`sessions_disabled`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn events(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Vec<SessionEvent>>, Problem> {
    let id = session_id(path)?;
    let events = enabled(&state)?
        .events(&scope, &id)
        .await
        .map_err(problem)?;
    Ok(Json(events))
}

/// Where the session's VM connected through the egress proxy: host, port,
/// allowed or denied, bytes; never contents.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/egress",
    operation_id = "session_egress",
    tag = "sessions",
    params(("id" = String, Path, description = "The session's id")),
    responses(
        (status = 200, description = "The connections, in order", body = [EgressConnection]),
        (status = 400, description = "`invalid_id`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
        (status = 503, description = "`sessions_disabled`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn egress(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Vec<EgressConnection>>, Problem> {
    let id = session_id(path)?;
    let connections = enabled(&state)?
        .egress(&scope, &id)
        .await
        .map_err(problem)?;
    Ok(Json(connections))
}

/// The providers this server offers sessions for.
#[utoipa::path(
    get,
    path = "/v1/providers",
    operation_id = "list_providers",
    tag = "sessions",
    responses(
        (status = 200, description = "The providers, by name", body = [ProviderInfo]),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
        (status = 503, description = "`sessions_disabled`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn providers(
    State(state): State<AppState>,
    Caller(_): Caller,
) -> Result<Json<Vec<ProviderInfo>>, Problem> {
    let catalogue = enabled(&state)?.catalogue();
    Ok(Json(catalogue.list().map(|p| p.info()).collect()))
}

pub(crate) fn enabled(state: &AppState) -> Result<&Sessions, Problem> {
    state.sessions.as_ref().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sessions_disabled",
            "this server runs without login sessions (it was started without a vault): start it with `hearth serve`",
        )
    })
}

fn session_id(path: Result<Path<String>, PathRejection>) -> Result<SessionId, Problem> {
    let Path(raw) = path.map_err(|e| {
        Problem::bad_request(
            "invalid_id",
            format!(
                "the session id in the path is unreadable ({})",
                e.body_text()
            ),
        )
    })?;
    raw.parse()
        .map_err(|e: hearth_types::session::SessionIdError| {
            Problem::bad_request("invalid_id", e.to_string())
        })
}

pub(crate) fn problem(e: SessionError) -> Problem {
    let message = e.to_string();
    match e {
        SessionError::NotFound(_) => Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{message}: `GET /v1/sessions` lists the sessions you can see"),
        ),
        SessionError::CliNotFound(_) => Problem::new(StatusCode::NOT_FOUND, "not_found", message),
        SessionError::UnknownProvider { .. } => Problem::bad_request("unknown_provider", message),
        SessionError::Invalid(_) => Problem::bad_request("invalid_request", message),
        SessionError::AlreadyLive { .. } => {
            Problem::new(StatusCode::CONFLICT, "session_live", message)
        }
        SessionError::Ended { .. } => Problem::new(StatusCode::CONFLICT, "session_ended", message),
        SessionError::Vm(e) => {
            let mut p = Problem::from(e);
            p.message = format!(
                "the session's browser VM could not be created: {}",
                p.message
            );
            p
        }
        SessionError::Store(e) => Problem::internal(&e),
    }
}
