//! `hearth-agent --port NAME | --vsock PORT | --connect unix:PATH`: the
//! process inside the guest that the host talks to instead of SSH. With
//! `--port` it finds the virtio-serial port named NAME (QEMU); with
//! `--vsock` it listens on a vsock port (Firecracker); with `--connect` it
//! connects to a Unix socket as a client (so tests and host-side code can
//! run the real agent on the host). It says hello and serves the host until
//! it hangs up; then it waits for the next host, for ever. Meanwhile it
//! applies the guest's configuration, supervises its services and records
//! what happens (see docs/agent.md).

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use hearth_agent_proto::{GuestMessage, AGENT_VSOCK_PORT, PROTOCOL};

use crate::args::Transport;
use crate::guest::Guest;

mod args;
mod backoff;
mod bootreport;
mod capture;
mod clock;
mod config;
mod elf;
mod exec;
mod files;
mod guest;
mod init;
mod input;
mod io;
mod journal;
mod lines;
mod loopback;
mod network;
mod not_started;
mod outbox;
mod port;
mod ports;
mod pty;
mod readiness;
mod reaper;
mod restore;
mod running;
mod services;
mod session;
mod user;
mod vsock;

/// The virtio-serial port hearth gives every QEMU VM.
const AGENT_PORT: &str = "hearth.agent";
/// How long to wait for the port to show up: the virtio_console module may
/// still be probing when init starts us.
const PORT_WAIT: Duration = Duration::from_secs(5);
/// The pause after a host that came and went before welcoming the agent
/// (with no host at all, the hello write simply waits).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    let pid1 = init::is_pid1();
    if pid1 {
        init::prepare();
    }
    let result = run(pid1);
    if let Err(e) = &result {
        eprintln!("hearth-agent: {e:#}");
    }
    if pid1 {
        // PID 1 never exits: the init's threads carry on without a host.
        park();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn run(pid1: bool) -> anyhow::Result<()> {
    let options = match args::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        // The kernel hands init the command line words it does not know.
        Err(_) if pid1 => args::parse(std::iter::empty()).map_err(anyhow::Error::msg)?,
        Err(e) => anyhow::bail!(e),
    };
    let guest = Guest::new(options.settings);
    guest.start();
    if pid1 {
        init::start(&guest);
    }
    match options.transport.or_else(find_channel) {
        Some(Transport::Port(name)) => serve_port(name, &guest),
        Some(Transport::Unix(path)) => serve_unix(path, &guest),
        Some(Transport::Vsock(port)) => serve_vsock(port, &guest),
        None => {
            eprintln!(
                "hearth-agent: no virtio-serial port named {AGENT_PORT} and no vsock: no host will connect"
            );
            park()
        }
    }
}

/// With no channel named: the virtio-serial port `hearth.agent` (QEMU)
/// when it shows up within `PORT_WAIT`, else vsock port 1024 (Firecracker)
/// when this kernel has vsock.
fn find_channel() -> Option<Transport> {
    if port::wait_for(port::SYS_DIR, AGENT_PORT, PORT_WAIT).is_ok() {
        return Some(Transport::Port(AGENT_PORT.to_owned()));
    }
    let has_vsock = std::path::Path::new("/dev/vsock").exists();
    has_vsock.then_some(Transport::Vsock(AGENT_VSOCK_PORT))
}

fn park() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Connects to `path` again after each host that hangs up; while nobody
/// listens (no socket yet, or refused), it retries every `RETRY_PAUSE`.
fn serve_unix(path: PathBuf, guest: &Arc<Guest>) -> anyhow::Result<()> {
    let next_host = move || loop {
        match UnixStream::connect(&path) {
            Ok(stream) => {
                let reader = stream.try_clone().context("cloning the socket")?;
                return Ok(Some((reader, stream)));
            }
            Err(_) => std::thread::sleep(RETRY_PAUSE),
        }
    };
    session::serve_hosts(next_host, hello, RETRY_PAUSE, guest)
}

/// Listens on vsock `port` and serves each host that connects, in turn.
fn serve_vsock(port: u32, guest: &Arc<Guest>) -> anyhow::Result<()> {
    let listener = vsock::Listener::bind(port)?;
    let next_host = move || loop {
        match listener.accept() {
            Ok(halves) => return Ok(Some(halves)),
            Err(e) => {
                eprintln!("hearth-agent: {}", hearth_types::error_chain(&e));
                std::thread::sleep(RETRY_PAUSE);
            }
        }
    };
    session::serve_hosts(next_host, hello, RETRY_PAUSE, guest)
}

fn serve_port(name: String, guest: &Arc<Guest>) -> anyhow::Result<()> {
    let mut port: Option<io::Port> = None;
    let next_host = move || {
        let port = match &mut port {
            Some(port) => port,
            open => open.insert(open_port(&name)?),
        };
        Ok(Some(port.halves().context("resetting the port")?))
    };
    session::serve_hosts(next_host, hello, RETRY_PAUSE, guest)
}

/// Finds and opens the port, retrying for `PORT_WAIT` (the module may be
/// probing).
fn open_port(name: &str) -> anyhow::Result<io::Port> {
    let start = Instant::now();
    loop {
        let path = port::wait_for(port::SYS_DIR, name, PORT_WAIT)?;
        match io::Port::open(&path) {
            Ok(halves) => return Ok(halves),
            Err(e) if start.elapsed() >= PORT_WAIT => {
                return Err(e).with_context(|| format!("opening {}", path.display()))
            }
            Err(_) => std::thread::sleep(RETRY_PAUSE),
        }
    }
}

fn hello() -> GuestMessage {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    GuestMessage::Hello {
        protocol: PROTOCOL,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        boot_id,
        instance: instance().to_owned(),
        uptime_ms: uptime_ms(),
    }
}

/// This agent process's instance, the same in every hello: the host keeps
/// its acks per instance, so a new one per hello would make it store
/// records again after each reconnect.
fn instance() -> &'static str {
    static INSTANCE: OnceLock<String> = OnceLock::new();
    INSTANCE.get_or_init(|| format!("{:x}-{}", std::process::id(), uptime_ms()))
}

/// Kernel uptime in ms (CLOCK_BOOTTIME).
pub fn uptime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1000
        + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000_000
}
