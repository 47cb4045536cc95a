//! What a VM's guest agent reported: its health, its services' output and
//! its boot report. All read from the store, so they keep answering after
//! the VM is destroyed.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use hearth_control::controller::MAX_TAIL;
use hearth_types::api::{ApiError, ServiceLogs, VmBootReport, VmHealth};
use hearth_types::VmId;

use crate::error::Problem;
use crate::extract::{Caller, VmPath};
use crate::{params, AppState};

/// The agent's connection, heartbeat, readiness and each service's state,
/// restarts and last exit.
#[utoipa::path(
    get,
    path = "/v1/vms/{id}/health",
    operation_id = "vm_health",
    tag = "agent",
    params(("id" = VmId, Path, description = "The VM's id")),
    responses(
        (status = 200, description = "What the agent last reported (empty before its first hello)", body = VmHealth),
        (status = 400, description = "`invalid_id`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn health(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
) -> Result<Json<VmHealth>, Problem> {
    Ok(Json(state.controller.health(&scope, &id).await?))
}

/// The last lines a service printed, with host timestamps and streams.
#[utoipa::path(
    get,
    path = "/v1/vms/{id}/services/{name}/logs",
    operation_id = "service_logs",
    tag = "agent",
    params(
        ("id" = VmId, Path, description = "The VM's id"),
        ("name" = String, Path, description = "The service's name: 1-64 letters, digits, '-', '_' and '.' (not '.' or '..'), as at VM create",
            pattern = "^([A-Za-z0-9_-][A-Za-z0-9._-]{0,63}|\\.[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}|\\.\\.[A-Za-z0-9._-]{1,62})$"),
        ("tail" = Option<u32>, Query, description = "How many of the last lines, 1 to 10000 (default 100)", minimum = 1, maximum = 10000),
    ),
    responses(
        (status = 200, description = "The lines, oldest first (none for an unknown service)", body = ServiceLogs),
        (status = 400, description = "`invalid_id`, `invalid_lines` (`tail`) or `invalid_request` (a service name that breaks the create rule, an unknown parameter)", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn service_logs(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<ServiceLogs>, Problem> {
    let Path((raw_id, service)) = path.map_err(|e| {
        Problem::bad_request(
            "invalid_request",
            format!(
                "the path is unreadable ({}): use /v1/vms/ID/services/NAME/logs",
                e.body_text()
            ),
        )
    })?;
    let id = params::vm_id(&raw_id)?;
    let service = params::service_name(&service)?;
    let q = params::query_pairs(query.as_deref(), &["tail"])?;
    let tail = params::line_count(&q, "tail")?;
    let logs = state
        .controller
        .service_logs(&scope, &id, service, tail.min(MAX_TAIL))
        .await?;
    Ok(Json(logs))
}

/// The latest boot report the agent sent: kernel, failed units, waiting
/// jobs, listening ports, interfaces, memory and disks.
#[utoipa::path(
    get,
    path = "/v1/vms/{id}/boot-report",
    operation_id = "vm_boot_report",
    tag = "agent",
    params(("id" = VmId, Path, description = "The VM's id")),
    responses(
        (status = 200, description = "The report", body = VmBootReport),
        (status = 400, description = "`invalid_id`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found` (no such VM) or `no_boot_report` (its agent sent none)", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn boot_report(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
) -> Result<Json<VmBootReport>, Problem> {
    match state.controller.boot_report(&scope, &id).await? {
        Some(report) => Ok(Json(report)),
        None => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "no_boot_report",
            format!("the agent of VM {id} sent no boot report (yet): is the image built with the agent? `hearth vm health {id}` shows whether it connected"),
        )),
    }
}
