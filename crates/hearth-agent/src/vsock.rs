//! The guest end of the agent's channel on Firecracker, which has no
//! virtio-serial: the agent listens on an AF_VSOCK stream port and the host
//! connects through Firecracker's vsock Unix socket (`CONNECT <port>`, see
//! docs/firecracker.md). Each accepted connection is one host; the agent
//! serves them one after another, as it does on a virtio-serial port.
//!
//! Unlike the virtio-serial port, a vsock connection is a real socket: a
//! host that hangs up is an end-of-file for the reader and a `BrokenPipe`
//! for the writer (Rust ignores SIGPIPE), and the next host is a new
//! connection, so none of the port's SIGIO bookkeeping is needed.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Why listening on or accepting from a vsock port failed.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error(
        "{0:?} is not a vsock port: give a number from 0 to 4294967294 (the host connects to 1024)"
    )]
    BadPort(String),
    #[error("this kernel has no vsock sockets (AF_VSOCK): the guest kernel needs CONFIG_VIRTIO_VSOCKETS and the VM a vsock device")]
    Unsupported(#[source] io::Error),
    #[error("vsock port {port} is already taken in this guest: is another hearth-agent running?")]
    PortTaken { port: u32 },
    #[error("could not listen on vsock port {port}")]
    Listen {
        port: u32,
        #[source]
        source: io::Error,
    },
    #[error("waiting for a host on vsock port {port} failed")]
    Accept {
        port: u32,
        #[source]
        source: io::Error,
    },
}

/// Parses the value of `--vsock PORT`. `u32::MAX` is `VMADDR_PORT_ANY`,
/// which would bind a random port no host could find.
pub fn parse_port(arg: &str) -> Result<u32, VsockError> {
    arg.parse::<u32>()
        .ok()
        .filter(|port| *port != libc::VMADDR_PORT_ANY)
        .ok_or_else(|| VsockError::BadPort(arg.to_owned()))
}

/// A listening AF_VSOCK stream socket on one port, any CID.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    port: u32,
}

impl Listener {
    /// Listens on `port` for connections to this guest (`VMADDR_CID_ANY`).
    pub fn bind(port: u32) -> Result<Listener, VsockError> {
        let fd = vsock_socket().map_err(VsockError::Unsupported)?;
        let addr = sockaddr_vm(libc::VMADDR_CID_ANY, port);
        // SAFETY: `fd` is an open socket we own; `addr` is a fully
        // initialised sockaddr_vm and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::addr_of!(addr).cast(),
                sockaddr_vm_len(),
            )
        };
        if rc != 0 {
            return Err(match io::Error::last_os_error() {
                e if e.raw_os_error() == Some(libc::EADDRINUSE) => VsockError::PortTaken { port },
                source => VsockError::Listen { port, source },
            });
        }
        // SAFETY: listen(2) on a bound socket we own; it takes no pointers.
        if unsafe { libc::listen(fd.as_raw_fd(), 8) } != 0 {
            let source = io::Error::last_os_error();
            return Err(VsockError::Listen { port, source });
        }
        Ok(Listener { fd, port })
    }

    /// Waits for the next host and hands back its connection as a reader
    /// and a writer (two handles on one socket, so the writer can move to
    /// the threads that send while the reader stays with the session).
    /// Connections that die before they are accepted are skipped.
    pub fn accept(&self) -> Result<(File, File), VsockError> {
        loop {
            // SAFETY: `self.fd` is a listening socket we own; null address
            // pointers ask accept4(2) not to report the peer.
            let fd = unsafe {
                libc::accept4(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd >= 0 {
                // SAFETY: accept4(2) just returned `fd`: open, and ours alone.
                let conn = unsafe { OwnedFd::from_raw_fd(fd) };
                return halves(conn).map_err(|source| self.accept_error(source));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO) => continue,
                _ => return Err(self.accept_error(err)),
            }
        }
    }

    fn accept_error(&self, source: io::Error) -> VsockError {
        VsockError::Accept {
            port: self.port,
            source,
        }
    }
}

/// A connected stream socket as a reader and a writer.
fn halves(conn: OwnedFd) -> io::Result<(File, File)> {
    let reader = File::from(conn);
    let writer = reader.try_clone()?;
    Ok((reader, writer))
}

/// A close-on-exec AF_VSOCK stream socket, so commands the agent runs do
/// not inherit the host's connection.
fn vsock_socket() -> io::Result<OwnedFd> {
    let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, kind, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket(2) just returned `fd`: open, and ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr_vm(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain old data; all zeroes is a valid value
    // (and the kernel wants its reserved and padding bytes zero).
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    addr
}

fn sockaddr_vm_len() -> libc::socklen_t {
    std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::path::Path;

    use super::*;

    /// A port of its own per test process, clear of the agent's 1024.
    fn test_port(offset: u32) -> u32 {
        40_000 + (std::process::id() % 10_000) * 4 + offset
    }

    /// The listener, or `None` after one line when this host has no vsock.
    fn bind_or_skip(port: u32) -> Option<Listener> {
        match Listener::bind(port) {
            Ok(listener) => Some(listener),
            Err(VsockError::Unsupported(e)) => {
                eprintln!("skipped: this host has no AF_VSOCK ({e})");
                None
            }
            Err(e) => panic!("binding vsock port {port}: {e:?}"),
        }
    }

    fn local_port(fd: &OwnedFd) -> u32 {
        let mut addr = sockaddr_vm(0, 0);
        let mut len = sockaddr_vm_len();
        // SAFETY: `addr` is a writable sockaddr_vm of `len` bytes.
        let rc = unsafe {
            libc::getsockname(
                fd.as_raw_fd(),
                std::ptr::addr_of_mut!(addr).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        assert_eq!(addr.svm_cid, libc::VMADDR_CID_ANY);
        addr.svm_port
    }

    fn is_cloexec(fd: &OwnedFd) -> bool {
        // SAFETY: F_GETFD on an open descriptor we own; takes no pointers.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        flags >= 0 && flags & libc::FD_CLOEXEC != 0
    }

    #[test]
    fn the_port_argument_is_a_number_below_port_any() {
        assert_eq!(parse_port("1024").unwrap(), 1024);
        assert_eq!(parse_port("0").unwrap(), 0);
        for bad in ["", "x", "-1", "1024 ", "4294967295", "4294967296"] {
            let err = parse_port(bad).unwrap_err();
            assert!(
                matches!(&err, VsockError::BadPort(p) if p == bad),
                "{err:?}"
            );
            assert!(err.to_string().contains("1024"), "{err}");
        }
    }

    #[test]
    fn the_listener_listens_on_its_port_for_any_cid_and_is_not_inherited() {
        let port = test_port(0);
        let Some(listener) = bind_or_skip(port) else {
            return;
        };
        assert_eq!(local_port(&listener.fd), port);
        assert!(is_cloexec(&listener.fd), "commands must not inherit it");
    }

    #[test]
    fn a_taken_port_says_another_agent_has_it() {
        let port = test_port(1);
        let Some(_first) = bind_or_skip(port) else {
            return;
        };
        let err = Listener::bind(port).unwrap_err();
        assert!(
            matches!(err, VsockError::PortTaken { port: p } if p == port),
            "{err:?}"
        );
        assert!(err.to_string().contains("another hearth-agent"), "{err}");
    }

    /// The halves of an accepted connection, shown on a Unix socket pair
    /// (the same stream-socket calls as on a vsock connection).
    #[test]
    fn the_halves_carry_bytes_both_ways_and_see_the_hangup() {
        let (host, guest) = UnixStream::pair().unwrap();
        let (mut reader, mut writer) = halves(OwnedFd::from(guest)).unwrap();
        writer.write_all(b"hello").unwrap();
        let mut host = host;
        let mut got = [0u8; 5];
        host.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        host.write_all(b"welcome").unwrap();
        drop(host);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"welcome", "then end-of-file: the host hung up");
        let err = writer.write_all(b"late").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    /// A real vsock round trip needs a local transport: the vsock_loopback
    /// module (CID 1). Without it, this says so and checks nothing more.
    #[test]
    fn a_local_host_connects_and_talks_over_vsock_loopback() {
        if !Path::new("/sys/module/vsock_loopback").exists() {
            eprintln!("skipped: no vsock_loopback module here (modprobe vsock_loopback)");
            return;
        }
        let port = test_port(2);
        let Some(listener) = bind_or_skip(port) else {
            return;
        };
        let host = std::thread::spawn(move || {
            let fd = vsock_socket().unwrap();
            let addr = sockaddr_vm(libc::VMADDR_CID_LOCAL, port);
            // SAFETY: `fd` is an open socket we own; `addr` is initialised.
            let rc = unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    std::ptr::addr_of!(addr).cast(),
                    sockaddr_vm_len(),
                )
            };
            assert_eq!(rc, 0, "{}", io::Error::last_os_error());
            let mut stream = File::from(fd);
            stream.write_all(b"ping").unwrap();
            let mut pong = [0u8; 4];
            stream.read_exact(&mut pong).unwrap();
            pong
        });
        let (mut reader, mut writer) = listener.accept().unwrap();
        let mut ping = [0u8; 4];
        reader.read_exact(&mut ping).unwrap();
        assert_eq!(&ping, b"ping");
        writer.write_all(b"pong").unwrap();
        assert_eq!(&host.join().unwrap(), b"pong");
    }
}
