//! An intercepted plain-HTTP connection, request by request. The guest
//! may keep its connection open and send (or pipeline) several requests
//! on it; each one's name (its `Host`, or the authority of an
//! absolute-form target) is read and checked like the first's. Requests
//! naming the connection's host go on the same upstream connection, their
//! heads and bodies passed on as they are (their framing read to know
//! where the next head starts). A request naming another host ends that
//! upstream connection: its write side is closed, the responses to the
//! requests already passed come back whole, and only then is the new
//! request checked; refused, it is answered 403 and the connection ends;
//! allowed, it goes to that host's own checked address on a new upstream
//! connection. Never to the address checked for another name.

use std::io;

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use crate::relay::{copy_exact, relay_chunked, Counted, Idle, Watched};
use crate::target::{body_of, owned_headers, parse_absolute, parse_authority, read_head};
use crate::target::{BadRequest, Header};
use crate::target::{Body, HeadError, Target};
use crate::{Egress, Policy, Refusal, Seen};

/// One intercepted request head, as the client sent it, and what was
/// read from it.
#[derive(Debug)]
pub(crate) struct Intercepted {
    pub head: Vec<u8>,
    pub target: Target,
    pub body: Body,
    /// After this request the connection may stop being HTTP (`Upgrade`,
    /// `CONNECT`): the rest is passed on as bytes.
    pub upgrade: bool,
}

/// How one upstream connection ended.
enum Ended {
    /// The client or the origin closed, or it was idle too long.
    Closed,
    /// The client sent a request for another host (or one that could not
    /// be read); the upstream connection is done with.
    Next(Result<Intercepted, Refusal>),
}

impl Egress {
    /// Serves an intercepted plain-HTTP connection, its first request
    /// head already read.
    pub(crate) async fn intercept_http<C>(
        &self,
        client: &mut BufReader<Counted<C>>,
        first: Intercepted,
        policy: &Policy,
        seen: &mut Seen,
    ) -> Result<(), Refusal>
    where
        C: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let (read, mut write) = tokio::io::split(client);
        let mut read = BufReader::new(read);
        let mut request = first;
        loop {
            seen.target = Some(request.target.clone());
            policy
                .check_host(&request.target.host)
                .map_err(Refusal::denied)?;
            let addresses = self.resolve_checked(&request.target, policy, seen).await?;
            let connected = self
                .connect(&request.target, &addresses, policy, seen)
                .await?;
            let idle = Idle::new();
            let upstream = Watched::new(connected, idle.clone());
            let session = relay_requests(
                &mut read,
                &mut write,
                upstream,
                request,
                self.limits.max_head,
            );
            let ended = tokio::select! {
                ended = session => ended,
                () = idle.expired(self.limits.idle_timeout) => Ended::Closed,
            };
            match ended {
                Ended::Closed => return Ok(()),
                Ended::Next(next) => request = next?,
            }
        }
    }
}

/// Relays requests for one host on one upstream connection, and the
/// responses back, until either end closes or a request names another
/// host.
async fn relay_requests<R, W, U>(
    read: &mut R,
    write: &mut W,
    upstream: U,
    first: Intercepted,
    max_head: usize,
) -> Ended
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut from_upstream, mut to_upstream) = tokio::io::split(upstream);
    let responses = async {
        tokio::io::copy(&mut from_upstream, write).await?;
        write.flush().await
    };
    let requests = pass_requests(read, &mut to_upstream, first, max_head);
    tokio::pin!(responses, requests);
    let mut after = None;
    let mut requests_done = false;
    loop {
        tokio::select! {
            passed = &mut requests, if !requests_done => {
                requests_done = true;
                match passed {
                    Ok(next) => after = next,
                    Err(e) => {
                        tracing::debug!(error = %e, "intercepted request not passed on whole");
                        return Ended::Closed;
                    }
                }
            }
            answered = &mut responses => {
                if let Err(e) = answered {
                    tracing::debug!(error = %e, "intercepted response not passed back whole");
                }
                break;
            }
        }
    }
    // The origin closed. Requests still being passed (the client's next
    // request not yet read) are not waited for: the client sees its
    // connection close, as it would had it talked to the origin.
    match (requests_done, after) {
        (true, Some(next)) => Ended::Next(next),
        _ => Ended::Closed,
    }
}

/// Passes `first` and the requests after it that name the same host; the
/// first that does not (or cannot be read) is returned, the upstream's
/// write side closed. `None`: the client closed.
async fn pass_requests<R, U>(
    read: &mut R,
    upstream: &mut U,
    first: Intercepted,
    max_head: usize,
) -> io::Result<Option<Result<Intercepted, Refusal>>>
where
    R: AsyncBufRead + Unpin,
    U: AsyncWrite + Unpin,
{
    upstream.write_all(&first.head).await?;
    let mut current = first;
    loop {
        if current.upgrade {
            tokio::io::copy(read, upstream).await?;
            let _ = upstream.shutdown().await;
            return Ok(None);
        }
        match current.body {
            Body::None => {}
            Body::Length(n) => copy_exact(read, upstream, n).await?,
            Body::Chunked => relay_chunked(read, upstream).await?,
        }
        upstream.flush().await?;
        let next = match read_head(read, max_head).await {
            Ok(head) => parse_intercepted(head).map_err(Refusal::bad_request),
            Err(HeadError::Closed) => {
                let _ = upstream.shutdown().await;
                return Ok(None);
            }
            Err(e) => Err(Refusal::head(e)),
        };
        match next {
            Ok(next) if next.target.host == current.target.host => {
                upstream.write_all(&next.head).await?;
                current = next;
            }
            other => {
                let _ = upstream.shutdown().await;
                return Ok(Some(other));
            }
        }
    }
}

/// An intercepted request head: its target from an absolute-form request
/// target (`GET http://host/path`) or else its one `Host` header, always
/// port 80 (the port the guest's connection was sent to).
pub(crate) fn parse_intercepted(head: Vec<u8>) -> Result<Intercepted, BadRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(BadRequest::Malformed("incomplete".into())),
        Err(httparse::Error::TooManyHeaders) => return Err(BadRequest::TooManyHeaders),
        Err(e) => return Err(BadRequest::Malformed(e.to_string())),
    }
    let (Some(method), Some(uri)) = (request.method, request.path) else {
        return Err(BadRequest::Malformed("incomplete request line".into()));
    };
    let headers = owned_headers(request.headers);
    let target = if uri.contains("://") {
        parse_absolute(uri)?.0
    } else {
        parse_authority(&host_header(&headers)?, Some(80))?
    };
    let upgrade = method.eq_ignore_ascii_case("CONNECT")
        || headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("upgrade"));
    let body = body_of(&headers)?;
    Ok(Intercepted {
        head,
        target: Target { port: 80, ..target },
        body,
        upgrade,
    })
}

/// The one `Host` header's name (its port, if any, left out: the
/// connection's own port is used).
fn host_header(headers: &[Header]) -> Result<String, BadRequest> {
    let mut hosts = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    match (hosts.next(), hosts.next()) {
        (Some(h), None) => {
            let text = String::from_utf8_lossy(&h.value).trim().to_owned();
            Ok(match text.rsplit_once(':') {
                Some((name, port)) if !name.ends_with(':') && !port.contains(']') => {
                    name.to_owned()
                }
                _ => text,
            })
        }
        _ => Err(BadRequest::Malformed(
            "an intercepted request needs exactly one Host header".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Host;

    fn target_of(head: &str) -> Result<Target, BadRequest> {
        parse_intercepted(head.as_bytes().to_vec()).map(|r| r.target)
    }

    #[test]
    fn the_host_header_or_an_absolute_target_names_the_host() {
        let name = |n: &str| Host::Name(n.to_owned());
        let t = target_of("GET / HTTP/1.1\r\nHost: Good.Test:8080\r\n\r\n").unwrap();
        assert_eq!((t.host, t.port), (name("good.test"), 80));
        let t = target_of("GET http://other.test/x HTTP/1.1\r\nHost: good.test\r\n\r\n").unwrap();
        assert_eq!(t.host, name("other.test"), "absolute-form wins over Host");
        assert!(target_of("GET / HTTP/1.1\r\n\r\n").is_err());
        assert!(target_of("GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n").is_err());
        let r = parse_intercepted(
            b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\n\r\n".to_vec(),
        )
        .unwrap();
        assert_eq!((r.body, r.upgrade), (Body::Length(3), false));
        let r = parse_intercepted(
            b"GET /ws HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\n\r\n".to_vec(),
        )
        .unwrap();
        assert!(r.upgrade);
    }
}
