//! Every failure of a request, as a status and an [`ApiError`]: a stable
//! code for scripts and a message for people that says what is wrong and
//! how to fix it. Internal failures are logged with their whole chain and
//! answered with a generic message, so no SQL or path leaks to a client.

use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_control::controller::ControlError;
use hearth_store::StoreError;
use hearth_types::api::ApiError;

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 429.
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Problem {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(what: &str) -> Self {
        let message = format!(
            "{what}: send `Authorization: Bearer <token>`; \
             an operator creates tokens with `hearth token create`"
        );
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// A valid token that may not do this; `what` says which token may.
    pub fn forbidden(what: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", what)
    }

    pub fn body_too_large(limit: usize) -> Self {
        let message = format!(
            "the request body is larger than {limit} bytes, the most this server accepts: \
             send a smaller body"
        );
        Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message)
    }

    pub fn rate_limited(retry_after: u64) -> Self {
        let message = format!(
            "too many requests with this token: try again in {retry_after} s \
             (the limit is per token)"
        );
        Problem {
            retry_after: Some(retry_after),
            ..Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    /// A failure that is the server's, not the client's: logged in full,
    /// answered in general terms.
    pub fn internal(error: &dyn std::error::Error) -> Self {
        tracing::error!(error = %hearth_types::error_chain(error), "request failed");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to answer; its log has the details. Try again, \
             and report it if it persists",
        )
    }
}

impl From<ControlError> for Problem {
    fn from(e: ControlError) -> Self {
        let message = e.to_string();
        match e {
            ControlError::NotFound(_) | ControlError::Store(StoreError::NotFound(_)) => {
                Problem::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("{message}: `GET /v1/vms` lists the VMs you can see"),
                )
            }
            ControlError::Invalid(_) => Problem::bad_request("invalid_request", message),
            ControlError::NoPool(_) => Problem::new(StatusCode::NOT_FOUND, "not_found", message),
            ControlError::State(_) => Problem::new(StatusCode::CONFLICT, "invalid_state", message),
            ControlError::Held(_) => Problem::new(StatusCode::CONFLICT, "held", message),
            ControlError::Backend(..) => Problem::bad_request("backend_unavailable", message),
            ControlError::Store(StoreError::Conflict { .. }) => Problem::new(
                StatusCode::CONFLICT,
                "conflict",
                "the VM changed while this request ran: read it again and retry",
            ),
            ControlError::SnapshotNotFound(_) => Problem::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{message}: `GET /v1/snapshots` lists the snapshots you can see"),
            ),
            ControlError::SnapshotInUse(..) => {
                Problem::new(StatusCode::CONFLICT, "in_use", message)
            }
            ControlError::Store(StoreError::Duplicate { .. }) => {
                Problem::new(StatusCode::CONFLICT, "exists", message)
            }
            ControlError::Store(_) | ControlError::Io { .. } | ControlError::Network(_) => {
                Problem::internal(&e)
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = ApiError {
            code: self.code.to_owned(),
            message: self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The fallback for paths no route matches.
pub(crate) async fn no_route(uri: Uri) -> Problem {
    let path: String = uri.path().chars().take(200).collect();
    Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {path:?}: the routes are listed in GET /openapi.json"),
    )
}

/// The fallback for a known path with a method it does not take.
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    let path: String = uri.path().chars().take(200).collect();
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{path:?} does not take {method}: the routes are listed in GET /openapi.json"),
    )
}

#[cfg(test)]
mod tests {
    use hearth_types::VmId;

    use super::*;

    #[test]
    fn control_errors_map_to_statuses_and_codes() {
        let id: VmId = "vm-1".parse().unwrap();
        let cases = [
            (ControlError::NotFound(id.clone()), 404, "not_found"),
            (ControlError::Invalid("x".into()), 400, "invalid_request"),
            (ControlError::Held(id.clone()), 409, "held"),
            (
                ControlError::Backend(hearth_types::BackendKind::Firecracker, "why".into()),
                400,
                "backend_unavailable",
            ),
        ];
        for (e, status, code) in cases {
            let p = Problem::from(e);
            assert_eq!((p.status.as_u16(), p.code), (status, code), "{p:?}");
        }
    }

    #[test]
    fn internal_errors_do_not_show_their_cause() {
        let source = std::io::Error::other("SELECT secret FROM tokens");
        let e = ControlError::Io {
            what: "/var/lib/hearth/x".into(),
            source,
        };
        let p = Problem::from(e);
        assert_eq!(p.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!p.message.contains("SELECT") && !p.message.contains("/var/lib"));
    }

    #[test]
    fn rate_limited_carries_retry_after() {
        let r = Problem::rate_limited(7).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
    }
}
