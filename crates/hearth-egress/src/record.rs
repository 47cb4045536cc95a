//! One record per client connection, handed to a sink the caller provides
//! (the caller stores them), and counters of what was allowed and refused.
//!
//! A record names the host, port and address, the outcome with its rule,
//! the bytes each way and the times; never a path, a header's value or a
//! byte of the contents.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::policy::Denial;

/// What the client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `CONNECT host:port`.
    Tunnel,
    /// A plain HTTP request in absolute form.
    Forward,
    /// A VM's web traffic redirected by its network (HTTP or TLS, the name
    /// read from the `Host` header or the server name).
    Intercepted,
}

/// How the connection ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Connected and relayed.
    Allowed,
    /// Refused by the policy (answered 403).
    Denied { denial: Denial },
    /// Allowed, but the name did not resolve, the connect failed or timed
    /// out, or the upstream proxy refused (answered 502 or 504).
    Failed { status: u16, reason: String },
    /// No valid request (answered 400, 408 or 431; no status when the
    /// client left before a request).
    BadRequest { status: Option<u16>, reason: String },
}

/// One client connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectionRecord {
    pub started_at: SystemTime,
    pub duration: Duration,
    /// `None` when no request was parsed.
    pub kind: Option<Kind>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// The checked address connected to, or the address that was refused.
    /// Through an upstream proxy: the first of the target's checked
    /// addresses (the upstream proxy connects by name).
    pub address: Option<SocketAddr>,
    /// The upstream proxy the connection went through.
    pub upstream: Option<SocketAddr>,
    pub outcome: Outcome,
    /// Bytes received from the client, its request head included.
    pub bytes_up: u64,
    /// Bytes sent to the client, the proxy's own answers included.
    pub bytes_down: u64,
}

/// Where records go. Called once per connection, after it ended; it must
/// not block (hand the record to a channel or a store's queue).
pub trait RecordSink: Send + Sync + std::fmt::Debug {
    fn record(&self, record: ConnectionRecord);
}

/// A sink that drops records (counters still count).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRecords;

impl RecordSink for NoRecords {
    fn record(&self, _: ConnectionRecord) {}
}

/// Running totals of one proxy.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    connections: AtomicU64,
    allowed: AtomicU64,
    denied_domain: AtomicU64,
    denied_port: AtomicU64,
    denied_address: AtomicU64,
    failed: AtomicU64,
    bad_requests: AtomicU64,
}

/// The counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CounterSnapshot {
    pub connections: u64,
    pub allowed: u64,
    /// Denied by the domain allow-list.
    pub denied_domain: u64,
    pub denied_port: u64,
    /// Denied by an address class, the host's own addresses or the
    /// networks rules.
    pub denied_address: u64,
    pub failed: u64,
    pub bad_requests: u64,
}

impl CounterSnapshot {
    pub fn denied(&self) -> u64 {
        self.denied_domain + self.denied_port + self.denied_address
    }
}

impl Counters {
    pub fn count(&self, outcome: &Outcome) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        let counter = match outcome {
            Outcome::Allowed => &self.allowed,
            Outcome::Denied {
                denial: Denial::Domain { .. },
            } => &self.denied_domain,
            Outcome::Denied {
                denial: Denial::Port { .. },
            } => &self.denied_port,
            Outcome::Denied {
                denial: Denial::Address { .. } | Denial::Network { .. },
            } => &self.denied_address,
            Outcome::Failed { .. } => &self.failed,
            Outcome::BadRequest { .. } => &self.bad_requests,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            connections: read(&self.connections),
            allowed: read(&self.allowed),
            denied_domain: read(&self.denied_domain),
            denied_port: read(&self.denied_port),
            denied_address: read(&self.denied_address),
            failed: read(&self.failed),
            bad_requests: read(&self.bad_requests),
        }
    }
}
