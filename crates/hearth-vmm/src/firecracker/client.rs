//! A minimal HTTP/1.1 client for Firecracker's API socket. The API is a
//! handful of PUTs (and a PATCH) with small JSON bodies answered with a status and,
//! on error, `{"fault_message": ...}` with a Content-Length, so one request
//! per connection and a small response parser are all it takes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::api::{Endpoint, Fault};

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("could not connect to the API socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the API connection failed")]
    Io(#[source] std::io::Error),
    #[error("the API closed the connection before a full response")]
    Closed,
    #[error("malformed API response: {0}")]
    Malformed(&'static str),
    #[error("no API response within {0:?}")]
    Timeout(Duration),
    #[error("the request body could not be encoded")]
    Encode(#[source] serde_json::Error),
    /// Firecracker refused the request; `fault` is its `fault_message`.
    #[error("HTTP {status}: {fault}")]
    Status { status: u16, fault: String },
}

impl ApiError {
    /// The request may not have been answered because the connection or
    /// the process behind it went away (as opposed to a refusal).
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            ApiError::Connect { .. } | ApiError::Io(_) | ApiError::Closed
        )
    }
}

/// A parsed HTTP response.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Talks to one Firecracker process through its API socket.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
}

impl ApiClient {
    pub fn new(socket: PathBuf, timeout: Duration) -> Self {
        ApiClient { socket, timeout }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether Firecracker accepts connections yet.
    pub async fn is_listening(&self) -> bool {
        UnixStream::connect(&self.socket).await.is_ok()
    }

    /// Sends `request` with its method to its path; any status other than 2xx is an error
    /// carrying Firecracker's fault message.
    pub async fn put<E: Endpoint>(&self, request: &E) -> Result<(), ApiError> {
        let body = serde_json::to_vec(request).map_err(ApiError::Encode)?;
        let response = self
            .send(request.method(), &request.path(), Some(&body))
            .await?;
        check_status(response).map(drop)
    }

    /// GETs `path` and returns the body of a 2xx response.
    pub async fn get(&self, path: &str) -> Result<Vec<u8>, ApiError> {
        let response = self.send("GET", path, None).await?;
        check_status(response)
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, ApiError> {
        let request = format_request(method, path, body);
        tokio::time::timeout(self.timeout, self.exchange(&request))
            .await
            .map_err(|_| ApiError::Timeout(self.timeout))?
    }

    async fn exchange(&self, request: &[u8]) -> Result<Response, ApiError> {
        let mut stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ApiError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
        stream.write_all(request).await.map_err(ApiError::Io)?;
        read_response(&mut stream).await
    }
}

/// Reads until one whole response has arrived.
async fn read_response(stream: &mut UnixStream) -> Result<Response, ApiError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.map_err(ApiError::Io)?;
        if n == 0 {
            return Err(ApiError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(response) = parse_response(&buf)? {
            return Ok(response);
        }
    }
}

fn format_request(method: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut out =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
    if let Some(body) = body {
        out.push_str("Content-Type: application/json\r\n");
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    bytes
}

/// Headers larger than this are not Firecracker's.
const MAX_HEAD: usize = 16 * 1024;
/// Firecracker's largest answers (GET /vm/config) are a few KiB.
const MAX_BODY: usize = 1024 * 1024;

/// Parses one response from the bytes received so far: `Ok(None)` while it
/// is incomplete. Bodies must have a Content-Length (no header: no body).
pub fn parse_response(buf: &[u8]) -> Result<Option<Response>, ApiError> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(ApiError::Malformed("response headers too large"));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| ApiError::Malformed("response headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = parse_status_line(lines.next().unwrap_or_default())?;
    let length = body_length(lines)?;
    let body_start = head_end + 4;
    let Some(body) = buf.get(body_start..body_start + length) else {
        return Ok(None);
    };
    Ok(Some(Response {
        status,
        body: body.to_vec(),
    }))
}

/// `HTTP/1.1 204 ` (Firecracker sends no reason phrase) -> 204.
fn parse_status_line(line: &str) -> Result<u16, ApiError> {
    let mut parts = line.splitn(3, ' ');
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(ApiError::Malformed("no HTTP/1.x status line"));
    }
    parts
        .next()
        .filter(|code| code.len() == 3)
        .and_then(|code| code.parse().ok())
        .ok_or(ApiError::Malformed("bad status code"))
}

fn body_length<'a>(headers: impl Iterator<Item = &'a str>) -> Result<usize, ApiError> {
    let mut length = 0;
    for line in headers {
        let (name, value) = line
            .split_once(':')
            .ok_or(ApiError::Malformed("header line without a colon"))?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ApiError::Malformed("chunked bodies are not supported"));
        }
        if name.eq_ignore_ascii_case("content-length") {
            length = value
                .parse()
                .map_err(|_| ApiError::Malformed("bad Content-Length"))?;
        }
    }
    if length > MAX_BODY {
        return Err(ApiError::Malformed("response body too large"));
    }
    Ok(length)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A 2xx response's body, or the error its fault message describes.
fn check_status(response: Response) -> Result<Vec<u8>, ApiError> {
    if (200..300).contains(&response.status) {
        return Ok(response.body);
    }
    Err(ApiError::Status {
        status: response.status,
        fault: fault_message(&response.body),
    })
}

/// Firecracker's `fault_message`, else the body itself, shortened.
fn fault_message(body: &[u8]) -> String {
    if let Ok(fault) = serde_json::from_slice::<Fault>(body) {
        return fault.fault_message;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "no error message".to_owned();
    }
    text.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_CONTENT: &[u8] =
        b"HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n";
    const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 \r\nServer: Firecracker API\r\n\
        Connection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 36\r\n\r\n\
        {\"fault_message\":\"kernel not found\"}";

    #[test]
    fn a_204_without_content_length_has_an_empty_body() {
        let response = parse_response(NO_CONTENT).unwrap().unwrap();
        assert_eq!(
            response,
            Response {
                status: 204,
                body: vec![]
            }
        );
        assert!(check_status(response).is_ok());
    }

    #[test]
    fn an_error_carries_firecrackers_fault_message() {
        let response = parse_response(BAD_REQUEST).unwrap().unwrap();
        assert_eq!(response.status, 400);
        let err = check_status(response).unwrap_err();
        assert!(
            matches!(&err, ApiError::Status { status: 400, fault } if fault == "kernel not found")
        );
        assert_eq!(err.to_string(), "HTTP 400: kernel not found");
        assert!(!err.is_transport());
    }

    #[test]
    fn partial_responses_wait_for_more_bytes() {
        for cut in [10, BAD_REQUEST.len() - 40, BAD_REQUEST.len() - 1] {
            assert_eq!(
                parse_response(&BAD_REQUEST[..cut]).unwrap(),
                None,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_non_json_error_body_is_quoted() {
        let raw = b"HTTP/1.1 500 Internal\r\ncontent-length: 5\r\n\r\noops!";
        let err = check_status(parse_response(raw).unwrap().unwrap()).unwrap_err();
        assert_eq!(err.to_string(), "HTTP 500: oops!");
    }

    #[test]
    fn chunked_and_garbage_responses_are_refused() {
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert!(
            matches!(parse_response(chunked), Err(ApiError::Malformed(m)) if m.contains("chunked"))
        );
        for garbage in [
            &b"SSH-2.0-x\r\n\r\n"[..],
            b"HTTP/1.1 20 \r\n\r\n",
            b"HTTP/1.1 204\r\nbad\r\n\r\n",
        ] {
            assert!(parse_response(garbage).is_err(), "{garbage:?}");
        }
    }

    /// A one-connection fake API that answers in two pieces.
    async fn fake_api(dir: &Path, answer: &'static [u8]) -> ApiClient {
        let socket = dir.join("api.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await.unwrap();
            let (head, rest) = answer.split_at(answer.len() / 2);
            stream.write_all(head).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            stream.write_all(rest).await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        ApiClient::new(socket, Duration::from_secs(2))
    }

    #[tokio::test]
    async fn put_reads_a_response_split_across_reads() {
        let dir = tempfile::tempdir().unwrap();
        let api = fake_api(dir.path(), BAD_REQUEST).await;
        let request = super::super::api::Metrics {
            metrics_path: "/m".into(),
        };
        let err = api.put(&request).await.unwrap_err();
        assert_eq!(err.to_string(), "HTTP 400: kernel not found");
    }

    #[tokio::test]
    async fn a_silent_api_times_out_and_a_missing_one_cannot_connect() {
        let dir = tempfile::tempdir().unwrap();
        let _listener = tokio::net::UnixListener::bind(dir.path().join("api.sock")).unwrap();
        let api = ApiClient::new(dir.path().join("api.sock"), Duration::from_millis(50));
        assert!(matches!(api.get("/").await, Err(ApiError::Timeout(_))));
        let gone = ApiClient::new(dir.path().join("none.sock"), Duration::from_secs(1));
        let err = gone.get("/").await.unwrap_err();
        assert!(err.is_transport() && !gone.is_listening().await, "{err}");
    }

    #[test]
    fn requests_have_a_content_length_and_json_body() {
        let request = format_request("PUT", "/actions", Some(br#"{"a":1}"#));
        let text = String::from_utf8(request).unwrap();
        assert!(text.starts_with("PUT /actions HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("Content-Length: 7\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n{\"a\":1}"), "{text}");
        let get = String::from_utf8(format_request("GET", "/", None)).unwrap();
        assert!(
            !get.contains("Content-Length") && get.ends_with("\r\n\r\n"),
            "{get}"
        );
    }
}
