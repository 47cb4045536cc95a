//! The client's request head: read with a bound, parsed into a typed
//! request (a tunnel or a forwarded HTTP request) before anything is
//! resolved or connected.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::policy::{is_dns_name, normalize_name};

/// The most header lines a request head may have.
const MAX_HEADERS: usize = 100;

/// The host a request names: a DNS name (normalized) or an IP literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

impl Target {
    /// `host:port` as a request line writes it (`[::1]:443`); the port is
    /// left out when it is `default_port`.
    pub fn authority(&self, default_port: Option<u16>) -> String {
        let host = match &self.host {
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            host => host.to_string(),
        };
        if default_port == Some(self.port) {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// A header of a forwarded request, as the client sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

/// How the body of a forwarded request is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Body {
    None,
    Length(u64),
    Chunked,
}

/// A plain HTTP request to forward (`GET http://host/path`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Forward {
    pub method: String,
    pub target: Target,
    /// Origin-form: `/path?query`.
    pub path: String,
    /// The minor version: HTTP/1.0 or HTTP/1.1.
    pub version: u8,
    pub headers: Vec<Header>,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// `CONNECT host:port`: a tunnel.
    Connect(Target),
    Forward(Forward),
}

impl Request {
    pub fn target(&self) -> &Target {
        match self {
            Self::Connect(target) => target,
            Self::Forward(forward) => &forward.target,
        }
    }
}

/// Why no request head was read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadError {
    #[error("the client closed before sending a request")]
    Closed,
    #[error("the client closed in the middle of the request head")]
    Truncated,
    #[error("the request head is larger than {0} bytes")]
    TooLarge(usize),
    #[error("reading the request head failed")]
    Io(#[source] std::io::Error),
}

/// Why a request head is refused, in words for the 400 answer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadRequest {
    #[error("malformed request head: {0}")]
    Malformed(String),
    #[error("more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    #[error("not a proxy request: name the target as CONNECT host:port or as an absolute URL (GET http://host/path)")]
    NotProxyForm,
    #[error("https:// URLs go through CONNECT")]
    Https,
    #[error("`{0}` is not host:port")]
    BadAuthority(String),
    #[error("credentials in the URL are not forwarded")]
    UserInfo,
    #[error("the request's body length is ambiguous (Content-Length with Transfer-Encoding, or several lengths)")]
    AmbiguousBody,
    #[error("unsupported Transfer-Encoding (only chunked is passed on)")]
    TransferEncoding,
}

/// Reads up to the blank line that ends the head, never more than `max`
/// bytes; what follows the head stays in `reader`.
pub(crate) async fn read_head<R>(reader: &mut R, max: usize) -> Result<Vec<u8>, HeadError>
where
    R: AsyncBufRead + Unpin,
{
    let mut head = Vec::new();
    loop {
        let buf = reader.fill_buf().await.map_err(HeadError::Io)?;
        if buf.is_empty() {
            return Err(if head.is_empty() {
                HeadError::Closed
            } else {
                HeadError::Truncated
            });
        }
        let old = head.len();
        let take = buf.len().min(max - old);
        head.extend_from_slice(&buf[..take]);
        if let Some(end) = head_end(&head, old.saturating_sub(3)) {
            reader.consume(end - old);
            head.truncate(end);
            return Ok(head);
        }
        reader.consume(take);
        if head.len() >= max {
            return Err(HeadError::TooLarge(max));
        }
    }
}

/// The end of the head (after its blank line), searching from `from`;
/// bare LF line ends are accepted like CRLF.
fn head_end(head: &[u8], from: usize) -> Option<usize> {
    (from..head.len()).find_map(|i| {
        if head[i] != b'\n' {
            return None;
        }
        match (head.get(i + 1), head.get(i + 2)) {
            (Some(b'\n'), _) => Some(i + 2),
            (Some(b'\r'), Some(b'\n')) => Some(i + 3),
            _ => None,
        }
    })
}

/// Parses a complete request head.
pub(crate) fn parse_request(head: &[u8]) -> Result<Request, BadRequest> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(BadRequest::Malformed("incomplete".into()));
        }
        Err(httparse::Error::TooManyHeaders) => return Err(BadRequest::TooManyHeaders),
        Err(e) => return Err(BadRequest::Malformed(e.to_string())),
    }
    let (Some(method), Some(uri), Some(version)) = (request.method, request.path, request.version)
    else {
        return Err(BadRequest::Malformed("incomplete request line".into()));
    };
    if method.eq_ignore_ascii_case("CONNECT") {
        return Ok(Request::Connect(parse_authority(uri, None)?));
    }
    let (target, path) = parse_absolute(uri)?;
    let headers = owned_headers(request.headers);
    let body = body_of(&headers)?;
    Ok(Request::Forward(Forward {
        method: method.to_owned(),
        target,
        path,
        version,
        headers,
        body,
    }))
}

/// `http://host[:port]/path?query` into the target and the origin-form.
/// A parsed head's headers, owned.
pub(crate) fn owned_headers(parsed: &[httparse::Header<'_>]) -> Vec<Header> {
    parsed
        .iter()
        .map(|h| Header {
            name: h.name.to_owned(),
            value: h.value.to_vec(),
        })
        .collect()
}

pub(crate) fn parse_absolute(uri: &str) -> Result<(Target, String), BadRequest> {
    let scheme_end = uri.find("://").ok_or(BadRequest::NotProxyForm)?;
    match &uri[..scheme_end] {
        s if s.eq_ignore_ascii_case("http") => {}
        s if s.eq_ignore_ascii_case("https") => return Err(BadRequest::Https),
        _ => return Err(BadRequest::NotProxyForm),
    }
    let rest = &uri[scheme_end + 3..];
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.contains('@') {
        return Err(BadRequest::UserInfo);
    }
    let path = match path.chars().next() {
        None => "/".to_owned(),
        Some('?') => format!("/{path}"),
        Some(_) => path.to_owned(),
    };
    Ok((parse_authority(authority, Some(80))?, path))
}

/// `host:port` or `[v6]:port`; the port may be left out only when there
/// is a default.
pub(crate) fn parse_authority(text: &str, default_port: Option<u16>) -> Result<Target, BadRequest> {
    let bad = || BadRequest::BadAuthority(text.to_owned());
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
        let ip: Ipv6Addr = v6.parse().map_err(|_| bad())?;
        (Host::Ip(IpAddr::V6(ip)), after.strip_prefix(':'))
    } else {
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        };
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            (Host::Ip(IpAddr::V4(ip)), port)
        } else {
            let name = normalize_name(host);
            if !is_dns_name(&name) {
                return Err(bad());
            }
            (Host::Name(name), port)
        }
    };
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(bad)?,
        None if text.ends_with(':') => return Err(bad()),
        None => default_port.ok_or_else(bad)?,
    };
    Ok(Target { host, port })
}

/// The comma-separated values of every header called `name`, trimmed and
/// in lower case.
fn list_values(headers: &[Header], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .flat_map(|h| {
            String::from_utf8_lossy(&h.value)
                .split(',')
                .map(|v| v.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// How the request's body is delimited; refuses the ambiguous cases that
/// request smuggling is made of.
pub(crate) fn body_of(headers: &[Header]) -> Result<Body, BadRequest> {
    let codings = list_values(headers, "transfer-encoding");
    let lengths = list_values(headers, "content-length");
    if !codings.is_empty() {
        if !lengths.is_empty() {
            return Err(BadRequest::AmbiguousBody);
        }
        return match codings.last().map(String::as_str) {
            Some("chunked") => Ok(Body::Chunked),
            _ => Err(BadRequest::TransferEncoding),
        };
    }
    let Some(first) = lengths.first() else {
        return Ok(Body::None);
    };
    if lengths.iter().any(|l| l != first) {
        return Err(BadRequest::AmbiguousBody);
    }
    let length = first
        .parse::<u64>()
        .map_err(|_| BadRequest::Malformed(format!("Content-Length `{first}`")))?;
    Ok(match length {
        0 => Body::None,
        n => Body::Length(n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Request, BadRequest> {
        parse_request(text.as_bytes())
    }

    #[test]
    fn connect_targets() {
        let Request::Connect(t) = parse("CONNECT Login.Example.test:443 HTTP/1.1\r\n\r\n").unwrap()
        else {
            panic!("not a tunnel")
        };
        assert_eq!(t.host, Host::Name("login.example.test".into()));
        assert_eq!(t.port, 443);
        let Request::Connect(t) = parse("CONNECT [::1]:8443 HTTP/1.1\r\n\r\n").unwrap() else {
            panic!("not a tunnel")
        };
        assert_eq!(t.host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(t.authority(None), "[::1]:8443");
        for bad in [
            "CONNECT example.com HTTP/1.1\r\n\r\n",
            "CONNECT example.com:0 HTTP/1.1\r\n\r\n",
            "CONNECT example.com:99999 HTTP/1.1\r\n\r\n",
            "CONNECT exa mple.com:443 HTTP/1.1\r\n\r\n",
            "CONNECT [::1:443 HTTP/1.1\r\n\r\n",
            "CONNECT a:b:443 HTTP/1.1\r\n\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn absolute_form() {
        let Request::Forward(f) =
            parse("GET http://login.example.test:8080/x?y=1#frag HTTP/1.1\r\nHost: h\r\n\r\n")
                .unwrap()
        else {
            panic!("not forwarded")
        };
        assert_eq!(f.target.port, 8080);
        assert_eq!(f.path, "/x?y=1");
        assert_eq!(f.body, Body::None);
        let Request::Forward(f) = parse("GET http://example.com HTTP/1.0\r\n\r\n").unwrap() else {
            panic!("not forwarded")
        };
        assert_eq!((f.target.port, f.path.as_str(), f.version), (80, "/", 0));
        assert_eq!(
            parse("GET /x HTTP/1.1\r\n\r\n"),
            Err(BadRequest::NotProxyForm)
        );
        assert_eq!(
            parse("GET https://a.com/ HTTP/1.1\r\n\r\n"),
            Err(BadRequest::Https)
        );
        assert_eq!(
            parse("GET http://u:p@a.com/ HTTP/1.1\r\n\r\n"),
            Err(BadRequest::UserInfo)
        );
    }

    #[test]
    fn bodies() {
        let body = |head: &str| match parse(head) {
            Ok(Request::Forward(f)) => Ok(f.body),
            Ok(_) => panic!("not forwarded"),
            Err(e) => Err(e),
        };
        let start = "POST http://a.com/ HTTP/1.1\r\n";
        assert_eq!(
            body(&format!("{start}Content-Length: 5\r\n\r\n")),
            Ok(Body::Length(5))
        );
        assert_eq!(
            body(&format!("{start}Transfer-Encoding: gzip, chunked\r\n\r\n")),
            Ok(Body::Chunked)
        );
        assert_eq!(
            body(&format!(
                "{start}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
            )),
            Err(BadRequest::AmbiguousBody)
        );
        assert_eq!(
            body(&format!(
                "{start}Content-Length: 5\r\nContent-Length: 6\r\n\r\n"
            )),
            Err(BadRequest::AmbiguousBody)
        );
        assert_eq!(
            body(&format!("{start}Transfer-Encoding: gzip\r\n\r\n")),
            Err(BadRequest::TransferEncoding)
        );
    }

    #[test]
    fn malformed_heads_are_refused() {
        for bad in [
            "\0\0\0\r\n\r\n",
            "GET\r\n\r\n",
            "GET http://a.com/ HTTP/9\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(BadRequest::Malformed(_))),
                "{bad:?}"
            );
        }
        let many: String = (0..200).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            parse(&format!("GET http://a.com/ HTTP/1.1\r\n{many}\r\n")),
            Err(BadRequest::TooManyHeaders)
        );
    }

    #[tokio::test]
    async fn head_reading_leaves_the_rest() {
        let mut input: &[u8] = b"CONNECT a.com:443 HTTP/1.1\n\nTLS bytes";
        let head = read_head(&mut input, 1024).await.unwrap();
        assert_eq!(head, b"CONNECT a.com:443 HTTP/1.1\n\n");
        assert_eq!(input, b"TLS bytes");
        let mut big: &[u8] = &[b'a'; 4096];
        assert!(matches!(
            read_head(&mut big, 1024).await,
            Err(HeadError::TooLarge(1024))
        ));
        let mut empty: &[u8] = b"";
        assert!(matches!(
            read_head(&mut empty, 1024).await,
            Err(HeadError::Closed)
        ));
    }
}
