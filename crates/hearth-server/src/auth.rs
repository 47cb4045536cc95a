//! API tokens: `hth_<8 hex id>_<64 hex secret>`. The secret is shown once,
//! when the token is minted; the store keeps only the SHA-256 of the whole
//! token, so a leaked database gives no usable token. A request's token is
//! hashed and looked up on every request (so a revoked or expired one is
//! refused at once), and becomes the caller's [`Scope`]. Its last use is
//! written back at most once a [`LAST_USE_EVERY`], not on every request.
//! Tokens never appear in logs or error messages.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hearth_control::controller::Scope;
use hearth_store::TokenRecord;
use hearth_types::{TenantId, Timestamp};
use sha2::{Digest, Sha256};

use crate::error::Problem;
use crate::AppState;

const PREFIX: &str = "hth_";
const ID_HEX: usize = 8;
const SECRET_HEX: usize = 64;
/// Longer secrets are accepted (up to this), shorter than 32 hex are not.
const MIN_SECRET_HEX: usize = 32;
const MAX_SECRET_HEX: usize = 128;

/// How stale a token's stored last use may get before a request writes it
/// again: a token used constantly costs one write a minute, not one a
/// request.
pub const LAST_USE_EVERY: Duration = Duration::from_secs(60);

/// A new token for `tenant`, never expiring (set `expires_at` on the record
/// for one that does): the secret to show once, and the record to store
/// (its id and the SHA-256 of the secret).
pub fn mint_token(tenant: TenantId, admin: bool) -> (String, TokenRecord) {
    let id = format!(
        "{PREFIX}{}",
        hex::encode(rand::random::<[u8; ID_HEX / 2]>())
    );
    let secret = hex::encode(rand::random::<[u8; SECRET_HEX / 2]>());
    let token = format!("{id}_{secret}");
    let record = TokenRecord {
        id,
        secret_sha256: sha256_hex(&token),
        tenant,
        admin,
        created_at: Timestamp::now(),
        expires_at: None,
        last_used_at: None,
    };
    (token, record)
}

fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `id` is a token's id, `hth_` and 8 lowercase hex digits.
pub(crate) fn is_token_id(id: &str) -> bool {
    id.strip_prefix(PREFIX)
        .is_some_and(|hex| hex.len() == ID_HEX && is_hex(hex))
}

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The token's id (`hth_xxxxxxxx`) if `token` has the shape of one.
fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let ok = id.len() == ID_HEX
        && (MIN_SECRET_HEX..=MAX_SECRET_HEX).contains(&secret.len())
        && is_hex(id)
        && is_hex(secret);
    ok.then(|| &token[..PREFIX.len() + ID_HEX])
}

/// The bearer token of a request, if it sent one.
fn bearer(headers: &HeaderMap) -> Result<&str, Problem> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| Problem::unauthorized("no API token given"))?;
    let malformed = || Problem::unauthorized("the Authorization header is not a hearth token");
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed());
    }
    Ok(token.trim())
}

/// Who sent the request, and the id of the token they used.
async fn caller(state: &AppState, headers: &HeaderMap) -> Result<(Scope, String), Problem> {
    let token = bearer(headers)?;
    let unknown = || Problem::unauthorized("the API token is not valid (unknown or revoked)");
    let id = token_id(token).ok_or_else(unknown)?;
    let record = state
        .controller
        .store()
        .token_by_hash(&sha256_hex(token))
        .await
        .map_err(|e| Problem::internal(&e))?
        .filter(|r| r.id == id)
        .ok_or_else(unknown)?;
    let now = Timestamp::now();
    if record.is_expired(now) {
        return Err(Problem::unauthorized(
            "the API token has expired: ask an operator for a new one",
        ));
    }
    note_use(state, &record, now).await;
    let scope = Scope {
        tenant: record.tenant,
        admin: record.admin,
    };
    Ok((scope, record.id))
}

/// Writes the token's last use when the stored one is older than
/// [`LAST_USE_EVERY`]. A failed write is logged, never the request's failure.
async fn note_use(state: &AppState, record: &TokenRecord, now: Timestamp) {
    let fresh = record
        .last_used_at
        .is_some_and(|at| now.since(at) < LAST_USE_EVERY);
    if fresh {
        return;
    }
    if let Err(e) = state.controller.store().token_used(&record.id, now).await {
        let error = hearth_types::error_chain(&e);
        tracing::warn!(token = %record.id, %error, "could not record the token's use");
    }
}

/// Middleware: authenticates, applies the token's rate limit, and hands
/// the [`Scope`] to the handler.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let scope = match token_scope(&state, request.headers()).await {
        Ok(scope) => scope,
        Err(problem) => return problem.into_response(),
    };
    request.extensions_mut().insert(scope);
    next.run(request).await
}

/// The [`Scope`] of the request's API token, within its rate limit.
pub(crate) async fn token_scope(state: &AppState, headers: &HeaderMap) -> Result<Scope, Problem> {
    let (scope, token_id) = caller(state, headers).await?;
    if let Err(retry_after) = state.limiter.check(&token_id, std::time::Instant::now()) {
        tracing::warn!(token = %token_id, "rate limited");
        return Err(Problem::rate_limited(retry_after));
    }
    Ok(scope)
}

pub(crate) fn sha256_of(secret: &str) -> String {
    sha256_hex(secret)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn minted_tokens_have_the_documented_shape_and_hash() {
        let tenant: TenantId = "team-a".parse().unwrap();
        let (token, record) = mint_token(tenant.clone(), false);
        assert_eq!(token.len(), 4 + 8 + 1 + 64, "{}", token.len());
        assert_eq!(token_id(&token), Some(record.id.as_str()));
        assert!(token.starts_with(&record.id));
        assert_eq!(record.secret_sha256, sha256_hex(&token));
        assert!(!record.secret_sha256.contains(&token[13..]));
        assert_eq!((record.tenant, record.admin), (tenant, false));
        let (other, _) = mint_token("team-a".parse().unwrap(), true);
        assert_ne!(token, other);
    }

    #[test]
    fn malformed_tokens_have_no_id() {
        let secret = "a".repeat(32);
        assert_eq!(
            token_id(&format!("hth_0123abcd_{secret}")),
            Some("hth_0123abcd")
        );
        for bad in [
            String::new(),
            "hth_".into(),
            format!("hth_0123abc_{secret}"),
            format!("hth_0123ABCD_{secret}"),
            format!("hth_0123abcd_{}", "a".repeat(31)),
            format!("hth_0123abcd_{}", "a".repeat(129)),
            format!("xxx_0123abcd_{secret}"),
            format!("hth_0123abcd_{secret}_"),
        ] {
            assert_eq!(token_id(&bad), None, "{bad:?}");
        }
        assert!(is_token_id("hth_0123abcd"));
        for bad in [
            "hth_0123abc",
            "hth_0123ABCD",
            "hth_0123abcd_",
            "0123abcd",
            "",
        ] {
            assert!(!is_token_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn bearer_needs_the_scheme_and_never_echoes_the_value() {
        let mut headers = HeaderMap::new();
        assert!(bearer(&headers)
            .unwrap_err()
            .message
            .contains("no API token"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic c2VjcmV0"),
        );
        let p = bearer(&headers).unwrap_err();
        assert_eq!(p.code, "unauthorized");
        assert!(!p.message.contains("c2VjcmV0") && p.message.contains("hearth token create"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer hth_x"),
        );
        assert_eq!(bearer(&headers).unwrap(), "hth_x");
    }
}
