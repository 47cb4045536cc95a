//! `GET /v1/vms/{id}/network`: a VM's NIC as its guest was told it, and
//! how many of its packets were refused (its policy's denials and the
//! networks every VM is refused), so a denied connection is visible per VM.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hearth_types::api::{ApiError, VmNetworkInfo};
use hearth_types::VmId;

use crate::error::Problem;
use crate::extract::{Caller, VmPath};
use crate::AppState;

/// The VM's NIC and its refused packets.
#[utoipa::path(
    get,
    path = "/v1/vms/{id}/network",
    operation_id = "vm_network",
    tag = "vms",
    params(("id" = VmId, Path, description = "The VM's id")),
    responses(
        (status = 200, description = "Its NIC", body = VmNetworkInfo),
        (status = 400, description = "`invalid_id`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found` (no such VM) or `no_network` (it has no NIC)", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn network(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
) -> Result<Json<VmNetworkInfo>, Problem> {
    match state.controller.vm_network(&scope, &id).await? {
        Some(info) => Ok(Json(info)),
        None => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "no_network",
            format!("VM {id} has no NIC: create it with `network` (\"nat\") to give it one"),
        )),
    }
}
