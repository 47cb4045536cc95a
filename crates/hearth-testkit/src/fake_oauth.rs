//! A fake OAuth 2.0 provider for offline login tests: the authorization
//! code flow with PKCE (S256) and loopback redirects, as the AI CLIs'
//! providers run it, on 127.0.0.1 and reachable under any name (it never
//! looks at the `Host` header, only records it, so a test can check that
//! requests came by name through a proxy).
//!
//! - `GET /oauth/authorize?response_type=code&client_id=..&redirect_uri=..
//!   &code_challenge=..&code_challenge_method=S256&state=..`: a consent page
//!   whose one "Authorize" button covers the whole viewport; a bad or
//!   missing parameter is a 400 page naming it.
//! - `POST /oauth/approve` (the page's form): a 302 to
//!   `redirect_uri?code=CODE&state=STATE`, the redirect URI used exactly as
//!   given.
//! - `POST /oauth/token` (`grant_type=authorization_code`, `code`,
//!   `code_verifier`, `redirect_uri`, `client_id`): checks the verifier
//!   against the challenge and the client and redirect against the code's,
//!   each code once; answers fresh random tokens as JSON, or an OAuth JSON
//!   error (`invalid_request`, `invalid_grant`, `unsupported_grant_type`).
//!
//! The server runs on a runtime of its own (one worker thread), so it
//! works the same from a plain `#[test]` and from a `#[tokio::test]` of any
//! flavour; dropping the [`FakeOAuth`] stops it.

mod checks;
mod pages;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;

pub use checks::{s256, AuthorizeRequest, ParamError, Params};
pub use pages::AUTHORIZE_TITLE;

/// The tokens of one successful grant: the secret values a test searches
/// for in what must not hold them. `Debug` shows the client only.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedTokens {
    pub client_id: String,
    pub access_token: String,
    pub refresh_token: String,
    /// A JWT-shaped token (unsigned: the signature part is random bytes)
    /// whose claims name the account, as Codex's provider sends.
    pub id_token: String,
    /// The account the id token names (not a secret).
    pub account_id: String,
}

impl IssuedTokens {
    /// The three secret values.
    pub fn secrets(&self) -> [&str; 3] {
        [&self.access_token, &self.refresh_token, &self.id_token]
    }
}

impl fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedTokens")
            .field("client_id", &self.client_id)
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

/// The running fake provider.
pub struct FakeOAuth {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl fmt::Debug for FakeOAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeOAuth")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A code handed out by an approval and not yet exchanged.
#[derive(Debug)]
struct Grant {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
}

#[derive(Debug, Default)]
struct Shared {
    codes: Mutex<HashMap<String, Grant>>,
    issued: Mutex<Vec<IssuedTokens>>,
    hosts: Mutex<Vec<String>>,
    pages_served: AtomicU64,
    approvals: AtomicU64,
    token_grants: AtomicU64,
    token_failures: AtomicU64,
}

impl FakeOAuth {
    /// Binds 127.0.0.1 on a free port and serves on a runtime of its own.
    pub fn start() -> io::Result<FakeOAuth> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fake-oauth")
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared::default());
        let app = router(shared.clone());
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        runtime.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("fake OAuth provider stopped: {e}");
            }
        });
        Ok(FakeOAuth {
            addr,
            shared,
            runtime: Some(runtime),
        })
    }

    /// Where it listens (127.0.0.1 and a port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The grants made so far, in order.
    pub fn issued(&self) -> Vec<IssuedTokens> {
        lock(&self.shared.issued).clone()
    }

    /// Consent pages served (valid authorization requests).
    pub fn pages_served(&self) -> u64 {
        self.shared.pages_served.load(Ordering::SeqCst)
    }

    /// Approvals answered with a redirect carrying a code.
    pub fn approvals(&self) -> u64 {
        self.shared.approvals.load(Ordering::SeqCst)
    }

    /// Codes exchanged for tokens.
    pub fn token_grants(&self) -> u64 {
        self.shared.token_grants.load(Ordering::SeqCst)
    }

    /// Token requests refused with an OAuth error.
    pub fn token_failures(&self) -> u64 {
        self.shared.token_failures.load(Ordering::SeqCst)
    }

    /// The `Host` header of every request, in order (`""` when a request
    /// had none).
    pub fn hosts_seen(&self) -> Vec<String> {
        lock(&self.shared.hosts).clone()
    }
}

impl Drop for FakeOAuth {
    fn drop(&mut self) {
        // Never blocks, so dropping inside an async test is fine.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/oauth/authorize", get(authorize))
        .route("/oauth/approve", post(approve))
        .route("/oauth/token", post(token))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such page on the fake provider\n") })
        .layer(middleware::from_fn_with_state(shared.clone(), record_host))
        .with_state(shared)
}

async fn record_host(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .unwrap_or_default();
    lock(&shared.hosts).push(host);
    next.run(request).await
}

fn bad_page(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Html(pages::bad_request(&message))).into_response()
}

/// The authorization request's parameters, or what the 400 page says
/// (naming the parameter that is wrong).
fn authorize_request(text: &[u8]) -> Result<AuthorizeRequest, String> {
    let params = Params::parse(text)?;
    AuthorizeRequest::parse(&params).map_err(|e| e.to_string())
}

async fn authorize(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    match authorize_request(query.as_bytes()) {
        Ok(request) => {
            shared.pages_served.fetch_add(1, Ordering::SeqCst);
            Html(pages::authorize(&request)).into_response()
        }
        Err(message) => bad_page(message),
    }
}

async fn approve(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request = match authorize_request(&body) {
        Ok(r) => r,
        Err(message) => return bad_page(message),
    };
    let code = random_token("code", 24);
    let location = request.redirect_with(&code);
    lock(&shared.codes).insert(
        code,
        Grant {
            client_id: request.client_id,
            redirect_uri: request.redirect_uri,
            code_challenge: request.code_challenge,
        },
    );
    shared.approvals.fetch_add(1, Ordering::SeqCst);
    let mut response = StatusCode::FOUND.into_response();
    match HeaderValue::from_str(&location) {
        Ok(value) => {
            response.headers_mut().insert(header::LOCATION, value);
            response
        }
        Err(_) => bad_page("the redirect is not a valid header value".to_owned()),
    }
}

/// An OAuth error (RFC 6749 5.2).
struct OAuthError {
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            error,
            description: description.into(),
        }
    }
}

impl From<ParamError> for OAuthError {
    fn from(e: ParamError) -> Self {
        Self::new("invalid_request", e.to_string())
    }
}

async fn token(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let issuer = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(
            || "http://fake-provider".to_owned(),
            |h| format!("http://{h}"),
        );
    let result = Params::parse(&body)
        .map_err(|e| OAuthError::new("invalid_request", e))
        .and_then(|params| exchange(&shared, &params, &issuer));
    let (status, json) = match result {
        Ok(tokens) => {
            shared.token_grants.fetch_add(1, Ordering::SeqCst);
            let json = serde_json::json!({
                "access_token": tokens.access_token,
                "refresh_token": tokens.refresh_token,
                "id_token": tokens.id_token,
                "token_type": "Bearer",
                "expires_in": 3600,
            });
            lock(&shared.issued).push(tokens);
            (StatusCode::OK, json)
        }
        Err(e) => {
            shared.token_failures.fetch_add(1, Ordering::SeqCst);
            let json = serde_json::json!({ "error": e.error, "error_description": e.description });
            (StatusCode::BAD_REQUEST, json)
        }
    };
    let mut response = (status, Json(json)).into_response();
    let no_store = HeaderValue::from_static("no-store");
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, no_store);
    response
}

/// Checks a token request against the code's grant (the code is used up
/// whatever the outcome) and makes the tokens.
fn exchange(shared: &Shared, params: &Params, issuer: &str) -> Result<IssuedTokens, OAuthError> {
    let grant_type = params.required("grant_type")?;
    if grant_type != "authorization_code" {
        return Err(OAuthError::new(
            "unsupported_grant_type",
            format!("grant_type `{grant_type}` is not supported: use authorization_code"),
        ));
    }
    let code = params.required("code")?;
    let verifier = params.required("code_verifier")?;
    let redirect_uri = params.required("redirect_uri")?;
    let client_id = params.required("client_id")?;
    checks::check_pkce_text("code_verifier", verifier)?;
    let grant = lock(&shared.codes).remove(code).ok_or_else(|| {
        OAuthError::new("invalid_grant", "the code is unknown or was used already")
    })?;
    if grant.client_id != client_id {
        return Err(OAuthError::new(
            "invalid_grant",
            "the code was issued to another client_id",
        ));
    }
    if grant.redirect_uri != redirect_uri {
        return Err(OAuthError::new(
            "invalid_grant",
            "redirect_uri is not the one of the authorization request",
        ));
    }
    if s256(verifier) != grant.code_challenge {
        return Err(OAuthError::new(
            "invalid_grant",
            "code_verifier does not match the code_challenge (S256)",
        ));
    }
    Ok(new_tokens(client_id, issuer))
}

fn new_tokens(client_id: &str, issuer: &str) -> IssuedTokens {
    let account_id = format!("acct-{}", hex_id());
    let claims = serde_json::json!({
        "iss": issuer,
        "aud": client_id,
        "sub": random_token("user", 12),
        "email": "person@fake-provider.test",
        "https://api.openai.com/auth": { "chatgpt_account_id": account_id },
    });
    let part = |json: serde_json::Value| URL_SAFE_NO_PAD.encode(json.to_string());
    let id_token = format!(
        "{}.{}.{}",
        part(serde_json::json!({ "alg": "none", "typ": "JWT" })),
        part(claims),
        random_token("sig", 24)
    );
    IssuedTokens {
        client_id: client_id.to_owned(),
        access_token: random_token("fake-at", 32),
        refresh_token: random_token("fake-rt", 32),
        id_token,
        account_id,
    }
}

/// `PREFIX-` and `bytes` random bytes in base64url.
fn random_token(prefix: &str, bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    format!("{prefix}-{}", URL_SAFE_NO_PAD.encode(buf))
}

fn hex_id() -> String {
    let mut buf = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
