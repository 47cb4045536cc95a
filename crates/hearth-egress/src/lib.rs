//! The host side of the egress proxy of VMs without a NIC.
//!
//! A guest's browser and tools reach the internet only through an HTTP
//! proxy that the agent offers on the guest's loopback; each connection
//! arrives here as a byte stream. This crate serves one such stream: reads
//! the request head (bounded in size and time), checks the target against
//! the tenant's [`Policy`], resolves the name itself and checks every
//! address, connects to a checked address (directly or through an upstream
//! proxy), relays, and records the connection. It knows nothing of VMs:
//! the caller gives it a policy and a stream. See `docs/egress.md`.

mod dns;
mod hosts;
mod intercept;
mod keepalive;
mod net;
mod policy;
mod record;
mod relay;
mod target;
pub mod testing;
mod upstream;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

pub use dns::{DnsCounterSnapshot, DnsResponder};
pub use hosts::StaticHosts;
pub use intercept::Intercepted;
pub use net::{BoxIo, Connector, Io, Resolver, SystemResolver, TcpConnector};
pub use policy::{
    classify, AddressClass, Denial, DomainPattern, Domains, IpNet, Policy, PolicyError, Ports,
};
pub use record::{ConnectionRecord, CounterSnapshot, Kind, NoRecords, Outcome, RecordSink};
pub use target::{Host, Target};
pub use upstream::{ProxyCredentials, UpstreamProxy};

use record::Counters;
use relay::{Counted, Idle, Watched};
use target::{parse_request, read_head, BadRequest, HeadError, Request};

/// Bounds on what one client may make the proxy wait for or hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest request head (request line and headers).
    pub max_head: usize,
    /// How long the client may take to send its request head.
    pub head_timeout: Duration,
    /// How long resolving a name may take.
    pub resolve_timeout: Duration,
    /// How long the upstream proxy may take to answer `CONNECT`.
    pub upstream_timeout: Duration,
    /// How long a tunnel or a forwarded request may pass no byte either
    /// way before the proxy closes it; `None`: as long as both ends keep
    /// it.
    pub idle_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head: 16 * 1024,
            head_timeout: Duration::from_secs(10),
            resolve_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(600)),
        }
    }
}

/// The proxy: the host's resolver and connector, the record sink, the
/// counters. One per host; [`Egress::serve`] once per client stream.
#[derive(Clone)]
pub struct Egress {
    resolver: Arc<dyn Resolver>,
    connector: Arc<dyn Connector>,
    sink: Arc<dyn RecordSink>,
    limits: Limits,
    counters: Arc<Counters>,
}

impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Egress")
            .field("resolver", &self.resolver)
            .field("connector", &self.connector)
            .field("limits", &self.limits)
            .field("counters", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

impl Egress {
    pub fn new(
        resolver: Arc<dyn Resolver>,
        connector: Arc<dyn Connector>,
        sink: Arc<dyn RecordSink>,
    ) -> Self {
        Self {
            resolver,
            connector,
            sink,
            limits: Limits::default(),
            counters: Arc::default(),
        }
    }

    /// The host's resolver, TCP with a 10 s connect timeout.
    pub fn system(sink: Arc<dyn RecordSink>) -> Self {
        Self::new(
            Arc::new(SystemResolver),
            Arc::new(TcpConnector::default()),
            sink,
        )
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn counters(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }

    /// Serves one client connection to its end: one tunnel or one
    /// forwarded request. Never fails: what went wrong is answered to the
    /// client (when it is still there) and is in the record, which goes to
    /// the sink and is returned.
    pub async fn serve<S>(&self, stream: S, policy: &Policy) -> ConnectionRecord
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let started_at = SystemTime::now();
        let start = Instant::now();
        let mut client = BufReader::new(Counted::new(stream));
        let mut seen = Seen::default();
        let outcome = match self.handle(&mut client, policy, &mut seen).await {
            Ok(()) => Outcome::Allowed,
            Err(refusal) => {
                if let Some(status) = refusal.answer {
                    answer(&mut client, status, &refusal.message).await;
                }
                refusal.outcome
            }
        };
        // The client may be gone already; a failed shutdown changes nothing.
        let _ = client.shutdown().await;
        self.finish(started_at, start, seen, outcome, client.get_ref())
    }

    async fn handle<C>(
        &self,
        client: &mut BufReader<Counted<C>>,
        policy: &Policy,
        seen: &mut Seen,
    ) -> Result<(), Refusal>
    where
        C: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let head = tokio::time::timeout(
            self.limits.head_timeout,
            read_head(client, self.limits.max_head),
        )
        .await
        .map_err(|_| Refusal::timeout())?
        .map_err(Refusal::head)?;
        let request = parse_request(&head).map_err(Refusal::bad_request)?;
        let target = request.target().clone();
        seen.kind = Some(match request {
            Request::Connect(_) => Kind::Tunnel,
            Request::Forward(_) => Kind::Forward,
        });
        seen.target = Some(target.clone());
        policy.check_port(target.port).map_err(Refusal::denied)?;
        policy.check_host(&target.host).map_err(Refusal::denied)?;
        let addresses = self.resolve_checked(&target, policy, seen).await?;
        let connected = self.connect(&target, &addresses, policy, seen).await?;
        let idle = Idle::new();
        let mut upstream = BufReader::new(Watched::new(connected, idle.clone()));
        let relayed = self.relay(client, &mut upstream, request, &target, policy);
        tokio::select! {
            relayed = relayed => relayed,
            () = idle.expired(self.limits.idle_timeout) => {
                tracing::debug!(host = %target.host, "closed after being idle");
                Ok(())
            }
        }
    }

    /// Relays an allowed, connected request.
    async fn relay<C, U>(
        &self,
        client: &mut BufReader<Counted<C>>,
        upstream: &mut BufReader<U>,
        request: Request,
        target: &Target,
        policy: &Policy,
    ) -> Result<(), Refusal>
    where
        C: AsyncRead + AsyncWrite + Unpin + Send,
        U: AsyncRead + AsyncWrite + Unpin + Send,
    {
        match request {
            Request::Connect(_) => {
                if let Some(proxy) = policy.upstream() {
                    let opened =
                        upstream::open_tunnel(upstream, proxy, target, self.limits.max_head);
                    tokio::time::timeout(self.limits.upstream_timeout, opened)
                        .await
                        .map_err(|_| {
                            Refusal::failed(
                                GATEWAY_TIMEOUT,
                                format!(
                                    "the upstream proxy {} did not answer in time",
                                    proxy.address
                                ),
                            )
                        })?
                        .map_err(|e| Refusal::failed(BAD_GATEWAY, error_chain(&e)))?;
                }
                let relayed = async {
                    client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await?;
                    client.flush().await?;
                    tokio::io::copy_bidirectional_with_sizes(
                        client,
                        upstream,
                        TUNNEL_BUFFER,
                        TUNNEL_BUFFER,
                    )
                    .await
                };
                if let Err(e) = relayed.await {
                    tracing::debug!(error = %e, "tunnel ended with an error");
                }
            }
            Request::Forward(forward) => {
                let head = relay::forward_head(&forward, policy.upstream());
                if let Err(e) = relay::forward(client, upstream, &head, forward.body).await {
                    tracing::debug!(error = %e, "forwarded request ended with an error");
                }
            }
        }
        Ok(())
    }

    /// The target's addresses, every one checked: a literal is checked as
    /// it is, a name is resolved here and refused if any of its addresses
    /// is refused.
    async fn resolve_checked(
        &self,
        target: &Target,
        policy: &Policy,
        seen: &mut Seen,
    ) -> Result<Vec<IpAddr>, Refusal> {
        let addresses = match &target.host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => {
                let resolved =
                    tokio::time::timeout(self.limits.resolve_timeout, self.resolver.resolve(name))
                        .await
                        .map_err(|_| {
                            Refusal::failed(GATEWAY_TIMEOUT, format!("resolving {name} timed out"))
                        })?
                        .map_err(|e| {
                            Refusal::failed(BAD_GATEWAY, format!("{name} did not resolve: {e}"))
                        })?;
                let mut unique: Vec<IpAddr> = Vec::with_capacity(resolved.len());
                for ip in resolved {
                    if !unique.contains(&ip) {
                        unique.push(ip);
                    }
                }
                unique
            }
        };
        if addresses.is_empty() {
            return Err(Refusal::failed(
                BAD_GATEWAY,
                format!("{} has no address", target.host),
            ));
        }
        for ip in &addresses {
            if let Err(denial) = policy.check_address(&target.host, *ip) {
                seen.address = Some(SocketAddr::new(*ip, target.port));
                return Err(Refusal::denied(denial));
            }
        }
        Ok(addresses)
    }

    /// Connects to the first checked address that answers, or to the
    /// upstream proxy.
    async fn connect(
        &self,
        target: &Target,
        addresses: &[IpAddr],
        policy: &Policy,
        seen: &mut Seen,
    ) -> Result<BoxIo, Refusal> {
        seen.address = Some(SocketAddr::new(addresses[0], target.port));
        let candidates: Vec<SocketAddr> = match policy.upstream() {
            Some(proxy) => {
                seen.upstream = Some(proxy.address);
                vec![proxy.address]
            }
            None => addresses
                .iter()
                .map(|ip| SocketAddr::new(*ip, target.port))
                .collect(),
        };
        let mut last = None;
        for candidate in candidates {
            match self.connector.connect(candidate).await {
                Ok(stream) => {
                    if policy.upstream().is_none() {
                        seen.address = Some(candidate);
                    }
                    return Ok(stream);
                }
                Err(e) => last = Some((candidate, e)),
            }
        }
        let (address, e) = last.expect("at least one candidate");
        let what = match policy.upstream() {
            Some(_) => format!("the upstream proxy {address}"),
            None => format!("{} ({address})", target.authority(None)),
        };
        Err(if e.kind() == io::ErrorKind::TimedOut {
            Refusal::failed(GATEWAY_TIMEOUT, format!("connecting to {what} timed out"))
        } else {
            Refusal::failed(BAD_GATEWAY, format!("connecting to {what} failed: {e}"))
        })
    }
}

/// What is known of the connection so far, for its record.
#[derive(Debug, Default)]
struct Seen {
    kind: Option<Kind>,
    target: Option<Target>,
    address: Option<SocketAddr>,
    upstream: Option<SocketAddr>,
}

/// The buffer of each direction of a tunnel, and of a forwarded request's
/// response: with tokio's default (8 KiB) a tunnelled download on loopback
/// ran at 0.29 of a direct one, with 64 KiB at 0.36-0.44, with 256 KiB
/// (the agent's port window) at 0.49-0.59 (docs/benchmarks.md). Half a
/// MiB per open tunnel, a quarter per forwarded request.
pub(crate) const TUNNEL_BUFFER: usize = 256 * 1024;

type Status = (u16, &'static str);
const BAD_REQUEST: Status = (400, "Bad Request");
const FORBIDDEN: Status = (403, "Forbidden");
const REQUEST_TIMEOUT: Status = (408, "Request Timeout");
const HEAD_TOO_LARGE: Status = (431, "Request Header Fields Too Large");
const BAD_GATEWAY: Status = (502, "Bad Gateway");
const GATEWAY_TIMEOUT: Status = (504, "Gateway Timeout");

/// Why a connection was not relayed: what to answer (if anything) and
/// what to record.
#[derive(Debug)]
struct Refusal {
    answer: Option<Status>,
    message: String,
    outcome: Outcome,
}

impl Refusal {
    fn denied(denial: Denial) -> Self {
        Self {
            answer: Some(FORBIDDEN),
            message: format!("denied by policy: {denial}"),
            outcome: Outcome::Denied { denial },
        }
    }

    fn failed(status: Status, reason: String) -> Self {
        Self {
            answer: Some(status),
            message: reason.clone(),
            outcome: Outcome::Failed {
                status: status.0,
                reason,
            },
        }
    }

    fn client(status: Option<Status>, reason: String) -> Self {
        Self {
            answer: status,
            message: reason.clone(),
            outcome: Outcome::BadRequest {
                status: status.map(|s| s.0),
                reason,
            },
        }
    }

    fn timeout() -> Self {
        Self::client(
            Some(REQUEST_TIMEOUT),
            "the request head did not arrive in time".into(),
        )
    }

    fn head(e: HeadError) -> Self {
        let status = match e {
            HeadError::TooLarge(_) => Some(HEAD_TOO_LARGE),
            // Closed its side: it may still read the answer.
            HeadError::Truncated => Some(BAD_REQUEST),
            HeadError::Closed | HeadError::Io(_) => None,
        };
        Self::client(status, error_chain(&e))
    }

    fn bad_request(e: BadRequest) -> Self {
        let status = match e {
            BadRequest::TooManyHeaders => HEAD_TOO_LARGE,
            _ => BAD_REQUEST,
        };
        Self::client(Some(status), e.to_string())
    }
}

/// An error and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Answers the client with `status` and a one-line plain-text reason.
async fn answer<W: AsyncWrite + Unpin>(client: &mut W, status: Status, message: &str) {
    let body = format!("hearth egress: {message}\n");
    let response = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        status.0,
        status.1,
        body.len()
    );
    let written = async {
        client.write_all(response.as_bytes()).await?;
        client.flush().await
    };
    if let Err(e) = written.await {
        tracing::debug!(error = %e, "the client left before its answer");
    }
}
