//! Intercepted plain HTTP on real sockets: the guest's side is a TCP
//! connection on loopback handed to `serve_intercepted` (what the VM's
//! intercepting listener does), the origins are keep-alive HTTP servers
//! on 127.0.0.2 and 127.0.0.3. Every request on a kept-alive or
//! pipelined connection names its own host, and each is checked.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use hearth_egress::testing::{MemorySink, StaticResolver};
use hearth_egress::{
    BoxIo, ConnectionRecord, Connector, Egress, Intercepted, IpNet, Outcome, Policy, TcpConnector,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Dials, for each address the proxy asks for, the origin the test put
/// there (its port is the test's, not 80); remembers every attempt.
#[derive(Debug, Default)]
struct Origins {
    at: HashMap<IpAddr, SocketAddr>,
    attempts: Mutex<Vec<IpAddr>>,
}

#[async_trait]
impl Connector for Origins {
    async fn connect(&self, address: SocketAddr) -> io::Result<BoxIo> {
        assert_eq!(address.port(), 80, "intercepted HTTP goes to port 80");
        self.attempts.lock().unwrap().push(address.ip());
        let origin = self
            .at
            .get(&address.ip())
            .ok_or_else(|| io::Error::new(io::ErrorKind::ConnectionRefused, "no origin there"))?;
        TcpConnector::default().connect(*origin).await
    }
}

/// A keep-alive origin: answers every request on a connection with
/// `<label> <Host> <path>` (Content-Length framed) until the client
/// closes.
async fn origin(ip: &str, label: &'static str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer_requests(stream, label));
        }
    });
    address
}

async fn answer_requests(stream: TcpStream, label: &str) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            lines.push(line.trim_end().to_owned());
        }
        let path = lines[0].split(' ').nth(1).unwrap_or_default().to_owned();
        let host = lines
            .iter()
            .find_map(|l| l.strip_prefix("Host: "))
            .unwrap_or("-");
        let body = format!("{label} {host} {path}");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

struct Setup {
    egress: Egress,
    origins: Arc<Origins>,
    sink: Arc<MemorySink>,
    policy: Policy,
}

/// a.test and b.test are allowed, at two addresses; c.test is refused by
/// the domain rules though it is at a.test's address.
async fn setup() -> Setup {
    let mut at = HashMap::new();
    at.insert("127.0.0.2".parse().unwrap(), origin("127.0.0.2", "A").await);
    at.insert("127.0.0.3".parse().unwrap(), origin("127.0.0.3", "B").await);
    let origins = Arc::new(Origins {
        at,
        ..Origins::default()
    });
    let resolver = StaticResolver::default()
        .with("a.test", &["127.0.0.2"])
        .with("b.test", &["127.0.0.3"])
        .with("c.test", &["127.0.0.2"]);
    let sink = Arc::new(MemorySink::default());
    let egress = Egress::new(Arc::new(resolver), origins.clone(), sink.clone());
    let policy = Policy::allow_list(["a.test", "b.test"])
        .unwrap()
        .allow_network(IpNet::parse("127.0.0.0/8").unwrap());
    Setup {
        egress,
        origins,
        sink,
        policy,
    }
}

/// A guest connection: the client's end, and the proxy serving the other.
async fn connect(setup: &Setup) -> (TcpStream, JoinHandle<ConnectionRecord>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let egress = setup.egress.clone();
    let policy = setup.policy.clone();
    let served = tokio::spawn(async move {
        egress
            .serve_intercepted(server, Intercepted::Http, &policy)
            .await
    });
    (client, served)
}

/// Reads one Content-Length framed response: its status line and body.
async fn response(client: &mut BufReader<TcpStream>) -> (String, String) {
    let mut status = String::new();
    client.read_line(&mut status).await.unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        client.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(n) = line.strip_prefix("Content-Length: ") {
            length = n.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; length];
    client.read_exact(&mut body).await.unwrap();
    (
        status.trim_end().to_owned(),
        String::from_utf8(body).unwrap(),
    )
}

fn get(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

fn assert_denied_name(record: &ConnectionRecord, name: &str) {
    assert!(
        matches!(record.outcome, Outcome::Denied { .. }),
        "{:?}",
        record.outcome
    );
    assert_eq!(record.host.as_deref(), Some(name));
}

#[tokio::test]
async fn a_kept_alive_connection_cannot_reach_a_refused_name_at_an_allowed_address() {
    let setup = setup().await;
    let (client, served) = connect(&setup).await;
    let mut client = BufReader::new(client);
    client
        .get_mut()
        .write_all(get("a.test", "/1").as_bytes())
        .await
        .unwrap();
    assert_eq!(
        response(&mut client).await,
        ("HTTP/1.1 200 OK".into(), "A a.test /1".into())
    );
    // Again on the same connection: the same origin connection serves it.
    client
        .get_mut()
        .write_all(get("a.test", "/2").as_bytes())
        .await
        .unwrap();
    assert_eq!(response(&mut client).await.1, "A a.test /2");
    // c.test is at the very address a.test was checked for: refused all
    // the same.
    client
        .get_mut()
        .write_all(get("c.test", "/secret").as_bytes())
        .await
        .unwrap();
    let (status, body) = response(&mut client).await;
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    assert!(body.contains("c.test"), "{body}");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "the connection ends after the refusal");
    let record = served.await.unwrap();
    assert_denied_name(&record, "c.test");
    assert_eq!(setup.egress.counters().denied(), 1);
    assert_eq!(setup.sink.records().len(), 1);
    let a: IpAddr = "127.0.0.2".parse().unwrap();
    assert_eq!(*setup.origins.attempts.lock().unwrap(), vec![a]);
}

#[tokio::test]
async fn pipelined_requests_each_go_to_their_own_name_or_are_refused() {
    let setup = setup().await;
    let (client, served) = connect(&setup).await;
    let mut client = BufReader::new(client);
    let pipelined = [
        get("a.test", "/1"),
        get("a.test", "/2"),
        get("b.test", "/3"),
        "GET http://c.test/4 HTTP/1.1\r\nHost: a.test\r\n\r\n".to_owned(),
        get("a.test", "/never"),
    ]
    .concat();
    client
        .get_mut()
        .write_all(pipelined.as_bytes())
        .await
        .unwrap();
    assert_eq!(response(&mut client).await.1, "A a.test /1");
    assert_eq!(response(&mut client).await.1, "A a.test /2");
    assert_eq!(
        response(&mut client).await.1,
        "B b.test /3",
        "b.test's request went to b.test's own address"
    );
    // Absolute-form names the target, whatever the Host header says.
    let (status, _) = response(&mut client).await;
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(
        rest.is_empty(),
        "nothing after the refusal: {}",
        String::from_utf8_lossy(&rest)
    );
    assert_denied_name(&served.await.unwrap(), "c.test");
    assert_eq!(setup.egress.counters().denied(), 1);
    let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
    assert_eq!(*setup.origins.attempts.lock().unwrap(), vec![a, b]);
}

#[tokio::test]
async fn a_client_that_closes_after_its_requests_is_an_allowed_connection() {
    let setup = setup().await;
    let (client, served) = connect(&setup).await;
    let mut client = BufReader::new(client);
    let both = [get("a.test", "/1"), get("b.test", "/2")].concat();
    client.get_mut().write_all(both.as_bytes()).await.unwrap();
    client.get_mut().shutdown().await.unwrap();
    assert_eq!(response(&mut client).await.1, "A a.test /1");
    assert_eq!(response(&mut client).await.1, "B b.test /2");
    let record = served.await.unwrap();
    assert_eq!(record.outcome, Outcome::Allowed);
    assert_eq!(setup.egress.counters().denied(), 0);
}
