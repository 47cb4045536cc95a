//! `hearth-agent --port NAME`: the process inside the guest that the host
//! talks to instead of SSH. It finds the virtio-serial port named NAME, says
//! hello, and runs the commands the host sends until the host hangs up.

use std::fs::OpenOptions;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use hearth_agent_proto::{GuestMessage, PROTOCOL};

mod exec;
mod port;
mod session;

/// How long to wait for the port to show up: the virtio_console module may
/// still be probing when init starts us.
const PORT_WAIT: Duration = Duration::from_secs(5);

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
    let path = port::wait_for(port::SYS_DIR, &name, PORT_WAIT)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let reader = file.try_clone().context("duplicating the port handle")?;
    let mut session = session::Session::new(reader, file);
    session.handshake(hello())?;
    eprintln!("hearth-agent: connected");
    session.serve()?;
    Ok(())
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
    }
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
