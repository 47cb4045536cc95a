//! The host end of Firecracker's hybrid vsock: the guest's AF_VSOCK ports
//! are reached through one Unix socket (`uds_path` of `PUT /vsock`).
//!
//! A host-initiated connection is a plain Unix connection to `uds_path`
//! followed by a text handshake: the host writes `CONNECT <port>\n`, and
//! Firecracker answers `OK <host port>\n` once a guest socket listening on
//! `<port>` accepted; from then on the stream is the guest's. When nothing
//! in the guest listens, Firecracker hangs up instead. A guest-initiated
//! connection to port P goes to a Unix socket the host listens on at
//! `<uds_path>_P` (hearth does not use those: its agent listens).
//!
//! [`AgentEndpoint`] hides the difference from QEMU's virtio-serial socket,
//! so the host side of the agent link connects with one call.

use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_types::BackendKind;

/// The vsock port the guest agent listens on: one constant for both ends.
pub use hearth_agent_proto::AGENT_VSOCK_PORT;
/// The guest's context id; 0-2 are reserved (2 is the host). One vsock
/// device per VM, so every VM can use the same.
pub const GUEST_CID: u32 = 3;
/// `OK 4294967295\n` is 14 bytes; anything longer is not Firecracker.
const MAX_ANSWER: usize = 32;
/// How often a connect to a socket with a full queue is tried again.
const RETRY_FULL_QUEUE: Duration = Duration::from_millis(5);

/// Why a host-initiated vsock connection failed.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("no vsock socket at {uds}: is the VM running, started with its agent channel?")]
    NoSocket {
        uds: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not connect to the vsock socket {uds}")]
    Connect {
        uds: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the socket {uds} took no connection within {waited:?}: nobody is serving it (behind Firecracker's vsock: the guest has not started its vsock driver)")]
    QueueFull { uds: PathBuf, waited: Duration },
    #[error("nothing in the guest listens on vsock port {port} (Firecracker hung up after CONNECT): is the guest agent running?")]
    NoListener { port: u32 },
    #[error("Firecracker did not answer CONNECT {port} within {waited:?}: the guest has not started its vsock driver (still booting, or its kernel lacks CONFIG_VIRTIO_VSOCKETS)")]
    NoAnswer { port: u32, waited: Duration },
    #[error("Firecracker answered CONNECT {port} with {answer:?}, not \"OK <port>\": is {uds} a Firecracker vsock socket?")]
    BadAnswer {
        uds: PathBuf,
        port: u32,
        answer: String,
    },
    #[error("the CONNECT {port} handshake on {uds} failed")]
    Handshake {
        uds: PathBuf,
        port: u32,
        #[source]
        source: io::Error,
    },
}

impl From<VsockError> for io::Error {
    /// Keeps the message and gives callers a kind to match on.
    fn from(err: VsockError) -> io::Error {
        let kind = match &err {
            VsockError::NoSocket { .. } => io::ErrorKind::NotFound,
            VsockError::Connect { source, .. } | VsockError::Handshake { source, .. } => {
                source.kind()
            }
            VsockError::QueueFull { .. } | VsockError::NoAnswer { .. } => io::ErrorKind::TimedOut,
            VsockError::NoListener { .. } => io::ErrorKind::ConnectionRefused,
            VsockError::BadAnswer { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, err)
    }
}

/// Connects to guest port `port` through Firecracker's vsock socket `uds`
/// within `timeout`. The stream comes back blocking, without timeouts, and
/// carries only the guest's bytes (the answer line is consumed exactly).
pub fn connect(uds: &Path, port: u32, timeout: Duration) -> Result<UnixStream, VsockError> {
    let deadline = Instant::now() + timeout;
    let mut stream = connect_unix(uds, deadline)?;
    let handshake = |source| VsockError::Handshake {
        uds: uds.to_owned(),
        port,
        source,
    };
    set_timeouts(&stream, Some(left(deadline))).map_err(handshake)?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(handshake)?;
    let answer = match read_answer(&mut stream, deadline) {
        Ok(answer) => answer,
        Err(Answer::Hangup) => return Err(VsockError::NoListener { port }),
        Err(Answer::Late) => {
            return Err(VsockError::NoAnswer {
                port,
                waited: timeout,
            })
        }
        Err(Answer::Io(source)) => return Err(handshake(source)),
    };
    parse_ok(&answer).ok_or_else(|| VsockError::BadAnswer {
        uds: uds.to_owned(),
        port,
        answer: String::from_utf8_lossy(&answer).into_owned(),
    })?;
    set_timeouts(&stream, None).map_err(handshake)?;
    Ok(stream)
}

fn set_timeouts(stream: &UnixStream, timeout: Option<Duration>) -> io::Result<()> {
    stream.set_read_timeout(timeout)?;
    stream.set_write_timeout(timeout)
}

/// What is left until `deadline`, at least 1 ms (a zero timeout means none).
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

/// How reading the answer line failed.
#[derive(Debug)]
enum Answer {
    /// The connection ended before a whole line: Firecracker drops the
    /// host connection when no guest socket accepts.
    Hangup,
    /// The deadline passed first.
    Late,
    Io(io::Error),
}

/// Reads up to and including the first `\n`, one byte at a time so that
/// no byte of the guest's stream is taken with it. The line is returned
/// without its `\n`; a line longer than [`MAX_ANSWER`] is returned as is.
fn read_answer(stream: &mut UnixStream, deadline: Instant) -> Result<Vec<u8>, Answer> {
    let mut line = Vec::with_capacity(MAX_ANSWER);
    let mut byte = [0u8; 1];
    while line.len() < MAX_ANSWER {
        stream
            .set_read_timeout(Some(left(deadline)))
            .map_err(Answer::Io)?;
        match stream.read(&mut byte) {
            Ok(0) => return Err(Answer::Hangup),
            Ok(_) if byte[0] == b'\n' => return Ok(line),
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(Answer::Late),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Err(Answer::Hangup),
            Err(e) => return Err(Answer::Io(e)),
        }
    }
    Ok(line)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// `OK <port>` -> the host-side port Firecracker assigned.
fn parse_ok(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?;
    let port = text.strip_prefix("OK ")?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

/// Connects to the Unix socket at `path` without ever blocking past
/// `deadline`. A plain blocking connect waits for ever when the listener's
/// queue is full, which is what a Firecracker whose guest never started its
/// vsock driver has after enough attempts (it only accepts once the guest
/// activates the device).
fn connect_unix(path: &Path, deadline: Instant) -> Result<UnixStream, VsockError> {
    let fail = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => VsockError::NoSocket {
            uds: path.to_owned(),
            source,
        },
        _ => VsockError::Connect {
            uds: path.to_owned(),
            source,
        },
    };
    let (addr, len) = sockaddr_un(path).map_err(fail)?;
    let started = Instant::now();
    let fd = unix_socket().map_err(fail)?;
    loop {
        // SAFETY: `fd` is an open socket owned by this function, and
        // `addr` is a fully initialised sockaddr_un whose first `len` bytes
        // are the address.
        let rc = unsafe {
            libc::connect(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                std::ptr::addr_of!(addr).cast(),
                len,
            )
        };
        if rc == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(RETRY_FULL_QUEUE);
            }
            Some(libc::EAGAIN) => {
                return Err(VsockError::QueueFull {
                    uds: path.to_owned(),
                    waited: started.elapsed(),
                })
            }
            _ => return Err(fail(err)),
        }
    }
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false).map_err(fail)?;
    Ok(stream)
}

/// A non-blocking, close-on-exec Unix stream socket.
fn unix_socket() -> io::Result<OwnedFd> {
    let kind = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, kind, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2), is open and owned by
    // nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The address of `path` and its length, or an error for a path the
/// kernel cannot take (too long, or with a NUL byte).
fn sockaddr_un(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a socket path cannot contain a NUL byte",
        ));
    }
    // One byte stays zero: the terminator.
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the socket path is {} bytes long; Unix sockets take at most {}: use a shorter run directory",
                bytes.len(),
                addr.sun_path.len() - 1
            ),
        ));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// Where the host reaches a VM's agent: the one thing that differs between
/// the backends. Build it with [`AgentEndpoint::for_channel`] and call
/// [`AgentEndpoint::connect`]; what comes back is the agent's byte stream
/// either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentEndpoint {
    /// QEMU: the Unix socket behind the guest's virtio-serial port.
    Unix(PathBuf),
    /// Firecracker: its vsock socket and the guest port behind it.
    FirecrackerVsock { uds: PathBuf, port: u32 },
}

impl AgentEndpoint {
    /// The endpoint of the agent channel whose `socket` is in a VM's
    /// description (`Channel::socket`): QEMU listens on it; Firecracker
    /// uses it as its vsock `uds_path`, the agent behind port
    /// [`AGENT_VSOCK_PORT`].
    pub fn for_channel(backend: BackendKind, socket: &Path) -> Self {
        match backend {
            BackendKind::Qemu => AgentEndpoint::Unix(socket.to_owned()),
            BackendKind::Firecracker => AgentEndpoint::FirecrackerVsock {
                uds: socket.to_owned(),
                port: AGENT_VSOCK_PORT,
            },
        }
    }

    /// One connection to the agent, within `timeout`. The error says what
    /// is missing (no socket, nothing listening, no answer); its kind is
    /// `NotFound`, `ConnectionRefused` or `TimedOut` for the cases worth
    /// retrying while the guest boots.
    pub fn connect(&self, timeout: Duration) -> io::Result<UnixStream> {
        let deadline = Instant::now() + timeout;
        match self {
            AgentEndpoint::Unix(path) => Ok(connect_unix(path, deadline)?),
            AgentEndpoint::FirecrackerVsock { uds, port } => Ok(connect(uds, *port, timeout)?),
        }
    }

    /// [`connect`](Self::connect) for async callers: the handshake runs on
    /// the blocking pool, and the stream comes back as a tokio one.
    pub async fn connect_async(&self, timeout: Duration) -> io::Result<tokio::net::UnixStream> {
        let endpoint = self.clone();
        let stream = match tokio::task::spawn_blocking(move || endpoint.connect(timeout)).await {
            Ok(result) => result?,
            Err(join) => match join.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => return Err(io::Error::other("the connect was cancelled")),
            },
        };
        stream.set_nonblocking(true)?;
        tokio::net::UnixStream::from_std(stream)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;
    use std::thread::JoinHandle;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    /// Plays Firecracker's side of one host-initiated connection: reads the
    /// CONNECT line, then hands the stream to `then`.
    fn fake_firecracker(
        uds: &Path,
        then: impl FnOnce(UnixStream, String) + Send + 'static,
    ) -> JoinHandle<()> {
        let listener = UnixListener::bind(uds).unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while stream.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
                line.push(byte[0]);
            }
            then(stream, String::from_utf8(line).unwrap());
        })
    }

    fn socket_in(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("agent.sock")
    }

    #[test]
    fn after_ok_the_stream_carries_the_guests_bytes_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let uds = socket_in(&dir);
        let fc = fake_firecracker(&uds, |mut stream, line| {
            assert_eq!(line, "CONNECT 1024");
            // The answer and the guest's first bytes in one write: the
            // connector must not swallow any of them.
            stream.write_all(b"OK 1073741824\nhello").unwrap();
            let mut ping = [0u8; 4];
            stream.read_exact(&mut ping).unwrap();
            assert_eq!(&ping, b"ping");
            stream.write_all(b"pong").unwrap();
        });
        let mut stream = connect(&uds, AGENT_VSOCK_PORT, WAIT).unwrap();
        let mut hello = [0u8; 5];
        stream.read_exact(&mut hello).unwrap();
        assert_eq!(&hello, b"hello");
        stream.write_all(b"ping").unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"pong");
        assert_eq!(stream.read_timeout().unwrap(), None, "timeouts are cleared");
        fc.join().unwrap();
    }

    #[test]
    fn a_garbage_answer_is_quoted_in_a_clear_error() {
        for (answer, quoted) in [
            (&b"HTTP/1.1 400 \r\n"[..], "HTTP/1.1 400 \r"),
            (b"OK\n", "OK"),
            (b"OK 12x\n", "OK 12x"),
            (b"ok 5\n", "ok 5"),
            (&[b'x'; 100][..], "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let uds = socket_in(&dir);
            let fc = fake_firecracker(&uds, move |mut stream, _| {
                stream.write_all(answer).unwrap();
                let _ = stream.read(&mut [0u8; 1]);
            });
            let err = connect(&uds, 52, WAIT).unwrap_err();
            let VsockError::BadAnswer {
                answer: got, port, ..
            } = &err
            else {
                panic!("expected a bad answer, got {err:?}");
            };
            assert_eq!((got.as_str(), *port), (quoted, 52));
            assert!(err.to_string().contains("not \"OK <port>\""), "{err}");
            assert_eq!(io::Error::from(err).kind(), io::ErrorKind::InvalidData);
            fc.join().unwrap();
        }
    }

    #[test]
    fn a_hangup_after_connect_means_nobody_listens_on_the_port() {
        let dir = tempfile::tempdir().unwrap();
        let uds = socket_in(&dir);
        let fc = fake_firecracker(&uds, |stream, line| {
            assert_eq!(line, "CONNECT 7000");
            drop(stream);
        });
        let err = connect(&uds, 7000, WAIT).unwrap_err();
        assert!(
            matches!(err, VsockError::NoListener { port: 7000 }),
            "{err:?}"
        );
        assert!(err.to_string().contains("vsock port 7000"), "{err}");
        let err = io::Error::from(err);
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        fc.join().unwrap();
    }

    #[test]
    fn a_silent_firecracker_is_a_timeout_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let uds = socket_in(&dir);
        let fc = fake_firecracker(&uds, |stream, _| {
            std::thread::sleep(Duration::from_millis(600));
            drop(stream);
        });
        let started = Instant::now();
        let err = connect(&uds, 1024, Duration::from_millis(200)).unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(err, VsockError::NoAnswer { port: 1024, .. }),
            "{err:?}"
        );
        assert!(took < Duration::from_millis(500), "took {took:?}");
        assert!(err.to_string().contains("CONFIG_VIRTIO_VSOCKETS"), "{err}");
        fc.join().unwrap();
    }

    #[test]
    fn a_missing_or_dead_socket_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let uds = socket_in(&dir);
        let err = connect(&uds, 1024, WAIT).unwrap_err();
        assert!(matches!(err, VsockError::NoSocket { .. }), "{err:?}");
        assert!(err.to_string().contains("agent.sock"), "{err}");
        drop(UnixListener::bind(&uds).unwrap());
        let err = connect(&uds, 1024, WAIT).unwrap_err();
        let VsockError::Connect { source, .. } = &err else {
            panic!("expected a refused connect, got {err:?}");
        };
        assert_eq!(source.kind(), io::ErrorKind::ConnectionRefused);
    }

    /// A listening socket with a queue of `backlog` that nobody accepts on:
    /// Firecracker's before the guest activates its vsock device.
    fn never_accepting(path: &Path, backlog: i32) -> OwnedFd {
        use std::os::fd::AsRawFd;
        let fd = unix_socket().unwrap();
        let (addr, len) = sockaddr_un(path).unwrap();
        // SAFETY: `fd` is an open socket; `addr` is initialised for `len` bytes.
        let rc = unsafe { libc::bind(fd.as_raw_fd(), std::ptr::addr_of!(addr).cast(), len) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        // SAFETY: listen(2) on a bound socket we own; takes no pointers.
        let rc = unsafe { libc::listen(fd.as_raw_fd(), backlog) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        fd
    }

    #[test]
    fn a_full_queue_fails_at_the_deadline_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let uds = socket_in(&dir);
        let _listener = never_accepting(&uds, 1);
        let timeout = Duration::from_millis(150);
        let mut held = Vec::new();
        let (err, took) = loop {
            let started = Instant::now();
            match connect_unix(&uds, started + timeout) {
                Ok(stream) => held.push(stream),
                Err(err) => break (err, started.elapsed()),
            }
            assert!(held.len() < 10, "the queue never filled");
        };
        assert!(matches!(err, VsockError::QueueFull { .. }), "{err:?}");
        assert!(took >= timeout && took < timeout * 3, "took {took:?}");
        assert!(err.to_string().contains("nobody is serving it"), "{err}");
        let err = connect(&uds, 1024, timeout).unwrap_err();
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn an_accepted_connection_without_an_answer_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let uds = socket_in(&dir);
        let _listener = never_accepting(&uds, 8);
        let err = connect(&uds, 1024, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, VsockError::NoAnswer { .. }), "{err:?}");
    }

    #[test]
    fn an_overlong_socket_path_is_refused_with_its_length() {
        let uds = PathBuf::from(format!("/tmp/{}", "d".repeat(120)));
        let err = connect(&uds, 1024, WAIT).unwrap_err();
        let VsockError::Connect { source, .. } = &err else {
            panic!("expected a connect error, got {err:?}");
        };
        assert!(source.to_string().contains("125 bytes long"), "{source}");
    }

    #[test]
    fn the_endpoint_follows_the_backend() {
        let sock = Path::new("/run/vm/agent.sock");
        assert_eq!(
            AgentEndpoint::for_channel(BackendKind::Qemu, sock),
            AgentEndpoint::Unix(sock.to_owned())
        );
        assert_eq!(
            AgentEndpoint::for_channel(BackendKind::Firecracker, sock),
            AgentEndpoint::FirecrackerVsock {
                uds: sock.to_owned(),
                port: 1024
            }
        );
    }

    #[test]
    fn both_endpoints_connect_with_one_call() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = dir.path().join("qemu.sock");
        let listener = UnixListener::bind(&qemu).unwrap();
        let mut stream = AgentEndpoint::Unix(qemu).connect(WAIT).unwrap();
        stream.write_all(b"raw").unwrap();
        let mut got = [0u8; 3];
        listener.accept().unwrap().0.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"raw", "QEMU's socket carries bytes as they are");

        let uds = socket_in(&dir);
        let fc = fake_firecracker(&uds, |mut stream, line| {
            assert_eq!(line, "CONNECT 1024");
            stream.write_all(b"OK 1\nvsock").unwrap();
        });
        let endpoint = AgentEndpoint::for_channel(BackendKind::Firecracker, &uds);
        let mut got = String::new();
        endpoint
            .connect(WAIT)
            .unwrap()
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got, "vsock");
        fc.join().unwrap();

        let err = endpoint.connect(WAIT).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    }

    #[tokio::test]
    async fn async_callers_get_a_tokio_stream_past_the_handshake() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let uds = socket_in(&dir);
        let fc = fake_firecracker(&uds, |mut stream, _| {
            stream.write_all(b"OK 1073741824\nhi").unwrap();
            let mut got = [0u8; 2];
            stream.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"yo");
        });
        let endpoint = AgentEndpoint::for_channel(BackendKind::Firecracker, &uds);
        let mut stream = endpoint.connect_async(WAIT).await.unwrap();
        let mut got = [0u8; 2];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hi");
        stream.write_all(b"yo").await.unwrap();
        tokio::task::spawn_blocking(move || fc.join().unwrap())
            .await
            .unwrap();
        let err = endpoint.connect_async(WAIT).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    }

    #[test]
    fn only_ok_and_a_decimal_port_is_an_acceptance() {
        assert_eq!(parse_ok(b"OK 1073741824"), Some(1_073_741_824));
        assert_eq!(parse_ok(b"OK 0"), Some(0));
        for bad in [
            &b"OK "[..],
            b"OK -1",
            b"OK +1",
            b"OK 99999999999",
            b"OK 1 ",
            b"KO 1",
        ] {
            assert_eq!(parse_ok(bad), None, "{bad:?}");
        }
    }
}
