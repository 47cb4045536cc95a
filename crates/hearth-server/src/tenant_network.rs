//! `/v1/tenants/{tenant}/network-policy` (admin tokens only): what every
//! NIC of a tenant's VMs may reach, merged into each VM's own policy at
//! its create (docs/networking.md).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hearth_control::controller::Scope;
use hearth_types::api::{ApiError, NetworkPolicy, TenantNetworkPolicy};
use hearth_types::TenantId;

use crate::error::Problem;
use crate::extract::{Caller, JsonBody};
use crate::AppState;

/// The tenant a route names, for an admin token only.
fn tenant(scope: &Scope, path: Result<Path<String>, PathRejection>) -> Result<TenantId, Problem> {
    if !scope.admin {
        return Err(Problem::forbidden(
            "a tenant's network policy bounds what its VMs reach, so it needs an admin token (`hearth token create --admin`)",
        ));
    }
    let raw = path.map(|Path(t)| t).unwrap_or_default();
    raw.parse().map_err(|e: hearth_types::TenantError| {
        Problem::bad_request("invalid_tenant", e.to_string())
    })
}

fn none_set(tenant: &TenantId) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("tenant {tenant} has no network policy: its VMs' own policies apply alone"),
    )
}

/// Replaces a tenant's network policy: VMs created from now on get it, running ones are narrowed to it at once.
#[utoipa::path(
    put, path = "/v1/tenants/{tenant}/network-policy", operation_id = "put_tenant_network_policy", tag = "vms",
    params(("tenant" = String, Path, description = "The tenant")),
    request_body(content = NetworkPolicy, description = "Optional: an empty body is `{}`, a policy that narrows nothing"),
    responses(
        (status = 200, description = "The policy as stored", body = TenantNetworkPolicy),
        (status = 400, description = "`invalid_tenant`, or `invalid_request` naming the field and the fix", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 403, description = "`forbidden`: not an admin token", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn put(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<NetworkPolicy>,
) -> Result<Json<TenantNetworkPolicy>, Problem> {
    let tenant = tenant(&scope, path)?;
    let stored = state.controller.put_tenant_network(&tenant, body).await?;
    Ok(Json(stored))
}

/// A tenant's network policy.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/network-policy", operation_id = "get_tenant_network_policy", tag = "vms",
    params(("tenant" = String, Path, description = "The tenant")),
    responses(
        (status = 200, description = "The policy", body = TenantNetworkPolicy),
        (status = 400, description = "`invalid_tenant`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 403, description = "`forbidden`: not an admin token", body = ApiError),
        (status = 404, description = "`not_found`: none set", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<TenantNetworkPolicy>, Problem> {
    let tenant = tenant(&scope, path)?;
    let found = state.controller.tenant_network(&tenant).await?;
    found.map(Json).ok_or_else(|| none_set(&tenant))
}

/// Removes a tenant's network policy (running VMs keep their own, without what it opened).
#[utoipa::path(
    delete, path = "/v1/tenants/{tenant}/network-policy", operation_id = "delete_tenant_network_policy", tag = "vms",
    params(("tenant" = String, Path, description = "The tenant")),
    responses(
        (status = 200, description = "The policy removed", body = TenantNetworkPolicy),
        (status = 400, description = "`invalid_tenant`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 403, description = "`forbidden`: not an admin token", body = ApiError),
        (status = 404, description = "`not_found`: none set", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<TenantNetworkPolicy>, Problem> {
    let tenant = tenant(&scope, path)?;
    let removed = state.controller.delete_tenant_network(&tenant).await?;
    removed.map(Json).ok_or_else(|| none_set(&tenant))
}
