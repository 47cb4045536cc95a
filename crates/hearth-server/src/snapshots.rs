//! `/v1/snapshots`: snapshots of running VMs and templates of images,
//! listed, read and removed (docs/snapshots.md). A VM is restored from
//! one with `from_snapshot` in `POST /v1/vms`. Each handler is one
//! controller call.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hearth_types::api::ApiError;
use hearth_types::snapshot::{CreateSnapshot, Snapshot};
use hearth_types::SnapshotName;

use crate::error::Problem;
use crate::extract::{Caller, JsonBody};
use crate::AppState;

/// Takes a snapshot of a running VM (`vm`), which runs on, or boots
/// `image`, snapshots it once its agent is up (before any configuration
/// reaches it: a template) and destroys it. Answers when the files are
/// complete.
#[utoipa::path(
    post,
    path = "/v1/snapshots",
    operation_id = "create_snapshot",
    tag = "snapshots",
    request_body = CreateSnapshot,
    responses(
        (status = 201, description = "Taken", body = Snapshot),
        (status = 400, description = "`invalid_json` or `invalid_request` (neither or both of `vm` and `image`, a VM that is not running, a VM with a NIC)", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`: no such VM", body = ApiError),
        (status = 409, description = "`exists`: the name is taken", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Caller(scope): Caller,
    JsonBody(request): JsonBody<CreateSnapshot>,
) -> Result<(StatusCode, Json<Snapshot>), Problem> {
    let snap = state.controller.create_snapshot(&scope, request).await?;
    Ok((StatusCode::CREATED, Json(snap)))
}

/// The caller's snapshots (an admin token: everyone's).
#[utoipa::path(
    get,
    path = "/v1/snapshots",
    operation_id = "list_snapshots",
    tag = "snapshots",
    responses(
        (status = 200, description = "The snapshots", body = [Snapshot]),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(scope): Caller,
) -> Result<Json<Vec<Snapshot>>, Problem> {
    Ok(Json(state.controller.list_snapshots(&scope).await?))
}

/// One snapshot and its manifest.
#[utoipa::path(
    get,
    path = "/v1/snapshots/{name}",
    operation_id = "get_snapshot",
    tag = "snapshots",
    params(("name" = String, Path, description = "The snapshot's name", pattern = "^[a-z][a-z0-9-]{0,62}$")),
    responses(
        (status = 200, description = "The snapshot", body = Snapshot),
        (status = 400, description = "`invalid_name`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Snapshot>, Problem> {
    let name = name_of(path)?;
    Ok(Json(state.controller.snapshot(&scope, &name).await?))
}

/// Removes a snapshot and its files. Refused while a VM restored from it
/// is not destroyed (its layer is the snapshot's).
#[utoipa::path(
    delete,
    path = "/v1/snapshots/{name}",
    operation_id = "remove_snapshot",
    tag = "snapshots",
    params(("name" = String, Path, description = "The snapshot's name", pattern = "^[a-z][a-z0-9-]{0,62}$")),
    responses(
        (status = 200, description = "The snapshot as it was; it and its files are gone", body = Snapshot),
        (status = 400, description = "`invalid_name`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 409, description = "`in_use`: VMs restored from it still exist", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Snapshot>, Problem> {
    let name = name_of(path)?;
    Ok(Json(state.controller.remove_snapshot(&scope, &name).await?))
}

fn name_of(path: Result<Path<String>, PathRejection>) -> Result<SnapshotName, Problem> {
    let raw = path.map(|Path(n)| n).unwrap_or_default();
    raw.parse()
        .map_err(|e: hearth_types::snapshot::SnapshotNameError| {
            Problem::bad_request("invalid_name", e.to_string())
        })
}
