//! `/v1/vms`: create, list, read, hold, release, stop, start and destroy
//! VMs, and read their events. Each handler is one controller call.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_types::api::{ApiError, CreateVm, Vm, VmEvent};
use hearth_types::VmId;

use crate::error::Problem;
use crate::extract::{Caller, JsonBody, VmPath};
use crate::AppState;

/// Creates a VM. It is recorded at once and boots in the background: poll
/// `GET /v1/vms/{id}` until `state` is `ready` (or `failed`, with the
/// reason in `failure`).
#[utoipa::path(
    post,
    path = "/v1/vms",
    operation_id = "create_vm",
    tag = "vms",
    request_body(content = CreateVm, description = "Optional: an empty body is `{}`, every field its default"),
    responses(
        (status = 201, description = "Recorded; booting in the background", body = Vm,
            headers(("Location" = String, description = "The VM's URL"))),
        (status = 400, description = "`invalid_json`, `invalid_request` (unknown field, bad values, unknown image) or `backend_unavailable`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`: `from_snapshot` names no snapshot this tenant can see", body = ApiError),
        (status = 413, description = "`body_too_large`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError,
            headers(("Retry-After" = u64, description = "Seconds until the next request is allowed"))),
    ),
    security(("token" = []))
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Caller(scope): Caller,
    JsonBody(request): JsonBody<CreateVm>,
) -> Result<Response, Problem> {
    let vm = state.controller.create_vm(&scope, request).await?;
    let mut response = (StatusCode::CREATED, Json(&vm)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/vms/{}", vm.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Lists the caller's VMs (an admin token: everyone's), destroyed ones
/// included.
#[utoipa::path(
    get,
    path = "/v1/vms",
    operation_id = "list_vms",
    tag = "vms",
    responses(
        (status = 200, description = "The VMs", body = [Vm]),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(scope): Caller,
) -> Result<Json<Vec<Vm>>, Problem> {
    Ok(Json(state.controller.list_vms(&scope).await?))
}

/// One VM. Another tenant's VM answers exactly like one that does not
/// exist.
#[utoipa::path(
    get,
    path = "/v1/vms/{id}",
    operation_id = "get_vm",
    tag = "vms",
    params(("id" = VmId, Path, description = "The VM's id, e.g. `vm-3f9a1c2b7d4e`")),
    responses(
        (status = 200, description = "The VM", body = Vm),
        (status = 400, description = "`invalid_id`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
) -> Result<Json<Vm>, Problem> {
    Ok(Json(state.controller.vm(&scope, &id).await?))
}

/// Stops the VM if it runs, then destroys it: its logs are archived (still
/// readable here) and its files removed, a persistent VM's disk with them
/// (the only way that disk is ever removed). Answers at once with the VM
/// in `stopping` (or `destroyed` when it had already stopped).
#[utoipa::path(
    delete,
    path = "/v1/vms/{id}",
    operation_id = "destroy_vm",
    tag = "vms",
    params(("id" = VmId, Path, description = "The VM's id")),
    responses(
        (status = 202, description = "Stopping, to be destroyed", body = Vm),
        (status = 400, description = "`invalid_id`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 409, description = "`held` (release it first) or `invalid_state`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn destroy(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
) -> Result<(StatusCode, Json<Vm>), Problem> {
    let vm = state.controller.destroy(&scope, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(vm)))
}

/// Stops the VM: the guest is asked to shut down, then its hypervisor
/// ends. A persistent VM keeps its disk and stays `stopped` until started
/// (its restart policy does not start it again); another VM is cleaned up
/// after its grace. A stopped or failed VM is answered as it is (a planned
/// restart is cancelled). Answers at once, with the VM in `stopping`.
#[utoipa::path(
    post,
    path = "/v1/vms/{id}/stop",
    operation_id = "stop_vm",
    tag = "vms",
    params(("id" = VmId, Path, description = "The VM's id")),
    responses(
        (status = 202, description = "Stopping (or already stopped)", body = Vm),
        (status = 400, description = "`invalid_id`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 409, description = "`conflict`: it changed meanwhile; ask again", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn stop(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
) -> Result<(StatusCode, Json<Vm>), Problem> {
    let vm = state.controller.stop_vm(&scope, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(vm)))
}

/// Starts a stopped or failed persistent VM again from its disk: it goes
/// through `preparing` and `booting` to `ready` like a new VM, with the
/// same id, configuration and files. A running VM is answered as it is.
#[utoipa::path(
    post,
    path = "/v1/vms/{id}/start",
    operation_id = "start_vm",
    tag = "vms",
    params(("id" = VmId, Path, description = "The VM's id")),
    responses(
        (status = 202, description = "Starting (or already running)", body = Vm),
        (status = 400, description = "`invalid_id`, or `invalid_request`: the VM is not persistent", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 409, description = "`invalid_state` (still stopping, or destroyed) or `conflict`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn start(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
) -> Result<(StatusCode, Json<Vm>), Problem> {
    let vm = state.controller.start_vm(&scope, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(vm)))
}

/// Holds the VM: it is never cleaned up until released, so a failed VM
/// can be inspected as long as needed.
#[utoipa::path(
    post,
    path = "/v1/vms/{id}/hold",
    operation_id = "hold_vm",
    tag = "vms",
    params(("id" = VmId, Path, description = "The VM's id")),
    responses(
        (status = 200, description = "The VM, held", body = Vm),
        (status = 400, description = "`invalid_id`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn hold(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
) -> Result<Json<Vm>, Problem> {
    Ok(Json(state.controller.hold(&scope, &id, true).await?))
}

/// Releases a held VM: its cleanup resumes.
#[utoipa::path(
    post,
    path = "/v1/vms/{id}/release",
    operation_id = "release_vm",
    tag = "vms",
    params(("id" = VmId, Path, description = "The VM's id")),
    responses(
        (status = 200, description = "The VM, released", body = Vm),
        (status = 400, description = "`invalid_id`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn release(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
) -> Result<Json<Vm>, Problem> {
    Ok(Json(state.controller.hold(&scope, &id, false).await?))
}

/// The VM's history: every state change and notable happening, oldest
/// first. Kept after the VM is destroyed.
#[utoipa::path(
    get,
    path = "/v1/vms/{id}/events",
    operation_id = "vm_events",
    tag = "vms",
    params(("id" = VmId, Path, description = "The VM's id")),
    responses(
        (status = 200, description = "The events, oldest first", body = [VmEvent]),
        (status = 400, description = "`invalid_id`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn events(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
) -> Result<Json<Vec<VmEvent>>, Problem> {
    Ok(Json(state.controller.events(&scope, &id).await?))
}
