//! Web traffic redirected to the proxy by the network (a VM with a NIC: its
//! namespace sends the guest's TCP 80 and 443 here), rather than sent to it
//! as proxy requests. The name comes from what the client sends: the
//! `Host` header of every plain HTTP request on the connection (see
//! `keepalive.rs`), or the server name (SNI) of a TLS ClientHello. From
//! there it is the proxy's own path: the domain rules,
//! the name resolved here and every address checked, a connection to a
//! checked address, the bytes relayed (TLS untouched: the proxy never sees
//! inside it), the record and the counters.

use std::time::{Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::keepalive::parse_intercepted;
use crate::policy::Policy;
use crate::relay::Counted;
use crate::target::{parse_authority, read_head, Target};
use crate::{answer, ConnectionRecord, Egress, Kind, Outcome, Refusal, Seen, TUNNEL_BUFFER};

/// Which protocol an intercepted connection speaks (by the port it was
/// sent to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intercepted {
    /// Plain HTTP, port 80: the name is the `Host` header.
    Http,
    /// TLS, port 443: the name is the ClientHello's server name.
    Tls,
}

impl Intercepted {
    fn port(self) -> u16 {
        match self {
            Intercepted::Http => 80,
            Intercepted::Tls => 443,
        }
    }
}

/// The largest ClientHello read (one TLS record).
const MAX_HELLO: usize = 16 * 1024;

impl Egress {
    /// Serves one intercepted connection to its end, like [`Egress::serve`]:
    /// what went wrong is answered (HTTP: a 403 or 502 with the reason; TLS:
    /// the connection is closed) and recorded.
    pub async fn serve_intercepted<S>(
        &self,
        stream: S,
        protocol: Intercepted,
        policy: &Policy,
    ) -> ConnectionRecord
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let started_at = SystemTime::now();
        let start = Instant::now();
        let mut client = BufReader::new(Counted::new(stream));
        let mut seen = Seen {
            kind: Some(Kind::Intercepted),
            ..Seen::default()
        };
        let outcome = match self
            .intercept(&mut client, protocol, policy, &mut seen)
            .await
        {
            Ok(()) => Outcome::Allowed,
            Err(refusal) => {
                if let (Some(status), Intercepted::Http) = (refusal.answer, protocol) {
                    answer(&mut client, status, &refusal.message).await;
                }
                refusal.outcome
            }
        };
        let _ = client.shutdown().await;
        self.finish(started_at, start, seen, outcome, client.get_ref())
    }

    async fn intercept<C>(
        &self,
        client: &mut BufReader<Counted<C>>,
        protocol: Intercepted,
        policy: &Policy,
        seen: &mut Seen,
    ) -> Result<(), Refusal>
    where
        C: AsyncRead + AsyncWrite + Unpin + Send,
    {
        if protocol == Intercepted::Http {
            let head = tokio::time::timeout(
                self.limits.head_timeout,
                read_head(client, self.limits.max_head),
            )
            .await
            .map_err(|_| Refusal::timeout())?
            .map_err(Refusal::head)?;
            let first = parse_intercepted(head).map_err(Refusal::bad_request)?;
            return self.intercept_http(client, first, policy, seen).await;
        }
        let (first, target) =
            tokio::time::timeout(self.limits.head_timeout, self.read_name(client))
                .await
                .map_err(|_| Refusal::timeout())??;
        seen.target = Some(target.clone());
        policy.check_host(&target.host).map_err(Refusal::denied)?;
        let addresses = self.resolve_checked(&target, policy, seen).await?;
        let mut upstream = self.connect(&target, &addresses, policy, seen).await?;
        let relayed = async {
            upstream.write_all(&first).await?;
            tokio::io::copy_bidirectional_with_sizes(
                client,
                &mut upstream,
                TUNNEL_BUFFER,
                TUNNEL_BUFFER,
            )
            .await
        };
        if let Err(e) = relayed.await {
            tracing::debug!(error = %e, "intercepted connection ended with an error");
        }
        Ok(())
    }

    /// The ClientHello (to be passed on), and the target its server name
    /// names.
    async fn read_name<C>(
        &self,
        client: &mut BufReader<Counted<C>>,
    ) -> Result<(Vec<u8>, Target), Refusal>
    where
        C: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let hello = read_record(client)
            .await
            .map_err(|why| Refusal::client(None, format!("not a TLS ClientHello: {why}")))?;
        let name = server_name(&hello[5..])
            .ok_or_else(|| Refusal::client(None, "the ClientHello names no server (SNI)".into()))?;
        let target = parse_authority(&name, Some(443)).map_err(Refusal::bad_request)?;
        Ok((
            hello,
            Target {
                port: Intercepted::Tls.port(),
                ..target
            },
        ))
    }

    pub(crate) fn finish<C>(
        &self,
        started_at: SystemTime,
        start: Instant,
        seen: Seen,
        outcome: Outcome,
        counted: &Counted<C>,
    ) -> ConnectionRecord {
        let record = ConnectionRecord {
            started_at,
            duration: start.elapsed(),
            kind: seen.kind,
            host: seen.target.as_ref().map(|t| t.host.to_string()),
            port: seen.target.as_ref().map(|t| t.port),
            address: seen.address,
            upstream: seen.upstream,
            outcome,
            bytes_up: counted.read,
            bytes_down: counted.written,
        };
        tracing::debug!(?record, "egress connection");
        self.counters.count(&record.outcome);
        self.sink.record(record.clone());
        record
    }
}

/// One TLS handshake record, header included.
async fn read_record<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Vec<u8>, String> {
    let mut record = vec![0u8; 5];
    reader
        .read_exact(&mut record)
        .await
        .map_err(|e| e.to_string())?;
    if record[0] != 22 {
        return Err(format!("record type {} is not a handshake", record[0]));
    }
    let len = usize::from(u16::from_be_bytes([record[3], record[4]]));
    if len > MAX_HELLO {
        return Err(format!("a {len}-byte record"));
    }
    record.resize(5 + len, 0);
    reader
        .read_exact(&mut record[5..])
        .await
        .map_err(|e| e.to_string())?;
    Ok(record)
}

/// The host name of a ClientHello's server_name extension (RFC 6066),
/// given the handshake message.
fn server_name(hello: &[u8]) -> Option<String> {
    let mut r = Reader(hello);
    (r.u8()? == 1).then_some(())?; // client_hello
    r.take(3)?; // length
    r.take(2 + 32)?; // version, random
    let session = r.u8()?;
    r.take(usize::from(session))?;
    let suites = r.u16()?;
    r.take(usize::from(suites))?;
    let compression = r.u8()?;
    r.take(usize::from(compression))?;
    let mut extensions = Reader(r.prefixed()?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let body = extensions.prefixed()?;
        if kind == 0 {
            let mut list = Reader(body);
            let mut names = Reader(list.prefixed()?);
            while !names.0.is_empty() {
                let name_type = names.u8()?;
                let name = names.prefixed()?;
                if name_type == 0 {
                    return String::from_utf8(name.to_vec()).ok();
                }
            }
        }
    }
    None
}

/// Reads big-endian fields off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A field after its 16-bit length.
    fn prefixed(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello carrying `name` as its server name.
    pub(crate) fn client_hello(name: &str) -> Vec<u8> {
        let n = name.len() as u16;
        let mut sni = Vec::new();
        sni.extend_from_slice(&(n + 3).to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&n.to_be_bytes());
        sni.extend_from_slice(name.as_bytes());
        let mut ext = vec![0, 0];
        ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        ext.extend_from_slice(&sni);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1, 0];
        hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
        hs.extend_from_slice(&body);
        let mut record = vec![22, 3, 1];
        record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        record.extend_from_slice(&hs);
        record
    }

    #[tokio::test]
    async fn the_server_name_is_read_from_a_client_hello() {
        let hello = client_hello("good.test");
        let mut reader = &hello[..];
        let record = read_record(&mut reader).await.unwrap();
        assert_eq!(server_name(&record[5..]).as_deref(), Some("good.test"));
        assert_eq!(server_name(&record[5..record.len() - 3]), None, "truncated");
        let mut http = &b"GET / HTTP/1.1\r\n\r\n"[..];
        assert!(read_record(&mut http).await.is_err());
    }
}
