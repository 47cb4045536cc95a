//! `GET /v1/tokens` and `DELETE /v1/tokens/{id}`: the tokens an operator
//! made with `hearth token create`, listed (without their secrets) and
//! revoked. Tokens span tenants, so only admin tokens may do either.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hearth_control::controller::Scope;
use hearth_store::TokenRecord;
use hearth_types::api::{ApiError, TokenInfo};

use crate::error::Problem;
use crate::extract::Caller;
use crate::{auth, AppState};

/// Every token, oldest first: id, tenant, admin, created, expiry, last use.
#[utoipa::path(
    get,
    path = "/v1/tokens",
    operation_id = "list_tokens",
    tag = "tokens",
    responses(
        (status = 200, description = "The tokens, oldest first; never a secret or its hash", body = [TokenInfo]),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 403, description = "`forbidden`: the token is not an admin token", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(scope): Caller,
) -> Result<Json<Vec<TokenInfo>>, Problem> {
    admin_only(&scope)?;
    let tokens = state.controller.store().list_tokens().await;
    let tokens = tokens.map_err(|e| Problem::internal(&e))?;
    Ok(Json(tokens.iter().map(info).collect()))
}

/// Revokes a token: its next request, and every one after, is 401.
#[utoipa::path(
    delete,
    path = "/v1/tokens/{id}",
    operation_id = "revoke_token",
    tag = "tokens",
    params(("id" = String, Path, description = "The token's id, `hth_` and 8 hex digits (never the whole token)", pattern = "^hth_[0-9a-f]{8}$")),
    responses(
        (status = 200, description = "The token as it was; it is gone", body = TokenInfo),
        (status = 400, description = "`invalid_id`: not a token id", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 403, description = "`forbidden`: the token is not an admin token", body = ApiError),
        (status = 404, description = "`not_found`: no such token (or already revoked)", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<TokenInfo>, Problem> {
    admin_only(&scope)?;
    let id = path.map(|Path(id)| id).unwrap_or_default();
    if !auth::is_token_id(&id) {
        return Err(Problem::bad_request(
            "invalid_id",
            "that is not a token id: give the id `hearth token list` shows \
             (`hth_` and 8 hex digits), never the whole token",
        ));
    }
    let revoked = state.controller.store().revoke_token(&id).await;
    match revoked.map_err(|e| Problem::internal(&e))? {
        Some(record) => {
            tracing::info!(token = %record.id, "token revoked");
            Ok(Json(info(&record)))
        }
        None => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no token {id} (revoked already?): `hearth token list` shows the tokens"),
        )),
    }
}

fn admin_only(scope: &Scope) -> Result<(), Problem> {
    if scope.admin {
        return Ok(());
    }
    Err(Problem::forbidden(
        "tokens span tenants, so managing them needs an admin token \
         (`hearth token create --admin`)",
    ))
}

/// What may be shown of a token: everything but the secret's hash.
fn info(record: &TokenRecord) -> TokenInfo {
    TokenInfo {
        id: record.id.clone(),
        tenant: record.tenant.clone(),
        admin: record.admin,
        created_at: record.created_at,
        expires_at: record.expires_at,
        last_used_at: record.last_used_at,
    }
}
