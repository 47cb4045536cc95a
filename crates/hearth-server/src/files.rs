//! `PUT`/`GET /v1/vms/{id}/files?path=`: copy a file into or out of a
//! ready VM over its agent link, at most `max_file_bytes` (64 MiB by
//! default), with the SHA-256 checked end to end. Tenant only, like exec.

use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_control::controller::FileError;
use hearth_types::api::{ApiError, FileWritten};
use hearth_types::VmId;

use crate::error::Problem;
use crate::extract::{Caller, VmPath};
use crate::{params, AppState};

/// The header carrying a read file's SHA-256 (hex).
pub const SHA256_HEADER: &str = "x-hearth-sha256";

/// Writes the request body to `path` in the VM (mode 0644, parent
/// directories must exist), replacing the file atomically once its
/// checksum matched.
#[utoipa::path(
    put,
    path = "/v1/vms/{id}/files",
    operation_id = "vm_put_file",
    tag = "agent",
    params(
        ("id" = VmId, Path, description = "The VM's id"),
        ("path" = String, Query, description = "Absolute path in the guest, percent-encoded: not `/` alone, no `..` component, no NUL, at most 4096 bytes",
            pattern = "^(/([^/.\\x00][^/\\x00]*|\\.[^/.\\x00][^/\\x00]*|\\.\\.[^/\\x00]+|\\.)?)+$", min_length = 2, max_length = 4096),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Written: its size and SHA-256 as the guest computed them", body = FileWritten),
        (status = 400, description = "`invalid_id` or `invalid_request` (no path, relative path, `..`)", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 409, description = "`invalid_state`: the VM is not ready", body = ApiError),
        (status = 413, description = "`file_too_large`: above the server's bound", body = ApiError),
        (status = 422, description = "`guest_refused`: the guest could not write it", body = ApiError),
        (status = 502, description = "`agent_unavailable` or `checksum_mismatch`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn put(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
    RawQuery(query): RawQuery,
    request: Request,
) -> Result<Json<FileWritten>, Problem> {
    let q = params::query_pairs(query.as_deref(), &["path"])?;
    let path = params::guest_path(&q)?;
    let limit = state.controller.config().max_file_bytes;
    let body = read_bounded(request.into_body(), limit)
        .await?
        .ok_or_else(|| Problem::from(FileError::TooLarge { limit }))?;
    let written = state.controller.write_file(&scope, &id, path, body).await?;
    Ok(Json(written))
}

/// Past the bound, how much more of a body is read and dropped so that the
/// client, which sends the whole body before it reads the answer, gets the
/// 413 instead of a broken pipe. Beyond this the connection is cut.
const DRAIN_MAX: u64 = 256 << 20;

/// The body, or `None` when it is larger than `limit` (then drained up to
/// [`DRAIN_MAX`] more, so the answer reaches the client).
async fn read_bounded(body: Body, limit: u64) -> Result<Option<Vec<u8>>, Problem> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut data = Vec::new();
    let mut seen: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Problem::bad_request(
                "invalid_request",
                format!("could not read the request body: {e}"),
            )
        })?;
        seen += chunk.len() as u64;
        if seen <= limit {
            data.extend_from_slice(&chunk);
        } else if seen > limit.saturating_add(DRAIN_MAX) {
            break;
        } else {
            data = Vec::new();
        }
    }
    Ok((seen <= limit).then_some(data))
}

/// The file at `path` in the VM, as bytes; its SHA-256 in
/// `x-hearth-sha256`.
#[utoipa::path(
    get,
    path = "/v1/vms/{id}/files",
    operation_id = "vm_get_file",
    tag = "agent",
    params(
        ("id" = VmId, Path, description = "The VM's id"),
        ("path" = String, Query, description = "Absolute path in the guest, percent-encoded: not `/` alone, no `..` component, no NUL, at most 4096 bytes",
            pattern = "^(/([^/.\\x00][^/\\x00]*|\\.[^/.\\x00][^/\\x00]*|\\.\\.[^/\\x00]+|\\.)?)+$", min_length = 2, max_length = 4096),
    ),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "`invalid_id` or `invalid_request`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 409, description = "`invalid_state`: the VM is not ready", body = ApiError),
        (status = 413, description = "`file_too_large`: the guest's file is above the server's bound", body = ApiError),
        (status = 422, description = "`guest_refused`: no such file, not a regular file, ...", body = ApiError),
        (status = 502, description = "`agent_unavailable` or `checksum_mismatch`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let q = params::query_pairs(query.as_deref(), &["path"])?;
    let path = params::guest_path(&q)?;
    let (data, sha256) = state.controller.read_file(&scope, &id, path).await?;
    let mut response = Body::from(data).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&sha256) {
        headers.insert(SHA256_HEADER, v);
    }
    Ok(response)
}

impl From<FileError> for Problem {
    fn from(e: FileError) -> Self {
        let message = e.to_string();
        match e {
            FileError::Exec(e) => Problem::from(e),
            FileError::TooLarge { .. } => {
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "file_too_large", message)
            }
            FileError::Guest(_) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "guest_refused", message)
            }
            FileError::Checksum { .. } => {
                Problem::new(StatusCode::BAD_GATEWAY, "checksum_mismatch", message)
            }
            FileError::Deadline { .. } => {
                Problem::new(StatusCode::GATEWAY_TIMEOUT, "agent_timeout", message)
            }
        }
    }
}
