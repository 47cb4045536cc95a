//! `/v1/cli/{user}`: each user's CLI VM, in the token's tenant. One per
//! tenant and user; another tenant's user of the same name is another
//! user, and a user without one answers `404 not_found`. The answers name
//! credential versions, never their content.

use std::collections::BTreeMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hearth_sessions::cli::CliVmInfo;
use hearth_sessions::SessionError;
use hearth_types::api::ApiError;
use hearth_types::{TenantId, Timestamp, UserName, VmId, VmState};
use serde::{Deserialize, Serialize};

use crate::credentials::user_name;
use crate::error::Problem;
use crate::extract::{Caller, JsonBody};
use crate::sessions::{enabled, problem};
use crate::AppState;

/// What `POST /v1/cli/{user}` takes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartCli {
    /// The image the CLI VM boots; default `cli`.
    #[serde(default)]
    pub image: Option<String>,
}

/// A user's CLI VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CliVm {
    pub tenant: TenantId,
    pub user: UserName,
    /// The VM (`/v1/vms/{id}`: its state, events, exec, logs).
    pub vm: VmId,
    pub image: String,
    pub state: VmState,
    pub created_at: Timestamp,
    /// Per provider, the credential version the VM's files are at.
    pub credentials: BTreeMap<String, u64>,
}

impl From<CliVmInfo> for CliVm {
    fn from(i: CliVmInfo) -> Self {
        CliVm {
            tenant: i.tenant,
            user: i.user,
            vm: i.vm,
            image: i.image,
            state: i.state,
            created_at: i.created_at,
            credentials: i
                .credentials
                .into_iter()
                .map(|(p, v)| (p.to_string(), v))
                .collect(),
        }
    }
}

/// Starts the user's CLI VM, or answers the one it has.
#[utoipa::path(
    post,
    path = "/v1/cli/{user}",
    operation_id = "start_cli_vm",
    tag = "cli",
    params(("user" = String, Path, description = "The user, a name inside the token's tenant")),
    request_body = StartCli,
    responses(
        (status = 201, description = "Started: its credentials are written in once its agent is up", body = CliVm),
        (status = 200, description = "The user's CLI VM was running already", body = CliVm),
        (status = 400, description = "`invalid_user`, `invalid_request`, a missing image", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 503, description = "`sessions_disabled`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn start(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<StartCli>,
) -> Result<(StatusCode, Json<CliVm>), Problem> {
    let user = user_of(path)?;
    let sessions = enabled(&state)?;
    let started = sessions.start_cli(&scope.tenant, &user, body.image.as_deref());
    let (info, new) = started.await.map_err(cli_problem)?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info.into())))
}

/// The user's CLI VM.
#[utoipa::path(
    get,
    path = "/v1/cli/{user}",
    operation_id = "get_cli_vm",
    tag = "cli",
    params(("user" = String, Path, description = "The user, a name inside the token's tenant")),
    responses(
        (status = 200, description = "The CLI VM", body = CliVm),
        (status = 400, description = "`invalid_user`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`: the user has none", body = ApiError),
        (status = 503, description = "`sessions_disabled`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<CliVm>, Problem> {
    let user = user_of(path)?;
    let info = enabled(&state)?.cli(&scope.tenant, &user).await;
    Ok(Json(info.map_err(cli_problem)?.into()))
}

/// Stops the user's CLI VM. Until VMs can be persistent, a stop destroys
/// it: the next start boots a new one with the current credentials.
#[utoipa::path(
    post,
    path = "/v1/cli/{user}/stop",
    operation_id = "stop_cli_vm",
    tag = "cli",
    params(("user" = String, Path, description = "The user, a name inside the token's tenant")),
    responses(
        (status = 200, description = "The CLI VM, going", body = CliVm),
        (status = 400, description = "`invalid_user`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`: the user has none", body = ApiError),
        (status = 503, description = "`sessions_disabled`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn stop(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<CliVm>, Problem> {
    let user = user_of(path)?;
    let info = enabled(&state)?.stop_cli(&scope.tenant, &user).await;
    Ok(Json(info.map_err(cli_problem)?.into()))
}

/// Destroys the user's CLI VM (its logs archived first) and forgets it.
#[utoipa::path(
    delete,
    path = "/v1/cli/{user}",
    operation_id = "delete_cli_vm",
    tag = "cli",
    params(("user" = String, Path, description = "The user, a name inside the token's tenant")),
    responses(
        (status = 200, description = "The CLI VM, going", body = CliVm),
        (status = 400, description = "`invalid_user`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`: the user has none", body = ApiError),
        (status = 503, description = "`sessions_disabled`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<CliVm>, Problem> {
    let user = user_of(path)?;
    let info = enabled(&state)?.remove_cli(&scope.tenant, &user).await;
    Ok(Json(info.map_err(cli_problem)?.into()))
}

fn user_of(path: Result<Path<String>, PathRejection>) -> Result<UserName, Problem> {
    let Path(raw) = path.map_err(|e| {
        Problem::bad_request(
            "invalid_user",
            format!("the user in the path is unreadable ({})", e.body_text()),
        )
    })?;
    user_name(&raw)
}

fn cli_problem(e: SessionError) -> Problem {
    match e {
        SessionError::CliNotFound(_) => {
            Problem::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        e => problem(e),
    }
}
