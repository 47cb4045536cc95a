//! `/v1/pools`: warm pools per image (docs/pools.md), set, read and
//! removed at run time. A pool's VMs belong to no tenant and its settings
//! cost the host memory for everyone, so every route needs an admin token.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use hearth_control::controller::Scope;
use hearth_types::api::ApiError;
use hearth_types::pool::{Pool, PoolSpec};

use crate::error::Problem;
use crate::extract::{Caller, JsonBody};
use crate::AppState;

fn admin_only(scope: &Scope) -> Result<(), Problem> {
    if scope.admin {
        return Ok(());
    }
    Err(Problem::forbidden(
        "pools hold VMs for every tenant, so managing them needs an admin token \
         (`hearth token create --admin`)",
    ))
}

/// The image a route names, checked like an image name.
fn image(path: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    let raw = path.map(|Path(i)| i).unwrap_or_default();
    let ok = (1..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        return Err(Problem::bad_request(
            "invalid_image",
            format!(
                "image {:?} is not an image name: use 1 to 64 of a-z, 0-9, `-` and `_`",
                raw.chars().take(80).collect::<String>()
            ),
        ));
    }
    Ok(raw)
}

/// Creates or changes the pool of an image; it fills in the background.
#[utoipa::path(
    put, path = "/v1/pools/{image}", operation_id = "put_pool", tag = "pools",
    params(("image" = String, Path, description = "The image whose VMs the pool keeps")),
    request_body = PoolSpec,
    responses(
        (status = 200, description = "The pool, with the VMs it holds now", body = Pool),
        (status = 400, description = "`invalid_image` or `invalid_request` naming the field", body = ApiError),
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
    JsonBody(spec): JsonBody<PoolSpec>,
) -> Result<Json<Pool>, Problem> {
    admin_only(&scope)?;
    let image = image(path)?;
    Ok(Json(state.controller.set_pool(&image, &spec).await?))
}

/// One pool and its VMs.
#[utoipa::path(
    get, path = "/v1/pools/{image}", operation_id = "get_pool", tag = "pools",
    params(("image" = String, Path, description = "The pool's image")),
    responses(
        (status = 200, description = "The pool", body = Pool),
        (status = 400, description = "`invalid_image`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 403, description = "`forbidden`: not an admin token", body = ApiError),
        (status = 404, description = "`not_found`: the image has no pool", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Pool>, Problem> {
    admin_only(&scope)?;
    let image = image(path)?;
    Ok(Json(state.controller.pool(&image).await?))
}

/// Every pool and its VMs, by image.
#[utoipa::path(
    get, path = "/v1/pools", operation_id = "list_pools", tag = "pools",
    responses(
        (status = 200, description = "The pools", body = [Pool]),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 403, description = "`forbidden`: not an admin token", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(scope): Caller,
) -> Result<Json<Vec<Pool>>, Problem> {
    admin_only(&scope)?;
    Ok(Json(state.controller.list_pools().await?))
}

/// Removes a pool; its waiting VMs are destroyed.
#[utoipa::path(
    delete, path = "/v1/pools/{image}", operation_id = "delete_pool", tag = "pools",
    params(("image" = String, Path, description = "The pool's image")),
    responses(
        (status = 200, description = "The pool as it was; its VMs are being destroyed", body = Pool),
        (status = 400, description = "`invalid_image`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 403, description = "`forbidden`: not an admin token", body = ApiError),
        (status = 404, description = "`not_found`: the image has no pool", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Pool>, Problem> {
    admin_only(&scope)?;
    let image = image(path)?;
    Ok(Json(state.controller.remove_pool(&image).await?))
}
