//! The CLI's client of `hearth serve`: blocking HTTP over a plain local
//! connection, the same `hearth_types::api` bodies the server uses, and
//! errors that say what to do (start the server, create a token) instead
//! of what the socket said. The token goes only into the `Authorization`
//! header: no error or log line carries it.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use hearth_types::api::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cli::ApiArgs;

/// How long connecting may take before the server is called unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one ordinary request may take (streams have no limit).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of an unexpected (non-JSON) error body is shown.
const SHOWN_BODY: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no API token: create one with `hearth token create` (on the server's host) and export it as HEARTH_TOKEN, or pass --token")]
    NoToken,
    #[error("nothing answered at {url}: is `hearth serve` running at {url}? (--url or HEARTH_URL say where it listens)")]
    Unreachable {
        url: String,
        #[source]
        source: ureq::Error,
    },
    /// The server refused: its message is already meant for people.
    #[error("{message} ({code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("{method} {url} failed")]
    Transport {
        method: &'static str,
        url: String,
        #[source]
        source: ureq::Error,
    },
    #[error("unexpected answer to {method} {url}")]
    Decode {
        method: &'static str,
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A connection to one `hearth serve`, as one token.
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Client {
    pub fn new(args: &ApiArgs) -> Result<Client, ClientError> {
        let token = args
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ClientError::NoToken)?
            .to_owned();
        Ok(Client {
            base: args.url.trim_end_matches('/').to_owned(),
            token,
            agent: http_agent(REQUEST_TIMEOUT),
        })
    }

    /// The same client, waiting up to `timeout` for each answer (for
    /// requests that take as long as the work they ask for).
    pub fn with_answer_timeout(mut self, timeout: Duration) -> Client {
        self.agent = http_agent(timeout);
        self
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.url(path);
        let res = self.agent.get(&url).header("authorization", self.bearer());
        let res = res.call();
        self.decode("GET", url, res)
    }

    pub fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let req = self.agent.post(&url).header("authorization", self.bearer());
        let res = match body {
            Some(body) => {
                let json = serde_json::to_vec(body).map_err(|source| ClientError::Decode {
                    method: "POST",
                    url: url.clone(),
                    source,
                })?;
                req.content_type("application/json").send(&json[..])
            }
            None => req.send_empty(),
        };
        self.decode("POST", url, res)
    }

    /// PUTs `body` as JSON and decodes the JSON answer.
    pub fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let json = serde_json::to_vec(body).map_err(|source| ClientError::Decode {
            method: "PUT",
            url: url.clone(),
            source,
        })?;
        let res = self
            .agent
            .put(&url)
            .header("authorization", self.bearer())
            .content_type("application/json")
            .send(&json[..]);
        self.decode("PUT", url, res)
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.url(path);
        let res = self
            .agent
            .delete(&url)
            .header("authorization", self.bearer())
            .call();
        self.decode("DELETE", url, res)
    }

    /// POSTs `body` as JSON and reads the answer as it comes, line by line
    /// (newline-delimited JSON).
    pub fn post_lines(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<impl BufRead, ClientError> {
        let url = self.url(path);
        let json = serde_json::to_vec(body).map_err(|source| ClientError::Decode {
            method: "POST",
            url: url.clone(),
            source,
        })?;
        let res = self
            .agent
            .post(&url)
            .header("authorization", self.bearer())
            .content_type("application/json")
            .send(&json[..]);
        let res = self.check("POST", &url, res)?;
        Ok(BufReader::new(res.into_body().into_reader()))
    }

    /// PUTs raw bytes and decodes the JSON answer.
    pub fn put_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        bytes: &[u8],
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let res = self
            .agent
            .put(&url)
            .header("authorization", self.bearer())
            .content_type("application/octet-stream")
            .send(bytes);
        self.decode("PUT", url, res)
    }

    /// GETs raw bytes (at most `limit`) and the value of header `name`.
    pub fn get_bytes(
        &self,
        path: &str,
        limit: u64,
        name: &str,
    ) -> Result<(Vec<u8>, Option<String>), ClientError> {
        let url = self.url(path);
        let res = self
            .agent
            .get(&url)
            .header("authorization", self.bearer())
            .call();
        let mut res = self.check("GET", &url, res)?;
        let header = res
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = res
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|source| self.transport("GET", &url, source))?;
        Ok((body, header))
    }

    /// A server-sent event stream: the data of each event as it arrives.
    pub fn events(
        &self,
        path: &str,
    ) -> Result<impl Iterator<Item = std::io::Result<SseEvent>>, ClientError> {
        let url = self.url(path);
        let res = self
            .agent
            .get(&url)
            .header("authorization", self.bearer())
            .header("accept", "text/event-stream")
            .call();
        let res = self.check("GET", &url, res)?;
        let reader = BufReader::new(res.into_body().into_reader());
        Ok(SseEvents::new(reader))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// A 2xx response, or the error it stands for.
    fn check(
        &self,
        method: &'static str,
        url: &str,
        res: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<ureq::http::Response<ureq::Body>, ClientError> {
        let mut res = res.map_err(|source| self.transport(method, url, source))?;
        let status = res.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(res);
        }
        let body = read_limited(res.body_mut().as_reader(), REQUEST_BODY_LIMIT);
        Err(api_error(status, &body))
    }

    fn decode<T: DeserializeOwned>(
        &self,
        method: &'static str,
        url: String,
        res: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let mut res = self.check(method, &url, res)?;
        let body = res
            .body_mut()
            .with_config()
            .limit(REQUEST_BODY_LIMIT)
            .read_to_vec()
            .map_err(|source| self.transport(method, &url, source))?;
        serde_json::from_slice(&body).map_err(|source| ClientError::Decode {
            method,
            url,
            source,
        })
    }

    fn transport(&self, method: &'static str, url: &str, source: ureq::Error) -> ClientError {
        if is_unreachable(&source) {
            return ClientError::Unreachable {
                url: self.base.clone(),
                source,
            };
        }
        ClientError::Transport {
            method,
            url: url.to_owned(),
            source,
        }
    }
}

/// The most of a response body the client reads (a VM list of thousands).
const REQUEST_BODY_LIMIT: u64 = 64 << 20;

/// An HTTP agent that waits up to `answer` for each response.
fn http_agent(answer: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        // hearth serve is local or on the operator's network: a proxy
        // from the environment would only get in the way.
        .proxy(None)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(answer))
        .build()
        .new_agent()
}

fn read_limited(reader: impl Read, limit: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = reader.take(limit).read_to_end(&mut buf);
    buf
}

/// The server's `ApiError`, or as much of an unexpected body as helps.
fn api_error(status: u16, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => ClientError::Api {
            status,
            code: e.code,
            message: e.message,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.trim().chars().take(SHOWN_BODY).collect();
            ClientError::Api {
                status,
                code: format!("http_{status}"),
                message: if text.is_empty() {
                    format!("the server answered HTTP {status}")
                } else {
                    format!("the server answered HTTP {status}: {text}")
                },
            }
        }
    }
}

fn is_unreachable(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::AddrNotAvailable
                | std::io::ErrorKind::HostUnreachable
                | std::io::ErrorKind::NetworkUnreachable
                | std::io::ErrorKind::TimedOut
        ),
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Timeout(t) => matches!(t, ureq::Timeout::Connect | ureq::Timeout::Resolve),
        _ => false,
    }
}

/// One server-sent event: its `event:` name (`message` when none) and its
/// `data:` lines joined by newlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub name: String,
    pub data: String,
}

/// Splits a `text/event-stream` into events, one per blank line; comments
/// and fields other than `event` and `data` are skipped.
struct SseEvents<R> {
    reader: R,
    line: String,
}

impl<R: BufRead> SseEvents<R> {
    fn new(reader: R) -> Self {
        SseEvents {
            reader,
            line: String::new(),
        }
    }
}

impl<R: BufRead> Iterator for SseEvents<R> {
    type Item = std::io::Result<SseEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut name: Option<String> = None;
        let mut data: Option<String> = None;
        let event = |name: Option<String>, data: String| SseEvent {
            name: name.unwrap_or_else(|| "message".to_owned()),
            data,
        };
        loop {
            self.line.clear();
            match self.reader.read_line(&mut self.line) {
                Ok(0) => return data.map(|d| Ok(event(name, d))),
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
            let line = self.line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                match data.take() {
                    Some(d) => return Some(Ok(event(name, d))),
                    None => name = None,
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => name = Some(value.to_owned()),
                "data" => match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_owned()),
                },
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &str) -> Vec<(String, String)> {
        SseEvents::new(text.as_bytes())
            .map(|e| e.unwrap())
            .map(|e| (e.name, e.data))
            .collect()
    }

    fn ev(name: &str, data: &str) -> (String, String) {
        (name.to_owned(), data.to_owned())
    }

    #[test]
    fn sse_events_join_data_lines_and_skip_comments_and_other_fields() {
        let text = ": keep-alive\n\ndata: one\n\nevent: line\ndata: two\ndata:  three\n\nid: 4\ndata:\n\nevent: end\ndata: \"closed\"";
        assert_eq!(
            events(text),
            [
                ev("message", "one"),
                ev("line", "two\n three"),
                ev("message", ""),
                ev("end", "\"closed\""),
            ]
        );
    }

    #[test]
    fn sse_events_accept_crlf_line_ends() {
        assert_eq!(
            events("data: a\r\n\r\ndata: b\r\n\r\n"),
            [ev("message", "a"), ev("message", "b")]
        );
    }

    #[test]
    fn an_api_error_body_gives_the_servers_message() {
        let body = br#"{"code":"not_found","message":"no VM vm-1"}"#;
        let err = api_error(404, body);
        assert_eq!(err.to_string(), "no VM vm-1 (not_found)");
        let err = api_error(502, b"<html>bad gateway</html>");
        assert!(
            err.to_string().contains("HTTP 502: <html>bad gateway"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_token_says_how_to_make_one() {
        let args = ApiArgs {
            url: "http://127.0.0.1:1".into(),
            token: None,
        };
        let err = Client::new(&args).unwrap_err().to_string();
        assert!(err.contains("hearth token create") && err.contains("HEARTH_TOKEN"));
    }

    #[test]
    fn a_refused_connection_asks_whether_serve_runs_and_never_shows_the_token() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args = ApiArgs {
            url: format!("http://127.0.0.1:{port}"),
            token: Some("hth_secret_value".into()),
        };
        let client = Client::new(&args).unwrap();
        let err = client.get::<serde_json::Value>("/v1/vms").unwrap_err();
        let debug = format!("{err:?} {client:?}");
        let text = format!("{:#} {debug}", anyhow::Error::from(err));
        assert!(text.contains("is `hearth serve` running at"), "{text}");
        assert!(!text.contains("hth_secret_value"), "{text}");
    }
}
