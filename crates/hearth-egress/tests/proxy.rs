//! The proxy end to end, on loopback only: each test runs its own origin
//! (an echo server, a small HTTP server, a fake upstream proxy) on
//! 127.0.0.1, gives the proxy one end of an in-memory duplex as the client
//! stream (what `agent_link::splice` hands it in production), and a
//! resolver fake that maps names to whatever addresses the test needs.
//! Refused addresses are never dialled: the recording connector would
//! list any attempt, and it dials nothing but loopback anyway.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hearth_egress::testing::{MemorySink, RecordingConnector, StaticResolver};
use hearth_egress::{
    AddressClass, BoxIo, ConnectionRecord, Connector, Denial, Egress, IpNet, Kind, Limits,
    NoRecords, Outcome, Policy, Ports, ProxyCredentials, Resolver, UpstreamProxy,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const NAME: &str = "login.example.test";

struct Proxy {
    egress: Egress,
    resolver: Arc<StaticResolver>,
    connector: Arc<RecordingConnector>,
    sink: Arc<MemorySink>,
}

impl Proxy {
    fn new(resolver: StaticResolver) -> Self {
        let connector = Arc::new(RecordingConnector::default());
        let sink = Arc::new(MemorySink::default());
        let resolver = Arc::new(resolver);
        let egress = Egress::new(resolver.clone(), connector.clone(), sink.clone());
        Self {
            egress,
            resolver,
            connector,
            sink,
        }
    }

    fn resolving(addresses: &[&str]) -> Self {
        Self::new(StaticResolver::default().with(NAME, addresses))
    }

    /// Serves one client stream in a task; returns the client's end.
    fn open(&self, policy: &Policy) -> (DuplexStream, JoinHandle<ConnectionRecord>) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let egress = self.egress.clone();
        let policy = policy.clone();
        let served = tokio::spawn(async move { egress.serve(server, &policy).await });
        (client, served)
    }

    /// Sends `request`, reads the answer to the end.
    async fn exchange(&self, policy: &Policy, request: &[u8]) -> (String, ConnectionRecord) {
        let (mut client, served) = self.open(policy);
        client.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        let record = served.await.unwrap();
        (String::from_utf8_lossy(&answer).into_owned(), record)
    }
}

fn loopback_allowed(policy: Policy) -> Policy {
    policy.allow_network(IpNet::parse("127.0.0.0/8").unwrap())
}

fn allow_name(ports: Ports) -> Policy {
    Policy::allow_list([NAME]).unwrap().with_ports(ports)
}

/// Reads up to the end of a response head.
async fn read_head(client: &mut DuplexStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        client.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    address
}

/// A one-request-per-connection HTTP server: sends each request head it
/// saw to the test, answers by path.
async fn http_server() -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (heads, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                let end = loop {
                    let n = stream.read(&mut buf).await.unwrap();
                    assert!(n > 0, "closed before the head");
                    data.extend_from_slice(&buf[..n]);
                    if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        break end + 4;
                    }
                };
                let head = String::from_utf8(data[..end].to_vec()).unwrap();
                let mut body = data[end..].to_vec();
                let path = head.split(' ').nth(1).unwrap().to_owned();
                heads.send(head).unwrap();
                let answer: Vec<u8> = match path.as_str() {
                    "/length" => {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world"
                            .to_vec()
                    }
                    "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                        5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                        .to_vec(),
                    "/upload" => {
                        while !body.ends_with(b"0\r\n\r\n") {
                            let n = stream.read(&mut buf).await.unwrap();
                            assert!(n > 0, "closed in the body");
                            body.extend_from_slice(&buf[..n]);
                        }
                        let mut answer =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                                .into_bytes();
                        answer.extend_from_slice(&body);
                        answer
                    }
                    _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
                };
                stream.write_all(&answer).await.unwrap();
            });
        }
    });
    (address, seen)
}

fn denial(record: &ConnectionRecord) -> &Denial {
    match &record.outcome {
        Outcome::Denied { denial } => denial,
        other => panic!("not denied: {other:?}"),
    }
}

#[tokio::test]
async fn tunnel_to_an_allowed_name_relays_both_ways_and_is_recorded() {
    let echo = echo_server().await;
    let proxy = Proxy::resolving(&["127.0.0.1"]);
    let policy = loopback_allowed(allow_name(Ports::Only(vec![echo.port()])));
    let (mut client, served) = proxy.open(&policy);

    // Bytes right behind the head (an eager TLS ClientHello) are not lost.
    let request = format!(
        "CONNECT {NAME}:{} HTTP/1.1\r\nHost: {NAME}\r\n\r\n",
        echo.port()
    );
    let eager = b"eager hello";
    client
        .write_all(&[request.as_bytes(), eager].concat())
        .await
        .unwrap();
    let head = read_head(&mut client).await;
    assert_eq!(head, "HTTP/1.1 200 Connection established\r\n\r\n");
    let mut echoed_eager = [0u8; 11];
    client.read_exact(&mut echoed_eager).await.unwrap();
    assert_eq!(&echoed_eager, eager);
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (mut read, mut write) = tokio::io::split(client);
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let mut echoed = Vec::new();
    read.read_to_end(&mut echoed).await.unwrap();
    writer.await.unwrap();
    assert_eq!(echoed, payload);

    let record = served.await.unwrap();
    assert_eq!(record.outcome, Outcome::Allowed);
    assert_eq!(record.kind, Some(Kind::Tunnel));
    assert_eq!(record.host.as_deref(), Some(NAME));
    assert_eq!(record.port, Some(echo.port()));
    assert_eq!(record.address, Some(echo));
    let relayed = eager.len() + payload.len();
    assert_eq!(record.bytes_up, (request.len() + relayed) as u64);
    assert_eq!(record.bytes_down, (head.len() + relayed) as u64);
    // Resolved once, by the proxy, and connected to the address checked.
    assert_eq!(proxy.resolver.lookups(), vec![NAME.to_owned()]);
    assert_eq!(proxy.connector.attempts(), vec![echo]);
    assert_eq!(proxy.sink.records(), vec![record]);
    assert_eq!(proxy.egress.counters().allowed, 1);
}

#[tokio::test]
async fn forwarded_requests_come_back_whole() {
    let (origin, mut heads) = http_server().await;
    let proxy = Proxy::resolving(&["127.0.0.1"]);
    let policy = loopback_allowed(allow_name(Ports::Only(vec![origin.port()])));
    let port = origin.port();

    let request = format!(
        "GET http://{NAME}:{port}/length HTTP/1.1\r\nHost: elsewhere.test\r\n\
         Proxy-Authorization: Basic Z3Vlc3Q6Z3Vlc3Qtc2VjcmV0\r\nProxy-Connection: keep-alive\r\n\
         Accept: text/plain\r\n\r\n"
    );
    let (answer, record) = proxy.exchange(&policy, request.as_bytes()).await;
    assert_eq!(
        answer,
        "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world"
    );
    assert_eq!(record.outcome, Outcome::Allowed);
    assert_eq!(record.kind, Some(Kind::Forward));
    assert_eq!(record.bytes_down, answer.len() as u64);
    let head = heads.recv().await.unwrap();
    assert_eq!(
        head,
        format!("GET /length HTTP/1.1\r\nHost: {NAME}:{port}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n")
    );

    let request = format!("GET http://{NAME}:{port}/chunked HTTP/1.1\r\nHost: {NAME}\r\n\r\n");
    let (answer, _) = proxy.exchange(&policy, request.as_bytes()).await;
    assert_eq!(
        answer,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    );

    let body = "4\r\nsome\r\n5\r\nbytes\r\n0\r\n\r\n";
    let request = format!(
        "POST http://{NAME}:{port}/upload HTTP/1.1\r\nHost: {NAME}\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
    );
    let (answer, _) = proxy.exchange(&policy, request.as_bytes()).await;
    assert_eq!(
        answer,
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    );
    assert_eq!(proxy.connector.attempts().len(), 3);
}

#[tokio::test]
async fn a_domain_outside_the_allow_list_is_refused_before_anything() {
    let proxy = Proxy::resolving(&["127.0.0.1"]);
    let policy = loopback_allowed(allow_name(Ports::Any));
    let (answer, record) = proxy
        .exchange(&policy, b"CONNECT evil.example.net:443 HTTP/1.1\r\n\r\n")
        .await;
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
    assert!(answer.ends_with(
        "hearth egress: denied by policy: `evil.example.net` is not in the allowed domains (rule: domains)\n"
    ));
    assert_eq!(
        denial(&record),
        &Denial::Domain {
            host: "evil.example.net".into()
        }
    );
    assert_eq!(denial(&record).rule(), "domains");
    assert_eq!(record.address, None);
    assert!(proxy.resolver.lookups().is_empty(), "not even resolved");
    assert!(proxy.connector.attempts().is_empty());
    assert_eq!(proxy.egress.counters().denied_domain, 1);
    assert_eq!(proxy.egress.counters().denied(), 1);
}

#[tokio::test]
async fn names_that_resolve_to_refused_addresses_are_never_dialled() {
    for (addresses, class) in [
        (&["127.0.0.1"][..], AddressClass::Loopback),
        (&["10.0.0.1"], AddressClass::Private),
        (&["192.168.1.1"], AddressClass::Private),
        (&["169.254.169.254"], AddressClass::LinkLocal),
        (&["::ffff:10.0.0.1"], AddressClass::Private),
        (&["fd00::1"], AddressClass::Private),
        (&["100.64.0.1"], AddressClass::SharedCgnat),
        // One refused address refuses the name: no connect to the other.
        (&["93.184.216.34", "10.0.0.1"], AddressClass::Private),
    ] {
        let proxy = Proxy::resolving(addresses);
        let policy = allow_name(Ports::Any);
        for request in [
            format!("CONNECT {NAME}:443 HTTP/1.1\r\n\r\n"),
            format!("GET http://{NAME}/latest/meta-data HTTP/1.1\r\n\r\n"),
        ] {
            let (answer, record) = proxy.exchange(&policy, request.as_bytes()).await;
            assert!(
                answer.starts_with("HTTP/1.1 403 Forbidden\r\n"),
                "{addresses:?}: {answer}"
            );
            assert!(answer.contains(&format!("(rule: address class `{}`)", class.name())));
            match denial(&record) {
                Denial::Address { class: seen, .. } => assert_eq!(*seen, class, "{addresses:?}"),
                other => panic!("{other:?}"),
            }
            assert_eq!(denial(&record).rule(), format!("address:{}", class.name()));
            assert!(record.address.is_some());
        }
        assert!(
            proxy.connector.attempts().is_empty(),
            "{addresses:?}: {:?}",
            proxy.connector.attempts()
        );
        assert_eq!(proxy.egress.counters().denied_address, 2);
    }
}

#[tokio::test]
async fn literal_refused_addresses_are_never_dialled() {
    let echo = echo_server().await;
    let proxy = Proxy::resolving(&[]);
    let policy = Policy::any_domain()
        .with_ports(Ports::Any)
        .with_host_addresses(vec!["198.51.100.7".parse().unwrap()]);
    for request in [
        "CONNECT 10.0.0.1:443 HTTP/1.1\r\n\r\n".to_owned(),
        "CONNECT 192.168.1.1:443 HTTP/1.1\r\n\r\n".to_owned(),
        "CONNECT [fd00::1]:443 HTTP/1.1\r\n\r\n".to_owned(),
        "CONNECT [::ffff:10.0.0.1]:443 HTTP/1.1\r\n\r\n".to_owned(),
        "CONNECT 198.51.100.7:443 HTTP/1.1\r\n\r\n".to_owned(),
        format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", echo.port()),
        "GET http://169.254.169.254/latest/meta-data HTTP/1.1\r\n\r\n".to_owned(),
    ] {
        let (answer, record) = proxy.exchange(&policy, request.as_bytes()).await;
        assert!(
            answer.starts_with("HTTP/1.1 403 Forbidden\r\n"),
            "{request}: {answer}"
        );
        assert!(matches!(denial(&record), Denial::Address { .. }));
    }
    assert!(proxy.connector.attempts().is_empty());

    // The same literal with the network allowed goes through.
    let policy = loopback_allowed(policy);
    let (mut client, _) = proxy.open(&policy);
    let request = format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", echo.port());
    client.write_all(request.as_bytes()).await.unwrap();
    assert!(read_head(&mut client).await.contains(" 200 "));
    assert_eq!(proxy.connector.attempts(), vec![echo]);
}

#[tokio::test]
async fn ports_are_restricted_to_80_and_443_by_default() {
    let proxy = Proxy::resolving(&["93.184.216.34"]);
    let policy = Policy::allow_list([NAME]).unwrap();
    let (answer, record) = proxy
        .exchange(
            &policy,
            format!("CONNECT {NAME}:22 HTTP/1.1\r\n\r\n").as_bytes(),
        )
        .await;
    assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
    assert!(answer.contains("port 22 is not allowed (rule: ports)"));
    assert_eq!(denial(&record), &Denial::Port { port: 22 });
    assert!(proxy.connector.attempts().is_empty());
}

const SECRET: &str = "upstream-s3cret-value";

/// A fake upstream proxy: sends each request head to the test; opens
/// tunnels to an echo (it echoes itself), answers plain requests `ok`,
/// or refuses everything with a 407 that echoes the credentials back.
async fn upstream_proxy(refuse: bool) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (heads, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8];
                    if stream.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8(head).unwrap();
                heads.send(head.clone()).unwrap();
                if refuse {
                    let sent = head
                        .lines()
                        .find(|l| l.starts_with("Proxy-Authorization"))
                        .unwrap_or_default();
                    let body = format!("you sent: {sent}");
                    let answer = format!(
                        "HTTP/1.1 407 {sent}\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                } else if head.starts_with("CONNECT ") {
                    stream
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .unwrap();
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                } else {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                }
            });
        }
    });
    (address, seen)
}

fn upstream_policy(address: SocketAddr) -> Policy {
    let credentials = ProxyCredentials::basic("tenant", SECRET);
    Policy::allow_list([NAME])
        .unwrap()
        .with_upstream(UpstreamProxy::new(address).with_credentials(credentials))
}

fn assert_no_secret(text: &str) {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("tenant:{SECRET}"));
    assert!(!text.contains(SECRET), "the secret in: {text}");
    assert!(!text.contains(&encoded), "the encoded secret in: {text}");
}

#[tokio::test]
async fn an_upstream_proxy_gets_the_credentials_and_nothing_else_does() {
    use base64::Engine;
    let (upstream, mut heads) = upstream_proxy(false).await;
    // A public address: checked, never dialled (the upstream proxy is).
    let proxy = Proxy::resolving(&["93.184.216.34"]);
    let policy = upstream_policy(upstream);
    let (mut client, served) = proxy.open(&policy);
    client
        .write_all(format!("CONNECT {NAME}:443 HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(
        read_head(&mut client).await,
        "HTTP/1.1 200 Connection established\r\n\r\n"
    );
    client.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    client.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"ping");
    drop(client);
    let record = served.await.unwrap();

    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("tenant:{SECRET}"));
    assert_eq!(
        heads.recv().await.unwrap(),
        format!(
            "CONNECT {NAME}:443 HTTP/1.1\r\nHost: {NAME}:443\r\nProxy-Authorization: Basic {encoded}\r\n\r\n"
        )
    );
    assert_eq!(record.outcome, Outcome::Allowed);
    assert_eq!(record.upstream, Some(upstream));
    assert_eq!(record.address, Some("93.184.216.34:443".parse().unwrap()));
    assert_eq!(proxy.connector.attempts(), vec![upstream]);

    // A plain request goes to the upstream proxy in absolute form, with
    // hearth's credentials instead of the guest's.
    let (answer, plain) = proxy
        .exchange(
            &policy,
            format!("GET http://{NAME}/x HTTP/1.1\r\nProxy-Authorization: Basic Z3Vlc3Q=\r\n\r\n")
                .as_bytes(),
        )
        .await;
    assert_eq!(answer, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(
        heads.recv().await.unwrap(),
        format!(
            "GET http://{NAME}/x HTTP/1.1\r\nHost: {NAME}\r\nProxy-Authorization: Basic {encoded}\r\nConnection: close\r\n\r\n"
        )
    );

    for text in [
        format!("{record:?}"),
        format!("{plain:?}"),
        format!("{policy:?}"),
        format!("{:?}", proxy.egress),
        serde_json::to_string(&record).unwrap(),
        format!("{:?}", proxy.sink.records()),
    ] {
        assert_no_secret(&text);
    }
}

#[tokio::test]
async fn an_upstream_refusal_is_a_502_without_the_secret() {
    let (upstream, _heads) = upstream_proxy(true).await;
    let proxy = Proxy::resolving(&["93.184.216.34"]);
    let policy = upstream_policy(upstream);
    let (answer, record) = proxy
        .exchange(
            &policy,
            format!("CONNECT {NAME}:443 HTTP/1.1\r\n\r\n").as_bytes(),
        )
        .await;
    assert!(
        answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
        "{answer}"
    );
    assert!(answer.contains(&format!("the upstream proxy {upstream} answered 407")));
    assert_no_secret(&answer);
    assert_no_secret(&format!("{record:?}"));
    assert!(matches!(
        record.outcome,
        Outcome::Failed { status: 502, .. }
    ));
    assert_eq!(proxy.egress.counters().failed, 1);
}

#[tokio::test]
async fn malformed_requests_are_answered_400() {
    let proxy = Proxy::resolving(&["127.0.0.1"]);
    let policy = allow_name(Ports::Any);
    for (request, status) in [
        (&b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n"[..], "400"),
        (b"GET /relative HTTP/1.1\r\nHost: a\r\n\r\n", "400"),
        (b"GET https://login.example.test/ HTTP/1.1\r\n\r\n", "400"),
        (b"CONNECT login.example.test HTTP/1.1\r\n\r\n", "400"),
        (b"CONNECT login.example.test:443 HTTP/1.1\r\nbad header\r\n\r\n", "400"),
        (
            b"POST http://login.example.test/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "400",
        ),
        // Closed in the middle of its head.
        (b"CONNECT login.exam", "400"),
    ] {
        let (mut client, served) = proxy.open(&policy);
        client.write_all(request).await.unwrap();
        if !request.ends_with(b"\r\n\r\n") {
            client.shutdown().await.unwrap();
        }
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{request:?}: {answer}"
        );
        assert!(answer.contains("Connection: close\r\n"));
        let record = served.await.unwrap();
        assert!(
            matches!(record.outcome, Outcome::BadRequest { .. }),
            "{record:?}"
        );
    }
    assert!(proxy.connector.attempts().is_empty());
    assert_eq!(proxy.egress.counters().bad_requests, 7);
}

#[tokio::test]
async fn oversized_heads_are_refused_at_the_limit() {
    let proxy = Proxy::resolving(&["127.0.0.1"]);
    let policy = allow_name(Ports::Any);
    let big = format!(
        "GET http://{NAME}/ HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let (answer, record) = proxy.exchange(&policy, big.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{answer}"
    );
    assert!(answer.contains("larger than 16384 bytes"));
    // It stopped reading at the limit.
    assert!(
        record.bytes_up <= 16 * 1024 + 8 * 1024,
        "{}",
        record.bytes_up
    );
    assert!(proxy.connector.attempts().is_empty());
}

#[tokio::test]
async fn a_slow_client_gets_408_and_a_client_that_leaves_is_recorded() {
    let proxy = Proxy::resolving(&["127.0.0.1"]);
    let egress = proxy.egress.clone().with_limits(Limits {
        head_timeout: Duration::from_millis(200),
        ..Limits::default()
    });
    let policy = allow_name(Ports::Any);
    let (mut client, server) = tokio::io::duplex(4096);
    let served = tokio::spawn({
        let policy = policy.clone();
        async move { egress.serve(server, &policy).await }
    });
    client.write_all(b"CONNECT login.exa").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_string(&mut answer))
        .await
        .expect("answered before the test's deadline")
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    let record = served.await.unwrap();
    assert_eq!(
        record.outcome,
        Outcome::BadRequest {
            status: Some(408),
            reason: "the request head did not arrive in time".into()
        }
    );

    let (client, served) = proxy.open(&policy);
    drop(client);
    let record = served.await.unwrap();
    assert!(matches!(
        record.outcome,
        Outcome::BadRequest { status: None, .. }
    ));
    assert_eq!(record.bytes_up, 0);
}

/// A resolver that never answers.
#[derive(Debug)]
struct Silent;

#[async_trait]
impl Resolver for Silent {
    async fn resolve(&self, _: &str) -> io::Result<Vec<IpAddr>> {
        std::future::pending().await
    }
}

/// A connector whose connects all time out.
#[derive(Debug)]
struct TimingOut;

#[async_trait]
impl Connector for TimingOut {
    async fn connect(&self, _: SocketAddr) -> io::Result<BoxIo> {
        Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
    }
}

#[tokio::test]
async fn failed_connects_are_502_and_timeouts_504() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let proxy = Proxy::resolving(&["127.0.0.1"]);
    let policy = loopback_allowed(allow_name(Ports::Any));
    let request = format!("CONNECT {NAME}:{port} HTTP/1.1\r\n\r\n");
    let (answer, record) = proxy.exchange(&policy, request.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
        "{answer}"
    );
    assert!(answer.contains(&format!(
        "connecting to {NAME}:{port} (127.0.0.1:{port}) failed"
    )));
    assert!(matches!(
        record.outcome,
        Outcome::Failed { status: 502, .. }
    ));

    let unknown = b"CONNECT unknown.example.test:443 HTTP/1.1\r\n\r\n";
    let policy = loopback_allowed(Policy::any_domain().with_ports(Ports::Any));
    let (answer, _) = proxy.exchange(&policy, unknown).await;
    assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
    assert!(answer.contains("unknown.example.test did not resolve"));

    let sink = Arc::new(MemorySink::default());
    let resolver = StaticResolver::default().with(NAME, &["127.0.0.1"]);
    let egress = Egress::new(Arc::new(resolver), Arc::new(TimingOut), sink);
    let (mut client, server) = tokio::io::duplex(4096);
    let served = tokio::spawn(async move { egress.serve(server, &policy).await });
    client.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 504 Gateway Timeout\r\n"),
        "{answer}"
    );
    assert!(matches!(
        served.await.unwrap().outcome,
        Outcome::Failed { status: 504, .. }
    ));

    let connector = Arc::new(RecordingConnector::default());
    let egress =
        Egress::new(Arc::new(Silent), connector.clone(), Arc::new(NoRecords)).with_limits(Limits {
            resolve_timeout: Duration::from_millis(100),
            ..Limits::default()
        });
    let policy = Policy::any_domain();
    let (mut client, server) = tokio::io::duplex(4096);
    let served = tokio::spawn(async move { egress.serve(server, &policy).await });
    client
        .write_all(b"CONNECT slow.example.test:443 HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 504 "), "{answer}");
    assert!(answer.contains("resolving slow.example.test timed out"));
    served.await.unwrap();
    assert!(connector.attempts().is_empty());
}

#[tokio::test]
async fn an_idle_tunnel_is_closed() {
    let echo = echo_server().await;
    let proxy = Proxy::resolving(&["127.0.0.1"]);
    let egress = proxy.egress.clone().with_limits(Limits {
        idle_timeout: Some(Duration::from_millis(300)),
        ..Limits::default()
    });
    let policy = loopback_allowed(allow_name(Ports::Any));
    let (mut client, server) = tokio::io::duplex(4096);
    let served = tokio::spawn(async move { egress.serve(server, &policy).await });
    let request = format!("CONNECT {NAME}:{} HTTP/1.1\r\n\r\n", echo.port());
    client.write_all(request.as_bytes()).await.unwrap();
    read_head(&mut client).await;
    // Traffic keeps it open past the limit.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        client.write_all(b"ping").await.unwrap();
        let mut pong = [0u8; 4];
        client.read_exact(&mut pong).await.unwrap();
    }
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
        .await
        .expect("closed after being idle")
        .unwrap();
    assert!(rest.is_empty());
    let record = served.await.unwrap();
    assert_eq!(record.outcome, Outcome::Allowed);
    assert!(record.duration >= Duration::from_millis(900), "{record:?}");
}

#[tokio::test]
async fn static_hosts_answer_the_name_and_the_policy_still_checks_the_address() {
    use hearth_egress::StaticHosts;
    const FAKE: &str = "auth.fake-provider.test";
    let (origin, mut heads) = http_server().await;
    let inner = Arc::new(StaticResolver::default());
    let hosts = StaticHosts::new(inner.clone())
        .with(FAKE, &["127.0.0.1".parse().unwrap()])
        .unwrap();
    let connector = Arc::new(RecordingConnector::default());
    let egress = Egress::new(Arc::new(hosts), connector.clone(), Arc::new(NoRecords));
    let request = format!(
        "GET http://{FAKE}:{}/length HTTP/1.1\r\nHost: {FAKE}\r\n\r\n",
        origin.port()
    );
    let ports = Ports::Only(vec![origin.port()]);
    let exchange = |policy: Policy| {
        let egress = egress.clone();
        let request = request.clone();
        async move {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let served = tokio::spawn(async move { egress.serve(server, &policy).await });
            client.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            (String::from_utf8(answer).unwrap(), served.await.unwrap())
        }
    };

    // The table's 127.0.0.1 is a loopback address like any other: refused
    // without the network, and never dialled.
    let strict = Policy::allow_list([FAKE])
        .unwrap()
        .with_ports(ports.clone());
    let (answer, record) = exchange(strict).await;
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
    assert_eq!(denial(&record).rule(), "address:loopback");
    assert!(connector.attempts().is_empty());

    let allowed = loopback_allowed(Policy::allow_list([FAKE]).unwrap().with_ports(ports));
    let (answer, record) = exchange(allowed).await;
    assert!(answer.ends_with("hello world"), "{answer}");
    assert_eq!(record.outcome, Outcome::Allowed);
    assert_eq!(
        connector.attempts(),
        [SocketAddr::new([127, 0, 0, 1].into(), origin.port())]
    );
    let head = heads.recv().await.unwrap();
    assert!(
        head.contains(&format!("Host: {FAKE}:{}", origin.port())),
        "{head}"
    );
    assert!(
        inner.lookups().is_empty(),
        "the table answered, not the inner resolver"
    );
}
