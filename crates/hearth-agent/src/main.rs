//! `hearth-agent --port NAME`: the process inside the guest that the host
//! talks to instead of SSH. It finds the virtio-serial port named NAME, says
//! hello, and runs the commands the host sends until the host hangs up;
//! then it reopens the port and waits for the next host, for ever.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use hearth_agent_proto::{GuestMessage, PROTOCOL};

mod exec;
mod io;
mod port;
mod session;

/// How long to wait for the port to show up: the virtio_console module may
/// still be probing when init starts us.
const PORT_WAIT: Duration = Duration::from_secs(5);
/// The pause after a host that came and went before welcoming the agent
/// (with no host at all, the hello write simply waits).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let name = port_name(std::env::args().skip(1))?;
    let mut port: Option<io::Port> = None;
    let next_host = move || {
        let port = match &mut port {
            Some(port) => port,
            open => open.insert(open_port(&name)?),
        };
        Ok(Some(port.halves().context("resetting the port")?))
    };
    session::serve_hosts(next_host, hello, RETRY_PAUSE)
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

/// The value of `--port`, the only argument.
fn port_name(mut args: impl Iterator<Item = String>) -> anyhow::Result<String> {
    match (args.next().as_deref(), args.next(), args.next()) {
        (Some("--port"), Some(name), None) if !name.is_empty() => Ok(name),
        _ => anyhow::bail!("usage: hearth-agent --port NAME"),
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
        instance: format!("{:x}-{}", std::process::id(), uptime_ms()),
        uptime_ms: uptime_ms(),
    }
}

/// Kernel uptime in ms (CLOCK_BOOTTIME).
fn uptime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1000
        + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> impl Iterator<Item = String> {
        a.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn the_port_name_is_the_only_argument() {
        assert_eq!(
            port_name(args(&["--port", "hearth.agent"])).unwrap(),
            "hearth.agent"
        );
        assert!(port_name(args(&[])).is_err());
        assert!(port_name(args(&["--port"])).is_err());
        assert!(port_name(args(&["--port", ""])).is_err());
        assert!(port_name(args(&["--port", "a", "b"])).is_err());
    }
}
