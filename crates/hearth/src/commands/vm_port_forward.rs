//! `hearth vm port-forward ID [LOCAL:]GUEST...`: local TCP ports whose
//! connections reach ports on a VM's loopback, through the API's port
//! WebSocket (`GET /v1/vms/{id}/ports/{port}`) and the VM's agent. The
//! shape of `kubectl port-forward`: it runs until interrupted, one
//! WebSocket per accepted connection, a failed connection reported on
//! stderr without ending the others. An empty binary frame is a
//! half-close, both ways, so a client that shuts its sending side (HTTP
//! clients, `nc -N`) is passed through as such.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hearth_types::api::{ApiError, Vm};
use hearth_types::VmId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::cli::ApiArgs;
use crate::commands::client::{Client, ClientError};

/// Bytes read from a local connection per frame.
const CHUNK: usize = 64 * 1024;

/// One `[LOCAL:]GUEST` pair; a local port of 0 (or none given with `:`)
/// is picked by the system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortPair {
    pub local: u16,
    pub guest: u16,
}

impl FromStr for PortPair {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let port = |p: &str, what: &str, zero_ok: bool| -> Result<u16, String> {
            match p.parse::<u16>() {
                Ok(0) if !zero_ok => Err(format!("{what} port 0 is not a port")),
                Ok(n) if p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
                _ => Err(format!("{what} port {p:?} is not a number from 1 to 65535")),
            }
        };
        let usage =
            "give GUEST, LOCAL:GUEST or :GUEST (a local port the system picks), e.g. 8080:80";
        let pair = || -> Result<PortPair, String> {
            Ok(match s.split_once(':') {
                None => {
                    let guest = port(s, "the guest", false)?;
                    PortPair {
                        local: guest,
                        guest,
                    }
                }
                Some(("", guest)) => PortPair {
                    local: 0,
                    guest: port(guest, "the guest", false)?,
                },
                Some((local, guest)) => PortPair {
                    local: port(local, "the local", true)?,
                    guest: port(guest, "the guest", false)?,
                },
            })
        };
        pair().map_err(|e| format!("{e}; {usage}"))
    }
}

/// Listens on `address` for each pair and forwards until interrupted.
pub fn run(
    api: &ApiArgs,
    id: &VmId,
    address: IpAddr,
    pairs: &[PortPair],
) -> anyhow::Result<ExitCode> {
    // The VM first: an unknown id (or another tenant's) fails at once.
    let _: Vm = Client::new(api)?.get(&format!("/v1/vms/{id}"))?;
    let target = Target::new(api, id)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the port forwarder")?;
    runtime.block_on(forward_all(target, address, pairs))
}

/// Where connections go: the API's port WebSocket of one VM.
#[derive(Clone, Debug)]
struct Target {
    /// `ws://host:port[/prefix]/v1/vms/ID/ports/`
    base: String,
    token: String,
    vm: VmId,
}

impl Target {
    fn new(api: &ApiArgs, id: &VmId) -> Result<Target, ClientError> {
        let token = api
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ClientError::NoToken)?;
        let base = api.url.trim_end_matches('/');
        let rest = base.strip_prefix("http://").ok_or_else(|| ClientError::Api {
            status: 0,
            code: "bad_url".into(),
            message: format!("--url {base}: port forwarding speaks plain ws:// only: give an http:// URL (TLS belongs to a proxy)"),
        })?;
        Ok(Target {
            base: format!("ws://{rest}/v1/vms/{id}/ports/"),
            token: token.to_owned(),
            vm: id.clone(),
        })
    }

    /// Opens the WebSocket to `guest`; a refusal is the server's words.
    async fn open(
        &self,
        guest: u16,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
        String,
    > {
        let mut request = format!("{}{guest}", self.base)
            .into_client_request()
            .map_err(|e| e.to_string())?;
        let bearer = format!("Bearer {}", self.token)
            .parse()
            .map_err(|_| "the token is not a valid header value".to_owned())?;
        request.headers_mut().insert(AUTHORIZATION, bearer);
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(ws),
            Err(WsError::Http(response)) => {
                let body = response.body().clone().unwrap_or_default();
                Err(match serde_json::from_slice::<ApiError>(&body) {
                    Ok(e) => format!("{} ({})", e.message, e.code),
                    Err(_) => format!("the server answered HTTP {}", response.status()),
                })
            }
            Err(e) => Err(format!("the port WebSocket failed: {e}")),
        }
    }
}

async fn forward_all(
    target: Target,
    address: IpAddr,
    pairs: &[PortPair],
) -> anyhow::Result<ExitCode> {
    let mut listeners = Vec::new();
    for pair in pairs {
        let at = SocketAddr::new(address, pair.local);
        let listener = TcpListener::bind(at).await.with_context(|| {
            format!("listening on {at} failed (is the port taken? pick another LOCAL port)")
        })?;
        let local = listener.local_addr()?;
        println!("forwarding {local} to port {} of {}", pair.guest, target.vm);
        listeners.push((listener, pair.guest));
    }
    for (listener, guest) in listeners {
        tokio::spawn(accept_loop(listener, guest, target.clone()));
    }
    wait_for_interrupt().await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_interrupt() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

async fn accept_loop(listener: TcpListener, guest: u16, target: Target) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let target = target.clone();
        tokio::spawn(async move {
            if let Err(why) = forward_one(conn, guest, &target).await {
                eprintln!(
                    "port-forward: a connection to port {guest} of {}: {why}",
                    target.vm
                );
            }
        });
    }
}

/// One local connection, to its end.
async fn forward_one(mut conn: TcpStream, guest: u16, target: &Target) -> Result<(), String> {
    let _ = conn.set_nodelay(true);
    let ws = target.open(guest).await?;
    let (mut to_server, mut from_server) = ws.split();
    let (mut from_local, mut to_local) = conn.split();
    let mut buf = vec![0u8; CHUNK];
    let mut reading = true;
    loop {
        tokio::select! {
            read = from_local.read(&mut buf), if reading => {
                let n = read.unwrap_or(0);
                reading = n > 0;
                // An empty frame says: no more from this side.
                let frame = Message::Binary(buf[..n].to_vec().into());
                to_server.send(frame).await.map_err(|e| format!("sending failed: {e}"))?;
            }
            frame = from_server.next() => match frame {
                Some(Ok(Message::Binary(bytes))) if bytes.is_empty() => {
                    let _ = to_local.shutdown().await;
                }
                Some(Ok(Message::Binary(bytes))) => {
                    if to_local.write_all(&bytes).await.is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return match frame {
                        Some(f) if u16::from(f.code) != 1000 => Err(f.reason.to_string()),
                        _ => Ok(()),
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("the port WebSocket failed: {e}")),
                None => return Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_guest_local_colon_guest_or_colon_guest() {
        let p = |s: &str| s.parse::<PortPair>();
        assert_eq!(
            p("80"),
            Ok(PortPair {
                local: 80,
                guest: 80
            })
        );
        assert_eq!(
            p("8080:80"),
            Ok(PortPair {
                local: 8080,
                guest: 80
            })
        );
        assert_eq!(
            p(":80"),
            Ok(PortPair {
                local: 0,
                guest: 80
            })
        );
        assert_eq!(
            p("0:80"),
            Ok(PortPair {
                local: 0,
                guest: 80
            })
        );
        for bad in [
            "", "0", "80:0", "x", "80:", "1:2:3", "70000", "-1:80", "+80",
        ] {
            let err = p(bad).unwrap_err();
            assert!(err.contains("8080:80"), "{bad}: {err}");
        }
    }
}
