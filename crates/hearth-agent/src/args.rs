//! The command line:
//!
//! ```text
//! hearth-agent [--port NAME | --vsock PORT | --connect unix:PATH] [--config FILE]
//!              [--run-dir DIR] [--console PATH] [--wait-config]
//! ```
//!
//! `--port` names the virtio-serial port (QEMU), `--vsock` the vsock port
//! the host connects to (Firecracker); `--connect` a Unix
//! socket the host listens on (tests and host-side code run the real agent
//! this way). With neither the agent has no channel (allowed only as PID 1:
//! the init works without a host). The others point the guest's fixed
//! paths elsewhere (tests) or force waiting for the host's configuration.

use std::path::PathBuf;

use crate::guest::Settings;

pub const USAGE: &str = "usage: hearth-agent [--port NAME | --vsock PORT | --connect unix:PATH] \
[--config FILE] [--run-dir DIR] [--console PATH] [--wait-config]";

/// Where the host is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A virtio-serial port, by name.
    Port(String),
    /// A vsock port the agent listens on.
    Vsock(u32),
    /// A Unix socket the host listens on.
    Unix(PathBuf),
}

#[derive(Debug)]
pub struct Options {
    pub transport: Option<Transport>,
    pub settings: Settings,
}

pub fn parse(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut args = args.peekable();
    let mut transport = None;
    let mut settings = Settings::default();
    while let Some(flag) = args.next() {
        if flag == "--wait-config" {
            settings.wait_for_host = true;
            continue;
        }
        let value = args
            .next()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))?;
        match flag.as_str() {
            "--port" => set_once(&mut transport, Transport::Port(value))?,
            "--connect" => set_once(&mut transport, unix_target(&value)?)?,
            "--vsock" => {
                let port = crate::vsock::parse_port(&value).map_err(|e| e.to_string())?;
                set_once(&mut transport, Transport::Vsock(port))?
            }
            "--config" => settings.image_config = value.into(),
            "--run-dir" => settings.run_dir = value.into(),
            "--console" => settings.console = value.into(),
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    // `--connect` runs the agent on a host (tests, host-side code): that
    // host's clock is not the agent's to set.
    settings.keep_clock = !matches!(transport, Some(Transport::Unix(_)));
    Ok(Options {
        transport,
        settings,
    })
}

fn unix_target(value: &str) -> Result<Transport, String> {
    match value.strip_prefix("unix:") {
        Some(path) if !path.is_empty() => Ok(Transport::Unix(path.into())),
        _ => Err(format!("--connect {value:?}: give unix:PATH; {USAGE}")),
    }
}

fn set_once(slot: &mut Option<Transport>, t: Transport) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("give one channel only; {USAGE}"));
    }
    *slot = Some(t);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(a: &[&str]) -> Result<Options, String> {
        parse(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn a_port_or_a_unix_socket_is_named() {
        let o = parse_args(&["--port", "hearth.agent"]).unwrap();
        assert_eq!(o.transport, Some(Transport::Port("hearth.agent".into())));
        let o = parse_args(&["--connect", "unix:/tmp/a.sock", "--wait-config"]).unwrap();
        assert_eq!(o.transport, Some(Transport::Unix("/tmp/a.sock".into())));
        assert!(o.settings.wait_for_host);
        assert!(!o.settings.keep_clock, "an agent on a host set its clock");
        assert!(parse_args(&["--port", "p"]).unwrap().settings.keep_clock);
        assert_eq!(parse_args(&[]).unwrap().transport, None);
        assert!(parse_args(&["--port"]).is_err());
        assert!(parse_args(&["--port", ""]).is_err());
        assert!(parse_args(&["--port", "a", "b"]).is_err());
        assert!(parse_args(&["--port", "a", "--connect", "unix:/x"]).is_err());
        let err = parse_args(&["--connect", "/tmp/a.sock"]).unwrap_err();
        assert!(err.contains("unix:PATH"), "{err}");
        assert!(parse_args(&["--connect", "unix:"]).is_err());
        let o = parse_args(&["--vsock", "1024"]).unwrap();
        assert_eq!(o.transport, Some(Transport::Vsock(1024)));
        assert!(parse_args(&["--vsock", "x"]).unwrap_err().contains("\"x\""));
    }

    #[test]
    fn paths_can_be_pointed_elsewhere() {
        let o = parse_args(&["--config", "/c.json", "--run-dir", "/r", "--console", "/k"]).unwrap();
        assert_eq!(o.settings.image_config, PathBuf::from("/c.json"));
        assert_eq!(o.settings.run_dir, PathBuf::from("/r"));
        assert_eq!(o.settings.console, PathBuf::from("/k"));
    }
}
