//! `GET /v1/users/{user}/credentials` and `DELETE
//! /v1/users/{user}/credentials/{provider}`: the sealed credentials the
//! vault keeps for a user of the caller's tenant, as metadata only
//! (provider, version, time, file paths, modes and sizes, the KEK version)
//! and deleted. Nothing here opens a credential or sees a key: the store's
//! metadata is all these routes read.
//!
//! Users are named within a tenant, so the caller's token's tenant (an
//! admin's too) is the one looked in. A user with no credentials there is
//! `404 not_found`, with the same body whether the name has credentials in
//! another tenant or nowhere, as another tenant's VM answers.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hearth_store::{CredentialMeta, CredentialOwner};
use hearth_types::api::{ApiError, CredentialInfo};
use hearth_types::{ProviderId, TenantId, UserName};

use crate::error::Problem;
use crate::extract::Caller;
use crate::AppState;

/// The current version of each of the user's credentials: never a byte of
/// their files.
#[utoipa::path(
    get,
    path = "/v1/users/{user}/credentials",
    operation_id = "list_credentials",
    tag = "credentials",
    params(("user" = String, Path, description = "The user, 1 to 64 of ASCII letters, digits, `.`, `_`, `@` and `-`")),
    responses(
        (status = 200, description = "One per provider, by provider: metadata only", body = [CredentialInfo]),
        (status = 400, description = "`invalid_user`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`: the user has no credentials in the token's tenant", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Vec<CredentialInfo>>, Problem> {
    let raw = path.map(|Path(u)| u).unwrap_or_default();
    let user = user_name(&raw)?;
    let store = state.controller.store();
    let listed = store.list_credentials(&scope.tenant, &user).await;
    let listed = listed.map_err(|e| Problem::internal(&e))?;
    let users: Vec<CredentialInfo> = listed
        .iter()
        .filter(|m| !hearths_own(&m.owner.provider))
        .map(info)
        .collect();
    if users.is_empty() {
        return Err(no_credentials(&scope.tenant, &user));
    }
    Ok(Json(users))
}

/// Deletes every version of the user's credential for the provider: the
/// next VM of that user starts logged out.
#[utoipa::path(
    delete,
    path = "/v1/users/{user}/credentials/{provider}",
    operation_id = "delete_credential",
    tag = "credentials",
    params(
        ("user" = String, Path, description = "The user"),
        ("provider" = String, Path, description = "The provider, 1 to 32 lowercase letters, digits, `-` and `_` (e.g. `claude`)"),
    ),
    responses(
        (status = 200, description = "The current version as it was; every version is gone", body = CredentialInfo),
        (status = 400, description = "`invalid_user` or `invalid_provider`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`: the user has no credential for that provider in the token's tenant", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<CredentialInfo>, Problem> {
    let (raw_user, raw_provider) = path.map(|Path(p)| p).unwrap_or_default();
    let user = user_name(&raw_user)?;
    let provider: ProviderId = raw_provider
        .parse()
        .map_err(|e: hearth_types::ProviderError| {
            Problem::bad_request("invalid_provider", e.to_string())
        })?;
    if hearths_own(&provider) {
        let why = format!(
            "{provider} is no user's credential: a persistent VM's disk key goes only with its VM (`hearth vm rm`)"
        );
        return Err(Problem::new(StatusCode::NOT_FOUND, "not_found", why));
    }
    let owner = CredentialOwner {
        tenant: scope.tenant.clone(),
        user,
        provider,
    };
    let deleted = state.controller.store().delete_credentials(&owner).await;
    let deleted = deleted.map_err(|e| Problem::internal(&e))?;
    let deleted = deleted.ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "user {} has no {} credential in tenant {} (`GET /v1/users/{}/credentials` lists them)",
                owner.user, owner.provider, owner.tenant, owner.user
            ),
        )
    })?;
    tracing::info!(credential = %owner, version = deleted.version, "credential deleted");
    Ok(Json(info(&deleted)))
}

/// A credential hearth keeps for itself under a VM's id (a persistent
/// VM's disk key): never listed or deleted through a user's routes, where
/// deleting it would make the VM's disk unreadable.
fn hearths_own(provider: &ProviderId) -> bool {
    provider.as_str() == hearth_control::disk_keys::DISK_KEY_PROVIDER
}

pub(crate) fn user_name(raw: &str) -> Result<UserName, Problem> {
    raw.parse().map_err(|e: hearth_types::UserNameError| {
        Problem::bad_request("invalid_user", e.to_string())
    })
}

fn no_credentials(tenant: &TenantId, user: &UserName) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "user {user} has no credentials in tenant {tenant}: a login session captures them \
             (check the user's name and the token's tenant)"
        ),
    )
}

fn info(m: &CredentialMeta) -> CredentialInfo {
    CredentialInfo {
        user: m.owner.user.clone(),
        provider: m.owner.provider.clone(),
        version: m.version,
        created_at: m.created_at,
        size: m.size,
        files: m.files.clone(),
        kek_version: m.kek_version,
    }
}
