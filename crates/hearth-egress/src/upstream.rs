//! Another HTTP proxy between hearth and the internet (a tenant's or a
//! user's): every connection goes to it, tunnels with `CONNECT`, plain
//! requests in absolute form, with its credentials as
//! `Proxy-Authorization: Basic`.
//!
//! The credentials are held in a type whose `Debug` says `<redacted>` and
//! that has no `Display`; they are only ever written into the request to
//! the upstream proxy, never into a record, an error or a log.

use std::fmt;
use std::net::SocketAddr;

use base64::Engine;
use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt};

use crate::target::{read_head, HeadError, Target};

/// The upstream proxy's credentials, kept as the header value they make.
#[derive(Clone)]
pub struct ProxyCredentials {
    header: String,
}

impl ProxyCredentials {
    /// `Basic base64(user:password)`.
    pub fn basic(user: &str, password: &str) -> Self {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Self {
            header: format!("Basic {token}"),
        }
    }

    pub(crate) fn header_line(&self) -> String {
        format!("Proxy-Authorization: {}\r\n", self.header)
    }
}

impl fmt::Debug for ProxyCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProxyCredentials(<redacted>)")
    }
}

/// Where the upstream proxy is. The address is the caller's choice and is
/// not subject to the address classes (a company's proxy is often on a
/// private network): the caller must only accept it from whoever may
/// choose it.
#[derive(Clone, Debug)]
pub struct UpstreamProxy {
    pub address: SocketAddr,
    credentials: Option<ProxyCredentials>,
}

impl UpstreamProxy {
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            credentials: None,
        }
    }

    pub fn with_credentials(mut self, credentials: ProxyCredentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The `Proxy-Authorization` line, or nothing.
    pub(crate) fn authorization(&self) -> String {
        self.credentials
            .as_ref()
            .map(ProxyCredentials::header_line)
            .unwrap_or_default()
    }
}

/// Why the upstream proxy did not open the tunnel. Never holds the
/// credentials nor anything the upstream proxy sent beyond its status code
/// (not even its reason phrase).
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("the upstream proxy {proxy} answered {status}")]
    Refused { proxy: SocketAddr, status: u16 },
    #[error("the upstream proxy {proxy} sent no valid answer")]
    Garbled { proxy: SocketAddr },
    #[error("the upstream proxy {proxy} closed or failed")]
    Io {
        proxy: SocketAddr,
        #[source]
        source: HeadError,
    },
    #[error("writing to the upstream proxy {proxy} failed")]
    Write {
        proxy: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Asks the upstream proxy for a tunnel to `target` (by name: the upstream
/// proxy's own rules may be by name) and reads its answer.
pub(crate) async fn open_tunnel<S>(
    stream: &mut S,
    proxy: &UpstreamProxy,
    target: &Target,
    max_head: usize,
) -> Result<(), UpstreamError>
where
    S: AsyncBufRead + AsyncWrite + Unpin,
{
    let authority = target.authority(None);
    let request = format!(
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{}\r\n",
        proxy.authorization()
    );
    let write = async {
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await
    };
    write.await.map_err(|source| UpstreamError::Write {
        proxy: proxy.address,
        source,
    })?;
    let head = read_head(stream, max_head)
        .await
        .map_err(|source| UpstreamError::Io {
            proxy: proxy.address,
            source,
        })?;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let garbled = || UpstreamError::Garbled {
        proxy: proxy.address,
    };
    match response.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(garbled()),
    }
    match response.code {
        Some(200..=299) => Ok(()),
        Some(code) => Err(UpstreamError::Refused {
            proxy: proxy.address,
            status: code,
        }),
        None => Err(garbled()),
    }
}
