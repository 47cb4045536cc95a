//! Fakes of the host's network for tests, here and in the crates that
//! wire the proxy: a resolver with a fixed table, a connector that records
//! every attempt and dials loopback only, a sink that keeps the records.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::net::{BoxIo, Connector, Resolver, TcpConnector};
use crate::record::{ConnectionRecord, RecordSink};

/// Resolves the names it was given, and no other; remembers every name
/// it was asked.
#[derive(Debug, Default)]
pub struct StaticResolver {
    names: HashMap<String, Vec<IpAddr>>,
    lookups: Mutex<Vec<String>>,
}

impl StaticResolver {
    pub fn with(mut self, name: &str, addresses: &[&str]) -> Self {
        let addresses = addresses
            .iter()
            .map(|a| a.parse().expect("an IP address"))
            .collect();
        self.names.insert(name.to_owned(), addresses);
        self
    }

    /// The names looked up so far, in order.
    pub fn lookups(&self) -> Vec<String> {
        self.lookups.lock().expect("not poisoned").clone()
    }
}

#[async_trait]
impl Resolver for StaticResolver {
    async fn resolve(&self, name: &str) -> io::Result<Vec<IpAddr>> {
        self.lookups
            .lock()
            .expect("not poisoned")
            .push(name.to_owned());
        self.names
            .get(name)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown to the test resolver"))
    }
}

/// Records every address it is asked to connect to; connects for real
/// only to loopback, and refuses anything else without dialling it.
#[derive(Debug, Default)]
pub struct RecordingConnector {
    attempts: Mutex<Vec<SocketAddr>>,
}

impl RecordingConnector {
    pub fn attempts(&self) -> Vec<SocketAddr> {
        self.attempts.lock().expect("not poisoned").clone()
    }
}

#[async_trait]
impl Connector for RecordingConnector {
    async fn connect(&self, address: SocketAddr) -> io::Result<BoxIo> {
        self.attempts.lock().expect("not poisoned").push(address);
        if !address.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the test connector dials loopback only",
            ));
        }
        TcpConnector::default().connect(address).await
    }
}

/// Keeps every record.
#[derive(Debug, Default)]
pub struct MemorySink {
    records: Mutex<Vec<ConnectionRecord>>,
}

impl MemorySink {
    pub fn records(&self) -> Vec<ConnectionRecord> {
        self.records.lock().expect("not poisoned").clone()
    }
}

impl RecordSink for MemorySink {
    fn record(&self, record: ConnectionRecord) {
        self.records.lock().expect("not poisoned").push(record);
    }
}
