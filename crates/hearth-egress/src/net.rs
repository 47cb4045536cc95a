//! The two things the proxy asks of the host's network: resolve a name,
//! connect to an address. Both are traits so that tests give fakes (a
//! resolver that maps names to private addresses, a connector that records
//! every attempt) and can show that no refused address is ever dialled.

use std::fmt::Debug;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream in both directions.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection to an origin or to an upstream proxy.
pub type BoxIo = Box<dyn Io>;

/// Turns a host name into addresses. The proxy checks every address it
/// returns and connects to one of them itself, so nobody resolves the
/// name again between the check and the connect.
#[async_trait]
pub trait Resolver: Send + Sync + Debug {
    async fn resolve(&self, name: &str) -> io::Result<Vec<IpAddr>>;
}

/// The host's resolver (`getaddrinfo` through `tokio::net::lookup_host`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

#[async_trait]
impl Resolver for SystemResolver {
    async fn resolve(&self, name: &str) -> io::Result<Vec<IpAddr>> {
        let found = tokio::net::lookup_host((name, 0)).await?;
        Ok(found.map(|addr| addr.ip()).collect())
    }
}

/// Opens the outbound connection to an address already checked.
#[async_trait]
pub trait Connector: Send + Sync + Debug {
    async fn connect(&self, address: SocketAddr) -> io::Result<BoxIo>;
}

/// TCP with a deadline; a connect that takes longer fails as `TimedOut`.
#[derive(Clone, Copy, Debug)]
pub struct TcpConnector {
    timeout: Duration,
}

impl TcpConnector {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl Default for TcpConnector {
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

#[async_trait]
impl Connector for TcpConnector {
    async fn connect(&self, address: SocketAddr) -> io::Result<BoxIo> {
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(address))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(Box::new(stream))
    }
}
