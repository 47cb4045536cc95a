//! `hearth vm exec [-i] [-t] [-e NAME=VALUE]... ID [--timeout SECS] --
//! CMD...`: run a command in a ready VM through `hearth serve` and its
//! guest agent. The guest's stdout goes to stdout and its stderr to stderr
//! as they are printed, and its status becomes ours. Without `-i` one
//! streamed HTTP request carries it (stdin empty); with `-i` the exec
//! WebSocket also carries our stdin, terminal size and signals
//! ([`attach`]).

mod attach;
mod input;
mod terminal;

use std::io::{BufRead, IsTerminal, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hearth_types::api::{ExecEvent, ExecRequest};
use hearth_types::guest::{EnvVar, Stream};

use super::client::Client;
use crate::cli::ExecArgs;

/// What `hearth vm exec` exits with when the program could not be started
/// (not found, not executable), like a shell.
const NOT_STARTED: u8 = 127;
/// Waiting for the answer: the command's timeout plus the agent's grace
/// and the server's own work.
const ANSWER_SLACK: Duration = Duration::from_secs(20);

pub fn exec(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let request = request(&args, std::env::var("TERM").ok());
    let ended = if args.interactive {
        interactive(&args, request.clone())?
    } else {
        streamed(&args, &request)?
    };
    if let Some(reason) = &ended.not_started {
        eprintln!("{reason}");
    }
    if ended.timed_out {
        eprintln!(
            "hearth: the command ran past its timeout of {} s and was killed",
            request.timeout()
        );
    }
    Ok(ExitCode::from(exit_status(&ended)))
}

/// The request `args` stand for. An interactive session may last as long
/// as the server allows; with a terminal, ours (`term`, from `TERM`) tells
/// programs what it understands, unless `-e TERM=` says otherwise.
fn request(args: &ExecArgs, term: Option<String>) -> ExecRequest {
    let mut env = args.env.clone();
    let term = term.filter(|t| !t.is_empty() && !t.contains('\0'));
    if let (true, Some(value)) = (args.tty && args.interactive, term) {
        if !env.iter().any(|v| v.name == "TERM") {
            env.push(EnvVar {
                name: "TERM".into(),
                value,
            });
        }
    }
    let timeout_secs = match (args.timeout, args.interactive) {
        (Some(t), _) => Some(t),
        (None, true) => Some(ExecRequest::MAX_TIMEOUT_SECS),
        (None, false) => None,
    };
    ExecRequest {
        argv: args.command.clone(),
        timeout_secs,
        env,
    }
}

/// `POST /v1/vms/{id}/exec?stream=true`: output as NDJSON lines.
fn streamed(args: &ExecArgs, req: &ExecRequest) -> anyhow::Result<Ended> {
    let wait = Duration::from_secs(req.timeout()) + ANSWER_SLACK;
    let client = Client::new(&args.api)?.with_answer_timeout(wait);
    let path = format!(
        "/v1/vms/{}/exec?stream=true{}",
        args.id,
        if args.tty { "&tty=true" } else { "" }
    );
    let lines = client.post_lines(&path, req)?;
    print_events(lines, &mut Printer::stdio())
}

/// The exec WebSocket, with our terminal in raw mode meanwhile when `-t`
/// and stdin is one (restored when this returns, however it does).
fn interactive(args: &ExecArgs, request: ExecRequest) -> anyhow::Result<Ended> {
    let mut ws = attach::connect(&args.api, &args.id)?;
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let tty_fd = match (stdin.is_terminal(), stdout.is_terminal()) {
        _ if !args.tty => None,
        (true, _) => Some(stdin.as_fd()),
        (false, true) => Some(stdout.as_fd()),
        (false, false) => None,
    };
    let size = tty_fd.and_then(terminal::size);
    let _raw = match args.tty && stdin.is_terminal() {
        true => Some(terminal::RawMode::enter(stdin.as_fd())?),
        false => None,
    };
    let forward = input::Forward {
        signals: true,
        resize_from: tty_fd,
    };
    let inputs = input::Inputs::start(std::io::stdin(), forward)?;
    let start = attach::Start {
        request,
        tty: args.tty,
        size,
    };
    attach::run_session(&mut ws, start, &inputs, &mut Printer::stdio())
}

/// How the command ended, as the server said.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ended {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Why it never started (the agent's words), shown on stderr.
    pub not_started: Option<String>,
}

/// Writes the guest's output where it belongs as it arrives.
pub struct Printer<O, E> {
    out: O,
    err: E,
}

impl Printer<std::io::Stdout, std::io::Stderr> {
    fn stdio() -> Self {
        Printer {
            out: std::io::stdout(),
            err: std::io::stderr(),
        }
    }
}

impl<O: Write, E: Write> Printer<O, E> {
    /// Prints one output event; the end when `event` is one.
    pub fn event(&mut self, event: ExecEvent) -> anyhow::Result<Option<Ended>> {
        match event {
            ExecEvent::Output { stream, data } => {
                let bytes = STANDARD.decode(data).map_err(|e| {
                    anyhow::anyhow!("the server sent output that is not base64: {e}")
                })?;
                let sink: &mut dyn Write = match stream {
                    Stream::Stdout => &mut self.out,
                    Stream::Stderr => &mut self.err,
                };
                sink.write_all(&bytes)?;
                sink.flush()?;
                Ok(None)
            }
            ExecEvent::Exit {
                exit_code,
                signal,
                timed_out,
            } => Ok(Some(Ended {
                exit_code,
                signal,
                timed_out,
                not_started: None,
            })),
            ExecEvent::Error { code, message } if code == "not_started" => Ok(Some(Ended {
                not_started: Some(message),
                ..Ended::default()
            })),
            ExecEvent::Error { message, .. } => anyhow::bail!("{message}"),
        }
    }
}

/// Prints each NDJSON event as it arrives, to the end.
fn print_events<O: Write, E: Write>(
    lines: impl BufRead,
    printer: &mut Printer<O, E>,
) -> anyhow::Result<Ended> {
    for line in lines.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let event: ExecEvent = serde_json::from_str(&line).map_err(|e| {
            anyhow::anyhow!("the server sent an exec event this hearth cannot read: {e}")
        })?;
        if let Some(end) = printer.event(event)? {
            return Ok(end);
        }
    }
    anyhow::bail!("the server ended the answer before the command's end: run it again")
}

/// The guest command's status as ours: its exit code, 128+N for signal N,
/// 127 when it never started.
fn exit_status(r: &Ended) -> u8 {
    match (r.exit_code, r.signal) {
        (Some(code), _) => (code & 0xff) as u8,
        (None, Some(sig)) => (128 + (sig & 0x7f)) as u8,
        (None, None) => NOT_STARTED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(exit_code: Option<i32>, signal: Option<i32>) -> Ended {
        Ended {
            exit_code,
            signal,
            ..Ended::default()
        }
    }

    fn parse(args: &[&str]) -> Result<ExecArgs, clap::Error> {
        use clap::Parser;
        let mut full = vec!["hearth", "vm", "exec"];
        full.extend_from_slice(args);
        match crate::cli::Cli::try_parse_from(full)?.command {
            crate::cli::Command::Vm(crate::cli::VmCommand::Exec(args)) => Ok(args),
            other => panic!("not exec: {other:?}"),
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<EnvVar> {
        pairs
            .iter()
            .map(|(n, v)| EnvVar {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect()
    }

    #[test]
    fn a_bad_env_flag_is_a_usage_error_naming_the_flag_and_the_fix_not_the_value() {
        for (bad, fix) in [
            ("NOEQUALS-secret", "takes NAME=VALUE"),
            ("1X=secret", "not starting with a digit"),
            ("=secret", "use letters, digits and '_'"),
        ] {
            let err = parse(&["-e", bad, "vm-1", "--", "true"]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
            let text = err.to_string();
            assert!(
                text.contains("--env") && text.contains(fix),
                "{bad}: {text}"
            );
            assert!(!text.contains("secret"), "the value was shown: {text}");
        }
        let ok = parse(&["-e", "A=b=c", "--env", "EMPTY=", "vm-1", "--", "env"]).unwrap();
        assert_eq!(ok.env, env(&[("A", "b=c"), ("EMPTY", "")]));
    }

    #[test]
    fn an_interactive_terminal_session_gets_our_term_and_the_longest_timeout() {
        let args = parse(&["-it", "vm-1", "--", "sh"]).unwrap();
        assert!(args.interactive && args.tty);
        let req = request(&args, Some("xterm-256color".into()));
        assert_eq!(req.env, env(&[("TERM", "xterm-256color")]));
        assert_eq!(req.timeout_secs, Some(ExecRequest::MAX_TIMEOUT_SECS));

        let args = parse(&["-it", "-e", "TERM=vt100", "vm-1", "--", "sh"]).unwrap();
        let req = request(&args, Some("xterm".into()));
        assert_eq!(req.env, env(&[("TERM", "vt100")]), "-e wins");

        let args = parse(&["-i", "--timeout", "5", "vm-1", "--", "cat"]).unwrap();
        let req = request(&args, Some("xterm".into()));
        assert!(req.env.is_empty(), "no terminal, no TERM");
        assert_eq!(req.timeout_secs, Some(5));

        let args = parse(&["--tty", "vm-1", "--", "ls"]).unwrap();
        let req = request(&args, Some("xterm".into()));
        assert_eq!((req.timeout_secs, req.env.is_empty()), (None, true));
    }

    #[test]
    fn ndjson_events_are_printed_to_their_streams_until_the_exit() {
        let lines = [
            r#"{"type":"output","stream":"stdout","data":"b3V0Cg=="}"#,
            "",
            r#"{"type":"output","stream":"stderr","data":"ZXJyCg=="}"#,
            r#"{"type":"exit","exit_code":3,"signal":null,"timed_out":false}"#,
        ]
        .join("\n");
        let mut printer = Printer {
            out: Vec::new(),
            err: Vec::new(),
        };
        let ended = print_events(lines.as_bytes(), &mut printer).unwrap();
        assert_eq!(
            (printer.out.as_slice(), printer.err.as_slice()),
            (&b"out\n"[..], &b"err\n"[..])
        );
        assert_eq!(exit_status(&ended), 3);
        let cut = r#"{"type":"output","stream":"stdout","data":"b3V0Cg=="}"#;
        let err = print_events(cut.as_bytes(), &mut printer).unwrap_err();
        assert!(
            err.to_string().contains("before the command's end"),
            "{err}"
        );
    }

    #[test]
    fn the_status_is_the_guest_command_s() {
        assert_eq!(exit_status(&result(Some(3), None)), 3);
        assert_eq!(exit_status(&result(Some(0), None)), 0);
        assert_eq!(exit_status(&result(None, Some(9))), 137);
        assert_eq!(exit_status(&result(None, None)), 127);
    }
}
