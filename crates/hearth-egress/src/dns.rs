//! A small DNS responder for guests with a NIC: it answers the guest's
//! queries (UDP, and TCP as RFC 7766 has it) itself, resolving names through the host's [`Resolver`]
//! (or a static table in front of it), so the names a guest can learn are
//! the ones its [`Policy`] allows and the addresses it learns are the ones
//! the policy would let it connect to.
//!
//! A name the domain rules refuse is answered `REFUSED`, not `NXDOMAIN`:
//! the name may well exist, and `NXDOMAIN` is cached by stub resolvers as
//! a fact about the name; `REFUSED` says "this server will not answer you",
//! which is the truth, and tools print it as such. A name whose every
//! address the policy refuses is `REFUSED` too (never an address the guest
//! may not reach). Only A queries get addresses (the guest network is
//! IPv4); other types of an allowed name get an empty answer.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::net::Resolver;
use crate::policy::Policy;
use crate::target::Host;

/// The wire format's numbers this responder uses.
const HEADER: usize = 12;
const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const NOERROR: u8 = 0;
const FORMERR: u8 = 1;
const SERVFAIL: u8 = 2;
const NXDOMAIN: u8 = 3;
const NOTIMP: u8 = 4;
const REFUSED: u8 = 5;
/// How long a guest may keep an answer: short, so a changed policy or
/// address is seen soon.
const TTL_SECS: u32 = 30;
/// The largest query read; a longer datagram is not a query of ours.
const MAX_QUERY: usize = 1232;
/// The largest answer sent over UDP (no EDNS): a longer one goes out
/// truncated (TC set, no answers), and the client asks again over TCP.
const MAX_UDP_ANSWER: usize = 512;
/// How long a TCP client may take to send each query (its length and its
/// bytes), and may stay idle between queries, before it is closed.
const TCP_QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The most TCP clients served at once, per VM; more wait to be accepted.
const MAX_TCP_CLIENTS: usize = 32;

/// What the responder did, per VM.
#[derive(Debug, Default)]
pub struct DnsCounters {
    queries: AtomicU64,
    answered: AtomicU64,
    refused_domain: AtomicU64,
    refused_address: AtomicU64,
    failed: AtomicU64,
}

/// A copy of [`DnsCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DnsCounterSnapshot {
    pub queries: u64,
    pub answered: u64,
    /// Names the domain rules refuse.
    pub refused_domain: u64,
    /// Names whose every address the policy refuses.
    pub refused_address: u64,
    /// Malformed queries and names that did not resolve.
    pub failed: u64,
}

impl DnsCounterSnapshot {
    pub fn refused(&self) -> u64 {
        self.refused_domain + self.refused_address
    }
}

impl DnsCounters {
    pub fn snapshot(&self) -> DnsCounterSnapshot {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DnsCounterSnapshot {
            queries: read(&self.queries),
            answered: read(&self.answered),
            refused_domain: read(&self.refused_domain),
            refused_address: read(&self.refused_address),
            failed: read(&self.failed),
        }
    }

    fn count(&self, rcode: Rcode) {
        let counter = match rcode {
            Rcode::Answer => &self.answered,
            Rcode::RefusedDomain => &self.refused_domain,
            Rcode::RefusedAddress => &self.refused_address,
            Rcode::Other(_) => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why an answer has its code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rcode {
    Answer,
    RefusedDomain,
    RefusedAddress,
    Other(u8),
}

impl Rcode {
    fn wire(self) -> u8 {
        match self {
            Rcode::Answer => NOERROR,
            Rcode::RefusedDomain | Rcode::RefusedAddress => REFUSED,
            Rcode::Other(code) => code,
        }
    }
}

/// One query's question, as read.
#[derive(Debug, PartialEq, Eq)]
struct Question {
    id: u16,
    recursion_desired: bool,
    /// Lower case, no trailing dot.
    name: String,
    qtype: u16,
    qclass: u16,
    /// The question's bytes, copied into the answer.
    raw: Vec<u8>,
}

/// The responder of one VM: a resolver, its counters.
#[derive(Clone, Debug)]
pub struct DnsResponder {
    resolver: Arc<dyn Resolver>,
    counters: Arc<DnsCounters>,
    resolve_timeout: Duration,
}

impl DnsResponder {
    pub fn new(resolver: Arc<dyn Resolver>) -> Self {
        Self {
            resolver,
            counters: Arc::default(),
            resolve_timeout: Duration::from_secs(5),
        }
    }

    pub fn counters(&self) -> DnsCounterSnapshot {
        self.counters.snapshot()
    }

    /// Answers every datagram on `socket` until the task is dropped; each
    /// query in a task of its own, so a slow name never holds up another.
    pub async fn serve(self, socket: UdpSocket, policy: Arc<Policy>) {
        let socket = Arc::new(socket);
        let mut buf = vec![0u8; MAX_QUERY];
        loop {
            let (n, peer) = match socket.recv_from(&mut buf).await {
                Ok(got) => got,
                Err(e) => {
                    tracing::debug!(error = %e, "dns: receiving");
                    continue;
                }
            };
            let query = buf[..n].to_vec();
            let (me, socket, policy) = (self.clone(), socket.clone(), policy.clone());
            tokio::spawn(async move {
                if let Some(answer) = me.answer(&query, &policy).await {
                    let _ = socket.send_to(&truncated_for_udp(answer), peer).await;
                }
            });
        }
    }

    /// Answers the queries of every client on `listener` (DNS over TCP,
    /// each message after its 2-byte length), a bounded number at once,
    /// until the task is dropped.
    pub async fn serve_tcp(self, listener: TcpListener, policy: Arc<Policy>) {
        let clients = Arc::new(Semaphore::new(MAX_TCP_CLIENTS));
        loop {
            let Ok(permit) = clients.clone().acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "dns: accepting over TCP");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (me, policy) = (self.clone(), policy.clone());
            tokio::spawn(async move {
                if let Err(e) = me.answer_stream(stream, &policy, TCP_QUERY_TIMEOUT).await {
                    tracing::debug!(error = %e, "dns: a TCP client");
                }
                drop(permit);
            });
        }
    }

    /// Answers one TCP client's queries, in order, until it closes, sends
    /// what is not a query, or takes longer than `timeout` over one.
    async fn answer_stream(
        &self,
        mut stream: TcpStream,
        policy: &Policy,
        timeout: Duration,
    ) -> std::io::Result<()> {
        loop {
            let query = match tokio::time::timeout(timeout, read_message(&mut stream)).await {
                Ok(Ok(Some(query))) => query,
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no whole query in time",
                    ))
                }
            };
            let Some(answer) = self.answer(&query, policy).await else {
                return Ok(());
            };
            let len = u16::try_from(answer.len()).unwrap_or(u16::MAX);
            let mut framed = len.to_be_bytes().to_vec();
            framed.extend_from_slice(&answer[..usize::from(len)]);
            stream.write_all(&framed).await?;
        }
    }

    /// The answer to one query; `None` for what is not a query at all.
    pub async fn answer(&self, query: &[u8], policy: &Policy) -> Option<Vec<u8>> {
        self.counters.queries.fetch_add(1, Ordering::Relaxed);
        let question = match parse_question(query) {
            Ok(q) => q,
            Err(Some(id)) => {
                self.counters.count(Rcode::Other(FORMERR));
                return Some(header(id, false, FORMERR, 0, 0));
            }
            Err(None) => return None,
        };
        let (rcode, addresses) = self.decide(&question, policy).await;
        self.counters.count(rcode);
        Some(encode(&question, rcode.wire(), &addresses))
    }

    async fn decide(&self, q: &Question, policy: &Policy) -> (Rcode, Vec<Ipv4Addr>) {
        if q.qclass != CLASS_IN {
            return (Rcode::Other(NOTIMP), Vec::new());
        }
        let host = match q.name.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(q.name.clone()),
        };
        if policy.check_host(&host).is_err() {
            return (Rcode::RefusedDomain, Vec::new());
        }
        if q.qtype != TYPE_A {
            return (Rcode::Answer, Vec::new());
        }
        let lookup = tokio::time::timeout(self.resolve_timeout, self.resolver.resolve(&q.name));
        let resolved = match lookup.await {
            Ok(Ok(found)) => found,
            Ok(Err(_)) => return (Rcode::Other(NXDOMAIN), Vec::new()),
            Err(_) => return (Rcode::Other(SERVFAIL), Vec::new()),
        };
        let v4: Vec<Ipv4Addr> = resolved
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .collect();
        let allowed: Vec<Ipv4Addr> = v4
            .iter()
            .copied()
            .filter(|ip| policy.check_address(&host, IpAddr::V4(*ip)).is_ok())
            .collect();
        match (v4.is_empty(), allowed.is_empty()) {
            (true, _) => (Rcode::Answer, Vec::new()),
            (false, true) => (Rcode::RefusedAddress, Vec::new()),
            (false, false) => (Rcode::Answer, allowed),
        }
    }
}

/// One length-prefixed message of a TCP client; `None` when it closed
/// between messages.
async fn read_message(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_QUERY {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a {len}-byte query (at most {MAX_QUERY})"),
        ));
    }
    let mut query = vec![0u8; len];
    stream.read_exact(&mut query).await?;
    Ok(Some(query))
}

/// `answer` as UDP may carry it: over [`MAX_UDP_ANSWER`] bytes, its
/// header and question only, with TC set (RFC 1035 4.2.1).
fn truncated_for_udp(mut answer: Vec<u8>) -> Vec<u8> {
    if answer.len() <= MAX_UDP_ANSWER {
        return answer;
    }
    let question_end = HEADER
        + read_name(&answer, HEADER)
            .map(|(_, end)| end - HEADER + 4)
            .unwrap_or(0);
    answer.truncate(question_end.min(answer.len()));
    answer[2] |= 0x02;
    answer[6..8].copy_from_slice(&[0, 0]);
    answer
}

/// The question of a standard query. `Err(Some(id))`: a query, malformed
/// (answer FORMERR); `Err(None)`: not a query (no answer).
fn parse_question(query: &[u8]) -> Result<Question, Option<u16>> {
    if query.len() < HEADER {
        return Err(None);
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    let (flags, qdcount) = (query[2], u16::from_be_bytes([query[4], query[5]]));
    let is_response = flags & 0x80 != 0;
    let opcode = (flags >> 3) & 0x0f;
    if is_response {
        return Err(None);
    }
    if opcode != 0 || qdcount != 1 {
        return Err(Some(id));
    }
    let (name, end) = read_name(query, HEADER).ok_or(Some(id))?;
    let fixed = query.get(end..end + 4).ok_or(Some(id))?;
    Ok(Question {
        id,
        recursion_desired: flags & 0x01 != 0,
        name,
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
        raw: query[HEADER..end + 4].to_vec(),
    })
}

/// A name of plain labels (a question has no compression) from `at`: the
/// name in lower case, and where it ends.
fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = usize::from(*msg.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        let label = msg.get(at..at + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += len;
    }
    let name = labels.join(".");
    (name.len() <= 253).then_some((name, at))
}

fn header(id: u16, rd: bool, rcode: u8, qd: u16, an: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER);
    out.extend_from_slice(&id.to_be_bytes());
    out.push(0x80 | u8::from(rd));
    out.push(0x80 | rcode);
    for count in [qd, an, 0, 0] {
        out.extend_from_slice(&count.to_be_bytes());
    }
    out
}

fn encode(q: &Question, rcode: u8, addresses: &[Ipv4Addr]) -> Vec<u8> {
    let count = u16::try_from(addresses.len()).unwrap_or(u16::MAX);
    let mut out = header(q.id, q.recursion_desired, rcode, 1, count);
    out.extend_from_slice(&q.raw);
    for ip in addresses.iter().take(usize::from(count)) {
        out.extend_from_slice(&[0xc0, HEADER as u8]);
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL_SECS.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::StaticHosts;
    use crate::policy::IpNet;
    use crate::testing::StaticResolver;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    fn rcode(answer: &[u8]) -> u8 {
        answer[3] & 0x0f
    }

    fn responder() -> DnsResponder {
        let hosts = StaticHosts::new(Arc::new(StaticResolver::default()))
            .with("good.test", &["203.0.113.2".parse().unwrap()])
            .unwrap()
            .with("bad.test", &["203.0.113.2".parse().unwrap()])
            .unwrap()
            .with("inside.test", &["10.1.2.3".parse().unwrap()])
            .unwrap();
        DnsResponder::new(Arc::new(hosts))
    }

    #[tokio::test]
    async fn allowed_names_get_their_addresses_and_others_are_refused() {
        let dns = responder();
        let policy = Policy::allow_list(["good.test", "*.test"]).unwrap();
        let ok = dns.answer(&query("Good.Test", 1), &policy).await.unwrap();
        assert_eq!(rcode(&ok), NOERROR);
        assert_eq!(&ok[6..8], &[0, 1], "one answer");
        assert_eq!(&ok[ok.len() - 4..], &[203, 0, 113, 2]);
        assert_eq!(ok[..2], [0x12, 0x34], "the query's id");

        let only_good = Policy::allow_list(["good.test"]).unwrap();
        let no = dns.answer(&query("bad.test", 1), &only_good).await.unwrap();
        assert_eq!(rcode(&no), REFUSED);
        let private = dns.answer(&query("inside.test", 1), &policy).await.unwrap();
        assert_eq!(rcode(&private), REFUSED, "never a private address");
        let denied = Policy::any_domain().deny_network(IpNet::parse("203.0.113.0/24").unwrap());
        let no = dns.answer(&query("good.test", 1), &denied).await.unwrap();
        assert_eq!(rcode(&no), REFUSED, "never a denied address");
        let six = dns.answer(&query("good.test", 28), &policy).await.unwrap();
        assert_eq!((rcode(&six), six[7]), (NOERROR, 0), "AAAA: empty");
        let counted = dns.counters();
        assert_eq!((counted.answered, counted.refused()), (2, 3), "{counted:?}");
    }

    #[tokio::test]
    async fn malformed_queries_are_answered_formerr_or_not_at_all() {
        let dns = responder();
        let policy = Policy::any_domain();
        assert!(dns.answer(&[1, 2, 3], &policy).await.is_none());
        let mut truncated = query("good.test", 1);
        truncated.truncate(truncated.len() - 3);
        let bad = dns.answer(&truncated, &policy).await.unwrap();
        assert_eq!(rcode(&bad), FORMERR);
        let mut response = query("good.test", 1);
        response[2] |= 0x80;
        assert!(dns.answer(&response, &policy).await.is_none());
        let missing = dns
            .answer(&query("nowhere.test", 1), &policy)
            .await
            .unwrap();
        assert_eq!(rcode(&missing), NXDOMAIN);
    }

    /// One query over a TCP connection: its answer.
    async fn ask_tcp(stream: &mut TcpStream, query: &[u8]) -> Vec<u8> {
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        stream.write_all(&framed).await.unwrap();
        read_message(stream).await.unwrap().expect("an answer")
    }

    #[tokio::test]
    async fn queries_over_tcp_get_the_same_answers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let policy = Arc::new(Policy::allow_list(["good.test"]).unwrap());
        let served = tokio::spawn(responder().serve_tcp(listener, policy));
        let mut stream = TcpStream::connect(at).await.unwrap();
        let ok = ask_tcp(&mut stream, &query("good.test", 1)).await;
        assert_eq!(rcode(&ok), NOERROR);
        assert_eq!(&ok[ok.len() - 4..], &[203, 0, 113, 2]);
        // A second query on the same connection (RFC 7766 6.2.1).
        let no = ask_tcp(&mut stream, &query("bad.test", 1)).await;
        assert_eq!(rcode(&no), REFUSED);
        let mut oversized = 2000u16.to_be_bytes().to_vec();
        oversized.extend_from_slice(&[0; 2000]);
        stream.write_all(&oversized).await.unwrap();
        let mut rest = Vec::new();
        let closed = stream.read_to_end(&mut rest).await;
        assert!(
            closed.is_err() || rest.is_empty(),
            "closed without an answer"
        );
        served.abort();
    }

    #[tokio::test]
    async fn a_slow_tcp_client_is_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let policy = Policy::any_domain();
        let dns = responder();
        let timeout = Duration::from_millis(200);
        let served = tokio::spawn(async move { dns.answer_stream(server, &policy, timeout).await });
        // A length and half a query, then nothing: slowloris.
        let q = query("good.test", 1);
        client
            .write_all(&(q.len() as u16).to_be_bytes())
            .await
            .unwrap();
        client.write_all(&q[..5]).await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("the server gave up on the client")
            .unwrap();
        assert_eq!(ended.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest).await;
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn long_answers_are_truncated_on_udp_and_whole_on_tcp() {
        let many: Vec<IpAddr> = (1..=40u8)
            .map(|i| IpAddr::V4(Ipv4Addr::new(203, 0, 113, i)))
            .collect();
        let hosts = StaticHosts::new(Arc::new(StaticResolver::default()))
            .with("many.test", &many)
            .unwrap();
        let dns = DnsResponder::new(Arc::new(hosts));
        let q = query("many.test", 1);
        let whole = dns.answer(&q, &Policy::any_domain()).await.unwrap();
        assert_eq!(u16::from_be_bytes([whole[6], whole[7]]), 40);
        assert!(whole.len() > MAX_UDP_ANSWER);
        let cut = truncated_for_udp(whole.clone());
        assert_eq!(cut.len(), q.len(), "header and question only");
        assert_eq!(cut[2] & 0x02, 0x02, "TC set");
        assert_eq!(&cut[6..8], &[0, 0]);
        assert_eq!(&cut[HEADER..], &q[HEADER..]);
        let short = dns
            .answer(&query("many.test", 28), &Policy::any_domain())
            .await
            .unwrap();
        assert_eq!(
            truncated_for_udp(short.clone()),
            short,
            "short answers pass"
        );
    }
}
