//! What the egress proxy costs a download, all on loopback: the same
//! bytes from a local origin straight (client -> origin) and through a
//! CONNECT tunnel of the proxy (client -> proxy -> origin, the proxy
//! resolving the name with a fixed table, checking the address, connecting
//! with the real `TcpConnector`). The client reaches the proxy over a
//! loopback TCP socket here; in production the stream comes from the
//! agent channel instead. Runs alternate so the machine's noise hits both
//! alike.
//!
//! Prints the median throughput of each and their ratio, and the median
//! time per connection from the client's connect to the first byte of the
//! origin's answer (direct: connect, send, read; tunnel: connect, CONNECT,
//! read the 200, send, read): the difference is the proxy's added latency.
//!
//! `cargo bench -p hearth-egress --bench tunnel` (RUNS, default 7; MIB,
//! default 128; CONNECTIONS, default 200).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_egress::testing::StaticResolver;
use hearth_egress::{Egress, IpNet, NoRecords, Policy, Ports, TcpConnector};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NAME: &str = "origin.bench.test";

fn main() {
    let runs = env_number("RUNS", 7);
    let mib = env_number("MIB", 128);
    let connections = env_number("CONNECTIONS", 200);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(bench(runs, mib, connections));
}

async fn bench(runs: usize, mib: usize, connections: usize) {
    let size = mib << 20;
    let origin = origin(size).await;
    let proxy = proxy().await;

    let mut direct = Vec::new();
    let mut tunnel = Vec::new();
    for _ in 0..runs {
        direct.push(download(direct_stream(origin, b'd').await, size).await);
        tunnel.push(download(tunnel_stream(proxy, origin, b'd').await, size).await);
    }
    let (direct, tunnel) = (median(direct), median(tunnel));
    let rate = |d: Duration| size as f64 / d.as_secs_f64() / f64::from(1 << 20);
    println!(
        "download of {mib} MiB, median of {runs} alternating: direct {direct:.2?} ({:.0} MiB/s), \
         through the CONNECT tunnel {tunnel:.2?} ({:.0} MiB/s), throughput ratio {:.2}",
        rate(direct),
        rate(tunnel),
        direct.as_secs_f64() / tunnel.as_secs_f64()
    );

    let mut direct = Vec::new();
    let mut tunnel = Vec::new();
    for _ in 0..connections {
        let start = Instant::now();
        first_byte(direct_stream(origin, b'p').await).await;
        direct.push(start.elapsed());
        let start = Instant::now();
        first_byte(tunnel_stream(proxy, origin, b'p').await).await;
        tunnel.push(start.elapsed());
    }
    let (direct, tunnel) = (median(direct), median(tunnel));
    println!(
        "connect to first byte, median of {connections} alternating: direct {direct:.2?}, \
         through the tunnel {tunnel:.2?}, added per connection {:.2?}",
        tunnel.saturating_sub(direct)
    );
}

/// Reads one command byte: `d` sends `size` bytes, `p` sends one; then
/// closes.
async fn origin(size: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let data: Arc<[u8]> = (0..size).map(|i| (i % 251) as u8).collect();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            stream.set_nodelay(true).unwrap();
            let data = data.clone();
            tokio::spawn(async move {
                let mut command = [0u8];
                stream.read_exact(&mut command).await.unwrap();
                let answer = if command[0] == b'd' { &data[..] } else { b"!" };
                stream.write_all(answer).await.unwrap();
            });
        }
    });
    address
}

/// The proxy on a loopback listener, one `serve` per connection.
async fn proxy() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let resolver = StaticResolver::default().with(NAME, &["127.0.0.1"]);
    let egress = Egress::new(
        Arc::new(resolver),
        Arc::new(TcpConnector::default()),
        Arc::new(NoRecords),
    );
    let policy = Policy::allow_list([NAME])
        .unwrap()
        .with_ports(Ports::Any)
        .allow_network(IpNet::parse("127.0.0.0/8").unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            stream.set_nodelay(true).unwrap();
            let egress = egress.clone();
            let policy = policy.clone();
            tokio::spawn(async move { egress.serve(stream, &policy).await });
        }
    });
    address
}

async fn direct_stream(origin: SocketAddr, command: u8) -> TcpStream {
    let mut stream = TcpStream::connect(origin).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream.write_all(&[command]).await.unwrap();
    stream
}

async fn tunnel_stream(proxy: SocketAddr, origin: SocketAddr, command: u8) -> TcpStream {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let request = format!("CONNECT {NAME}:{} HTTP/1.1\r\n\r\n", origin.port());
    stream.write_all(request.as_bytes()).await.unwrap();
    let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
    let mut answer = vec![0u8; established.len()];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer, established);
    stream.write_all(&[command]).await.unwrap();
    stream
}

async fn download(mut stream: TcpStream, size: usize) -> Duration {
    let start = Instant::now();
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, size);
    start.elapsed()
}

async fn first_byte(mut stream: TcpStream) {
    let mut byte = [0u8];
    stream.read_exact(&mut byte).await.unwrap();
    assert_eq!(&byte, b"!");
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
