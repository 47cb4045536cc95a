//! Extractors whose rejections are [`Problem`]s, so that a bad path, body or
//! missing scope answers in the API's JSON like every other error, never in
//! axum's plain-text defaults.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use hearth_control::controller::Scope;
use hearth_types::VmId;
use serde::de::DeserializeOwned;

use crate::error::Problem;
use crate::{params, AppState};

/// The caller, as authenticated by [`crate::auth::authenticate`].
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub Scope);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        parts
            .extensions
            .get::<Scope>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| Problem::unauthorized("no API token given"))
    }
}

/// The `{id}` of a route, validated.
#[derive(Debug, Clone)]
pub(crate) struct VmPath(pub VmId);

impl<S: Send + Sync> FromRequestParts<S> for VmPath {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                let why = e.body_text();
                Problem::bad_request("invalid_id", format!("the VM id in the path is unreadable ({why}): ids look like `vm-3f9a1c2b7d4e`"))
            })?;
        params::vm_id(&raw).map(VmPath)
    }
}

/// A JSON body of type `T`, at most `max_body_bytes` long. An empty body
/// reads as `{}`.
#[derive(Debug, Clone)]
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Problem> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::body_too_large(state.max_body_bytes)
            } else {
                Problem::bad_request(
                    "invalid_request",
                    format!("could not read the request body: {}", r.body_text()),
                )
            }
        })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        parse(text).map(JsonBody)
    }
}

fn parse<T: DeserializeOwned>(text: &[u8]) -> Result<T, Problem> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        body_problem(&field, e.into_inner())
    })?;
    de.end().map_err(|e| body_problem(".", e))?;
    Ok(value)
}

/// serde_json's message names the position (and unknown fields); the path
/// names the field whose value is wrong.
fn body_problem(field: &str, e: serde_json::Error) -> Problem {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => {
            let at = if field == "." {
                String::new()
            } else {
                format!("field `{field}`: ")
            };
            Problem::bad_request(
                "invalid_request",
                format!("the request body does not fit the schema: {at}{e}; see GET /openapi.json"),
            )
        }
        Category::Syntax | Category::Eof | Category::Io => Problem::bad_request(
            "invalid_json",
            format!("the request body is not valid JSON: {e}; send a JSON object"),
        ),
    }
}
