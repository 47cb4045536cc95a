//! TCP streams carried over the host channel (protocol 4), so the host
//! reaches guest ports, and guest programs reach host handlers, with no
//! guest network at all.
//!
//! A stream the host opens (`port_connect`) is a connection to the guest's
//! loopback; a stream the guest opens is a connection a guest program made
//! to a loopback listener the host asked for (`port_listen`). Either way
//! the agent runs two threads per stream: one reads the socket and sends
//! `port_data`, never more than `PORT_WINDOW` bytes unacknowledged by the
//! host; the other writes the host's data to the socket and acknowledges
//! each piece once written. So a slow reader on one side holds back only
//! its own stream, and neither side ever buffers more than a window. Both
//! threads done (or the socket broken, or the host's `port_close`): one
//! `port_closed`, and the id is forgotten.
//!
//! Streams and listeners belong to the session: when the host leaves they
//! are closed (their other end is gone for good).

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use hearth_agent_proto::{encode_data, GuestMessage, GUEST_STREAM_BIT, PORT_CHUNK, PORT_WINDOW};

use crate::outbox::Link;

/// How long a connect to a guest port may take.
const CONNECT_WINDOW: Duration = Duration::from_secs(5);

/// One session's streams and listeners.
#[derive(Clone, Default)]
pub struct Ports {
    streams: Arc<Mutex<HashMap<u64, Arc<PortStream>>>>,
    listeners: Arc<Mutex<HashMap<u16, Arc<TcpListener>>>>,
    next_guest_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ports")
    }
}

#[derive(Debug, Default)]
struct Flow {
    /// Host data waiting to be written to the socket.
    queue: VecDeque<Vec<u8>>,
    /// The host sent `port_end`.
    ended: bool,
    /// Aborted: threads stop, nothing more is sent.
    closed: bool,
    /// Bytes sent to the host and not acknowledged yet.
    in_flight: u64,
}

/// One stream, shared by its two threads and the session.
#[derive(Debug)]
struct PortStream {
    id: u64,
    flow: Mutex<Flow>,
    changed: Condvar,
    socket: Mutex<Option<Arc<TcpStream>>>,
    /// Halves finished (reader, writer); the second sends `port_closed`.
    done: AtomicU8,
}

impl Ports {
    /// `port_connect`: registered at once (data the host sends next waits
    /// in the queue), connected on a thread of its own.
    pub fn connect(&self, id: u64, port: u16, link: Link) {
        let stream = self.register(id);
        let ports = self.clone();
        std::thread::spawn(move || match connect_loopback(port) {
            Ok(socket) => {
                if link.send(GuestMessage::PortConnected { id }).is_ok() {
                    ports.run(stream, socket, link);
                } else {
                    ports.forget(id);
                }
            }
            Err(message) => {
                ports.forget(id);
                let _ = link.send(GuestMessage::PortRefused { id, message });
            }
        });
    }

    /// `port_listen`: guest connections to `127.0.0.1:port` become streams.
    /// Asked again for a port already listened on, nothing changes.
    pub fn listen(&self, port: u16, link: Link) {
        if self.lock_listeners().contains_key(&port) {
            return;
        }
        let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(l) => Arc::new(l),
            Err(e) => {
                let message = format!("listening on 127.0.0.1:{port} in the guest failed: {e}");
                let _ = link.send(GuestMessage::PortListenFailed { port, message });
                return;
            }
        };
        self.lock_listeners().insert(port, listener.clone());
        let ports = self.clone();
        std::thread::spawn(move || ports.accept_loop(port, &listener, &link));
    }

    pub fn data(&self, id: u64, bytes: Vec<u8>) {
        self.with(id, |s| {
            s.lock().queue.push_back(bytes);
            s.changed.notify_all();
        });
    }

    pub fn end(&self, id: u64) {
        self.with(id, |s| {
            s.lock().ended = true;
            s.changed.notify_all();
        });
    }

    pub fn ack(&self, id: u64, bytes: u64) {
        self.with(id, |s| {
            let mut f = s.lock();
            f.in_flight = f.in_flight.saturating_sub(bytes);
            s.changed.notify_all();
        });
    }

    pub fn close(&self, id: u64) {
        if let Some(s) = self.forget(id) {
            s.abort();
        }
    }

    /// The host left: every stream and listener of the session ends.
    pub fn close_all(&self) {
        let streams: Vec<_> = self.lock_streams().drain().map(|(_, s)| s).collect();
        for s in streams {
            s.abort();
        }
        for (_, l) in self.lock_listeners().drain() {
            // SAFETY: shutting down a listening socket we own wakes its
            // accept(2) with an error; the descriptor stays valid.
            unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }

    fn accept_loop(&self, port: u16, listener: &TcpListener, link: &Link) {
        for conn in listener.incoming() {
            let Ok(socket) = conn else {
                break;
            };
            let id = GUEST_STREAM_BIT | self.next_guest_id.fetch_add(1, Ordering::Relaxed);
            let stream = self.register(id);
            if link.send(GuestMessage::PortAccepted { id, port }).is_err() {
                self.forget(id);
                break;
            }
            let ports = self.clone();
            let link = link.clone();
            std::thread::spawn(move || ports.run(stream, socket, link));
        }
        self.lock_listeners().remove(&port);
    }

    /// Runs both halves of a connected stream (this thread reads).
    fn run(&self, stream: Arc<PortStream>, socket: TcpStream, link: Link) {
        let _ = socket.set_nodelay(true);
        let socket = Arc::new(socket);
        *stream.socket.lock().unwrap_or_else(|p| p.into_inner()) = Some(socket.clone());
        if stream.lock().closed {
            let _ = socket.shutdown(Shutdown::Both);
            return;
        }
        let writer = (self.clone(), stream.clone(), socket.clone(), link.clone());
        std::thread::spawn(move || {
            let (ports, stream, socket, link) = writer;
            let result = write_half(&stream, &socket, &link);
            ports.half_done(&stream, &link, result);
        });
        let result = read_half(&stream, &socket, &link);
        self.half_done(&stream, &link, result);
    }

    /// One half ended; a failed half aborts the stream, the second half
    /// to end closes it.
    fn half_done(&self, stream: &Arc<PortStream>, link: &Link, result: Result<(), String>) {
        if let Err(message) = result {
            if self.forget(stream.id).is_some() {
                stream.abort();
                let _ = link.send(GuestMessage::PortClosed {
                    id: stream.id,
                    message: Some(message),
                });
            }
            return;
        }
        if stream.done.fetch_add(1, Ordering::AcqRel) == 1 && self.forget(stream.id).is_some() {
            let _ = link.send(GuestMessage::PortClosed {
                id: stream.id,
                message: None,
            });
        }
    }

    fn register(&self, id: u64) -> Arc<PortStream> {
        let stream = Arc::new(PortStream {
            id,
            flow: Mutex::default(),
            changed: Condvar::new(),
            socket: Mutex::new(None),
            done: AtomicU8::new(0),
        });
        self.lock_streams().insert(id, stream.clone());
        stream
    }

    fn forget(&self, id: u64) -> Option<Arc<PortStream>> {
        self.lock_streams().remove(&id)
    }

    fn with(&self, id: u64, f: impl FnOnce(&PortStream)) {
        let stream = self.lock_streams().get(&id).cloned();
        if let Some(s) = stream {
            f(&s);
        }
    }

    fn lock_streams(&self) -> MutexGuard<'_, HashMap<u64, Arc<PortStream>>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_listeners(&self) -> MutexGuard<'_, HashMap<u16, Arc<TcpListener>>> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PortStream {
    fn lock(&self) -> MutexGuard<'_, Flow> {
        self.flow.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops both halves now: the socket is shut down, waits wake.
    fn abort(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
        let socket = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = socket.as_ref() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Socket to host: `port_data` within the window, then `port_end`.
fn read_half(stream: &PortStream, socket: &TcpStream, link: &Link) -> Result<(), String> {
    let mut buf = vec![0u8; PORT_CHUNK];
    loop {
        let n = match (&*socket).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if stream.lock().closed => return Err(e.to_string()),
            Err(e) => return Err(format!("reading from the guest's socket failed: {e}")),
        };
        wait_for_window(stream, n as u64)?;
        let data = encode_data(&buf[..n]);
        link.send(GuestMessage::PortData {
            id: stream.id,
            data,
        })
        .map_err(|_| "the host left".to_owned())?;
    }
    link.send(GuestMessage::PortEnd { id: stream.id })
        .map_err(|_| "the host left".to_owned())
}

/// Waits until `n` more bytes fit in the window, and counts them sent.
fn wait_for_window(stream: &PortStream, n: u64) -> Result<(), String> {
    let mut f = stream.lock();
    while !f.closed && f.in_flight > 0 && f.in_flight + n > PORT_WINDOW {
        f = stream.changed.wait(f).unwrap_or_else(|p| p.into_inner());
    }
    if f.closed {
        return Err("the stream was closed".into());
    }
    f.in_flight += n;
    Ok(())
}

/// Host to socket: each chunk written is acknowledged; at the host's end
/// the socket's write side is shut down.
fn write_half(stream: &PortStream, socket: &TcpStream, link: &Link) -> Result<(), String> {
    loop {
        let chunk = {
            let mut f = stream.lock();
            loop {
                if f.closed {
                    return Err("the stream was closed".into());
                }
                if let Some(chunk) = f.queue.pop_front() {
                    break Some(chunk);
                }
                if f.ended {
                    break None;
                }
                f = stream.changed.wait(f).unwrap_or_else(|p| p.into_inner());
            }
        };
        let Some(chunk) = chunk else {
            let _ = socket.shutdown(Shutdown::Write);
            return Ok(());
        };
        (&*socket)
            .write_all(&chunk)
            .map_err(|e| format!("writing to the guest's socket failed: {e}"))?;
        let bytes = chunk.len() as u64;
        link.send(GuestMessage::PortAck {
            id: stream.id,
            bytes,
        })
        .map_err(|_| "the host left".to_owned())?;
    }
}

/// Connects to `port` on 127.0.0.1, then on ::1.
fn connect_loopback(port: u16) -> Result<TcpStream, String> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    let first = match TcpStream::connect_timeout(&v4, CONNECT_WINDOW) {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    match TcpStream::connect_timeout(&v6, CONNECT_WINDOW) {
        Ok(s) => Ok(s),
        Err(_) if first.kind() == std::io::ErrorKind::ConnectionRefused => Err(format!(
            "nothing listens on port {port} in the guest (connection refused on 127.0.0.1 and ::1)"
        )),
        Err(_) => Err(format!(
            "connecting to port {port} in the guest failed: {first}"
        )),
    }
}
