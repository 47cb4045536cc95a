//! Egress settings of login sessions: `/v1/tenants/{tenant}/egress` (admin
//! tokens: the domains a tenant's sessions may reach besides their
//! provider's, and the tenant's upstream proxy) and `/v1/users/{user}/egress`
//! (the caller's tenant: a user's own upstream proxy). An upstream proxy's
//! password goes to the vault; no answer shows it.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hearth_types::api::ApiError;
use hearth_types::session::{EgressSettingsInfo, PutEgress};
use hearth_types::{TenantId, UserName};

use crate::credentials::user_name;
use crate::error::Problem;
use crate::extract::{Caller, JsonBody};
use crate::sessions::{enabled, problem};
use crate::AppState;

/// Whose settings a route names.
enum Owner {
    Tenant(TenantId),
    User(TenantId, UserName),
}

impl Owner {
    fn parts(&self) -> (&TenantId, Option<&UserName>) {
        match self {
            Owner::Tenant(t) => (t, None),
            Owner::User(t, u) => (t, Some(u)),
        }
    }
}

fn tenant_owner(
    scope: &hearth_control::controller::Scope,
    path: Result<Path<String>, PathRejection>,
) -> Result<Owner, Problem> {
    if !scope.admin {
        return Err(Problem::forbidden(
            "a tenant's egress settings widen what its VMs reach, so they need an admin token (`hearth token create --admin`)",
        ));
    }
    let raw = path.map(|Path(t)| t).unwrap_or_default();
    let tenant = raw.parse().map_err(|e: hearth_types::TenantError| {
        Problem::bad_request("invalid_tenant", e.to_string())
    })?;
    Ok(Owner::Tenant(tenant))
}

fn user_owner(
    scope: &hearth_control::controller::Scope,
    path: Result<Path<String>, PathRejection>,
) -> Result<Owner, Problem> {
    let raw = path.map(|Path(u)| u).unwrap_or_default();
    Ok(Owner::User(scope.tenant.clone(), user_name(&raw)?))
}

async fn put(
    state: &AppState,
    owner: Owner,
    body: &PutEgress,
) -> Result<Json<EgressSettingsInfo>, Problem> {
    let (tenant, user) = owner.parts();
    let info = enabled(state)?
        .put_egress(tenant, user, body)
        .await
        .map_err(problem)?;
    tracing::info!(%tenant, user = user.map(|u| u.as_str()), "egress settings replaced");
    Ok(Json(info))
}

async fn get(state: &AppState, owner: Owner) -> Result<Json<EgressSettingsInfo>, Problem> {
    let (tenant, user) = owner.parts();
    let info = enabled(state)?
        .egress_settings(tenant, user)
        .await
        .map_err(problem)?;
    info.map(Json).ok_or_else(|| none_set(tenant, user))
}

async fn delete(state: &AppState, owner: Owner) -> Result<Json<EgressSettingsInfo>, Problem> {
    let (tenant, user) = owner.parts();
    let info = enabled(state)?
        .delete_egress(tenant, user)
        .await
        .map_err(problem)?;
    info.map(Json).ok_or_else(|| none_set(tenant, user))
}

fn none_set(tenant: &TenantId, user: Option<&UserName>) -> Problem {
    let whose = match user {
        Some(u) => format!("user {u} of tenant {tenant}"),
        None => format!("tenant {tenant}"),
    };
    Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("{whose} has no egress settings: the server's apply"),
    )
}

/// Replaces a tenant's egress settings.
#[utoipa::path(
    put, path = "/v1/tenants/{tenant}/egress", operation_id = "put_tenant_egress", tag = "sessions",
    params(("tenant" = String, Path, description = "The tenant")),
    request_body = PutEgress,
    responses(
        (status = 200, description = "The settings, without any password", body = EgressSettingsInfo),
        (status = 400, description = "`invalid_tenant` or `invalid_request` naming the field", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 403, description = "`forbidden`: not an admin token", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
        (status = 503, description = "`sessions_disabled`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn put_tenant(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<PutEgress>,
) -> Result<Json<EgressSettingsInfo>, Problem> {
    put(&state, tenant_owner(&scope, path)?, &body).await
}

/// A tenant's egress settings.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/egress", operation_id = "get_tenant_egress", tag = "sessions",
    params(("tenant" = String, Path, description = "The tenant")),
    responses(
        (status = 200, description = "The settings", body = EgressSettingsInfo),
        (status = 400, description = "`invalid_tenant`", body = ApiError),
        (status = 403, description = "`forbidden`: not an admin token", body = ApiError),
        (status = 404, description = "`not_found`: none set", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
        (status = 503, description = "`sessions_disabled`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn get_tenant(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<EgressSettingsInfo>, Problem> {
    get(&state, tenant_owner(&scope, path)?).await
}

/// Removes a tenant's egress settings (and its proxy's sealed credentials).
#[utoipa::path(
    delete, path = "/v1/tenants/{tenant}/egress", operation_id = "delete_tenant_egress", tag = "sessions",
    params(("tenant" = String, Path, description = "The tenant")),
    responses(
        (status = 200, description = "The settings removed", body = EgressSettingsInfo),
        (status = 400, description = "`invalid_tenant`", body = ApiError),
        (status = 403, description = "`forbidden`: not an admin token", body = ApiError),
        (status = 404, description = "`not_found`: none set", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
        (status = 503, description = "`sessions_disabled`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn delete_tenant(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<EgressSettingsInfo>, Problem> {
    delete(&state, tenant_owner(&scope, path)?).await
}

/// Replaces a user's egress settings: an upstream proxy only.
#[utoipa::path(
    put, path = "/v1/users/{user}/egress", operation_id = "put_user_egress", tag = "sessions",
    params(("user" = String, Path, description = "The user, in the token's tenant")),
    request_body = PutEgress,
    responses(
        (status = 200, description = "The settings, without any password", body = EgressSettingsInfo),
        (status = 400, description = "`invalid_user` or `invalid_request` naming the field", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
        (status = 503, description = "`sessions_disabled`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn put_user(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<PutEgress>,
) -> Result<Json<EgressSettingsInfo>, Problem> {
    put(&state, user_owner(&scope, path)?, &body).await
}

/// A user's egress settings.
#[utoipa::path(
    get, path = "/v1/users/{user}/egress", operation_id = "get_user_egress", tag = "sessions",
    params(("user" = String, Path, description = "The user")),
    responses(
        (status = 200, description = "The settings", body = EgressSettingsInfo),
        (status = 400, description = "`invalid_user`", body = ApiError),
        (status = 404, description = "`not_found`: none set", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
        (status = 503, description = "`sessions_disabled`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn get_user(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<EgressSettingsInfo>, Problem> {
    get(&state, user_owner(&scope, path)?).await
}

/// Removes a user's egress settings (and the proxy's sealed credentials).
#[utoipa::path(
    delete, path = "/v1/users/{user}/egress", operation_id = "delete_user_egress", tag = "sessions",
    params(("user" = String, Path, description = "The user")),
    responses(
        (status = 200, description = "The settings removed", body = EgressSettingsInfo),
        (status = 400, description = "`invalid_user`", body = ApiError),
        (status = 404, description = "`not_found`: none set", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
        (status = 503, description = "`sessions_disabled`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn delete_user(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<EgressSettingsInfo>, Problem> {
    delete(&state, user_owner(&scope, path)?).await
}
