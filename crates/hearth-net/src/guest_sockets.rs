//! Sockets inside a VM's namespace, for the host's services that answer
//! the guest there: the resolver on the gateway's port 53, the listeners
//! its web traffic is redirected to, and the outbound connections the
//! egress proxy makes for it (so they leave by the VM's own veth, NAT and
//! host rules, exactly like the guest's traffic would). A socket stays in
//! the namespace it was made in, whatever thread uses it later, so they
//! are made on a thread of their own ([`crate::thread`]) and handed back.

use std::net::{SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};

use crate::addressing::GUEST_GATEWAY;
use crate::host::NetHost;
use crate::names::Slot;
use crate::{netns, thread, NetError};

/// The gateway's port the guest's DNS queries go to (and are redirected
/// to, whatever server they name).
pub const DNS_PORT: u16 = 53;
/// The gateway's port the guest's TCP 80 is redirected to.
pub const INTERCEPT_HTTP_PORT: u16 = 15080;
/// The gateway's port the guest's TCP 443 is redirected to.
pub const INTERCEPT_TLS_PORT: u16 = 15443;

/// The host's listening sockets in one VM's namespace (non-blocking).
#[derive(Debug)]
pub struct GuestListeners {
    pub dns: UdpSocket,
    /// The resolver over TCP, on the same port (RFC 7766).
    pub dns_tcp: TcpListener,
    pub http: TcpListener,
    pub tls: TcpListener,
}

impl NetHost {
    /// Binds the resolver's and the intercepting proxy's sockets on the
    /// gateway address of `slot`'s namespace.
    pub async fn guest_listeners(&self, slot: Slot) -> Result<GuestListeners, NetError> {
        let name = self.prefix().slot_name(slot);
        thread::run(move || async move {
            enter_slot(&name)?;
            let at = |port| SocketAddrV4::new(GUEST_GATEWAY, port);
            let fail = |what: &str, source| NetError::Netlink {
                doing: format!("binding the {what} socket in {name}"),
                source,
            };
            let dns = UdpSocket::bind(at(DNS_PORT)).map_err(|e| fail("DNS", e))?;
            let dns_tcp = TcpListener::bind(at(DNS_PORT)).map_err(|e| fail("DNS over TCP", e))?;
            let http = TcpListener::bind(at(INTERCEPT_HTTP_PORT)).map_err(|e| fail("HTTP", e))?;
            let tls = TcpListener::bind(at(INTERCEPT_TLS_PORT)).map_err(|e| fail("TLS", e))?;
            for set in [
                dns.set_nonblocking(true),
                dns_tcp.set_nonblocking(true),
                http.set_nonblocking(true),
                tls.set_nonblocking(true),
            ] {
                set.map_err(|e| fail("listening", e))?;
            }
            Ok(GuestListeners {
                dns,
                dns_tcp,
                http,
                tls,
            })
        })
        .await
    }

    /// A new, unconnected, non-blocking IPv4 TCP socket in `slot`'s
    /// namespace.
    pub async fn tcp_socket_in(&self, slot: Slot) -> Result<OwnedFd, NetError> {
        let name = self.prefix().slot_name(slot);
        thread::run(move || async move {
            enter_slot(&name)?;
            // SAFETY: socket(2) takes no pointers.
            let fd = unsafe {
                libc::socket(
                    libc::AF_INET,
                    libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    0,
                )
            };
            if fd < 0 {
                return Err(NetError::Netlink {
                    doing: format!("making a TCP socket in {name}"),
                    source: std::io::Error::last_os_error(),
                });
            }
            // SAFETY: fd was just made by socket(2) and nothing else owns it.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .await
    }
}

fn enter_slot(name: &str) -> Result<(), NetError> {
    let ns = netns::open(name)?;
    netns::enter(&ns).map_err(|source| NetError::Enter {
        place: name.to_owned(),
        source,
    })
}
