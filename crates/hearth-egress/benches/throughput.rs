//! What the egress proxy costs an HTTP download, all on loopback: a local
//! HTTP server serves a large object (256 MiB by default) and a small
//! one; the client fetches them straight (client -> server), as a
//! forwarded request (`GET http://127.0.0.1:PORT/big` to the proxy) and
//! through a CONNECT tunnel (HTTP inside it), the proxy being the real
//! thing: `Egress::system` (the host's resolver, the real `TcpConnector`)
//! with `Egress::serve` per connection behind a TCP listener, and a
//! policy that lets 127.0.0.1 through only by `allow_network`. Rounds
//! alternate so the machine's noise hits each path alike.
//!
//! Prints the median throughput of each path and its ratio to the
//! straight one, then the time to the first byte of the small object
//! (from connect to the first byte of the answer), median of 50 rounds:
//! proxied minus straight is the latency the proxy adds per connection.
//!
//! `cargo bench -p hearth-egress --bench throughput` (ROUNDS, default 5;
//! MIB, default 256; TTFB_ROUNDS, default 50).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_egress::{Egress, IpNet, NoRecords, Policy, Ports};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the client reaches the server.
#[derive(Clone, Copy, Debug)]
enum Path {
    Straight,
    Forward,
    Tunnel,
}

impl Path {
    const ALL: [Path; 3] = [Path::Straight, Path::Forward, Path::Tunnel];

    fn name(self) -> &'static str {
        match self {
            Path::Straight => "straight",
            Path::Forward => "forwarded (GET http://...)",
            Path::Tunnel => "CONNECT tunnel",
        }
    }
}

fn main() {
    let rounds = env_number("ROUNDS", 5);
    let mib = env_number("MIB", 256);
    let ttfb_rounds = env_number("TTFB_ROUNDS", 50);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(bench(rounds, mib, ttfb_rounds));
}

async fn bench(rounds: usize, mib: usize, ttfb_rounds: usize) {
    let size = mib << 20;
    let server = http_server(size).await;
    let proxy = proxy(server.port()).await;
    let get = |path: Path, object: &'static str| fetch(path, proxy, server, object);

    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); Path::ALL.len()];
    for round in 1..=rounds {
        let mut line = format!("round {round}:");
        for (i, path) in Path::ALL.into_iter().enumerate() {
            let (elapsed, _, body) = get(path, "/big").await;
            assert_eq!(body, size, "{path:?}: the whole object");
            line.push_str(&format!(
                " {} {:.0} MiB/s;",
                path.name(),
                rate(size, elapsed)
            ));
            times[i].push(elapsed);
        }
        eprintln!("{line}");
    }
    let straight = median(&mut times[0]);
    println!("download of {mib} MiB, median of {rounds} alternating rounds:");
    for (i, path) in Path::ALL.into_iter().enumerate() {
        let t = median(&mut times[i]);
        println!(
            "  {:<28} {t:>9.2?} {:>6.0} MiB/s  ratio {:.2}",
            path.name(),
            rate(size, t),
            straight.as_secs_f64() / t.as_secs_f64()
        );
    }

    let mut firsts: Vec<Vec<Duration>> = vec![Vec::new(); Path::ALL.len()];
    for _ in 0..ttfb_rounds {
        for (i, path) in Path::ALL.into_iter().enumerate() {
            let (_, first, body) = get(path, "/small").await;
            assert_eq!(body, SMALL.len());
            firsts[i].push(first);
        }
    }
    let straight = median(&mut firsts[0]);
    println!("connect to the first byte of a small object, median of {ttfb_rounds}:");
    for (i, path) in Path::ALL.into_iter().enumerate() {
        let t = median(&mut firsts[i]);
        println!(
            "  {:<28} {t:>9.2?}  added {:.2?}",
            path.name(),
            t.saturating_sub(straight)
        );
    }
}

const SMALL: &[u8] = b"hello, small object\n";

/// `GET /big` answers `size` bytes, `GET /small` a line; one request per
/// connection, `Connection: close`.
async fn http_server(size: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let big: Arc<[u8]> = (0..size).map(|i| (i % 251) as u8).collect();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            stream.set_nodelay(true).unwrap();
            let big = big.clone();
            tokio::spawn(async move {
                let head = read_head(&mut stream).await;
                let body: &[u8] = if head.starts_with("GET /big ") {
                    &big
                } else {
                    SMALL
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: \
                     application/octet-stream\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(answer.as_bytes()).await.unwrap();
                stream.write_all(body).await.unwrap();
            });
        }
    });
    address
}

/// The proxy as production builds it, on a loopback listener: any domain
/// on the server's port, 127.0.0.1 let through only by the allowed
/// network.
async fn proxy(port: u16) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let egress = Egress::system(Arc::new(NoRecords));
    let policy = Policy::any_domain()
        .with_ports(Ports::Only(vec![port]))
        .allow_network(IpNet::parse("127.0.0.1/32").unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            stream.set_nodelay(true).unwrap();
            let (egress, policy) = (egress.clone(), policy.clone());
            tokio::spawn(async move { egress.serve(stream, &policy).await });
        }
    });
    address
}

/// Fetches `object` by `path`: (connect to last byte, connect to first
/// byte of the answer, body bytes).
async fn fetch(
    path: Path,
    proxy: SocketAddr,
    server: SocketAddr,
    object: &str,
) -> (Duration, Duration, usize) {
    let start = Instant::now();
    let mut stream = match path {
        Path::Straight => connect(server).await,
        Path::Forward | Path::Tunnel => connect(proxy).await,
    };
    let target = match path {
        Path::Forward => format!("http://{server}{object}"),
        Path::Straight | Path::Tunnel => object.to_owned(),
    };
    if let Path::Tunnel = path {
        let request = format!("CONNECT {server} HTTP/1.1\r\nHost: {server}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let request = format!("GET {target} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256 << 10];
    let n = stream.read(&mut buf).await.unwrap();
    let first = start.elapsed();
    let mut received = buf[..n].to_vec();
    let end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed in the head");
        received.extend_from_slice(&buf[..n]);
    };
    assert!(received.starts_with(b"HTTP/1.1 200"), "{path:?}: not a 200");
    let mut body = received.len() - end;
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        body += n;
    }
    (start.elapsed(), first, body)
}

async fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads byte by byte up to the end of a head (small heads only).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

fn rate(size: usize, elapsed: Duration) -> f64 {
    size as f64 / elapsed.as_secs_f64() / f64::from(1 << 20)
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
