//! `hearth vm exec [--tty] ID [--timeout SECS] -- CMD...`: run a command in
//! a ready VM through `hearth serve` and its guest agent. The guest's
//! stdout goes to stdout and its stderr to stderr as they are printed, and
//! its status becomes ours.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hearth_types::api::{ExecEvent, ExecRequest, ExecResult};
use hearth_types::guest::Stream;

use super::client::Client;
use crate::cli::ExecArgs;

/// What `hearth vm exec` exits with when the program could not be started
/// (not found, not executable), like a shell.
const NOT_STARTED: u8 = 127;
/// Waiting for the answer: the command's timeout plus the agent's grace
/// and the server's own work.
const ANSWER_SLACK: Duration = Duration::from_secs(20);

pub fn exec(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let req = ExecRequest {
        argv: args.command,
        timeout_secs: args.timeout,
        env: vec![],
    };
    let wait = Duration::from_secs(req.timeout()) + ANSWER_SLACK;
    let client = Client::new(&args.api)?.with_answer_timeout(wait);
    let path = format!(
        "/v1/vms/{}/exec?stream=true{}",
        args.id,
        if args.tty { "&tty=true" } else { "" }
    );
    let lines = client.post_lines(&path, &req)?;
    let result = print_events(lines)?;
    if result.timed_out {
        eprintln!(
            "hearth: the command ran past its timeout of {} s and was killed",
            req.timeout()
        );
    }
    Ok(ExitCode::from(exit_status(&result)))
}

/// Prints each output chunk as it arrives; the end as an [`ExecResult`]
/// without output.
fn print_events(lines: impl BufRead) -> anyhow::Result<ExecResult> {
    let mut result = ExecResult {
        exit_code: None,
        signal: None,
        timed_out: false,
        stdout: String::new(),
        stderr: String::new(),
        truncated: false,
    };
    for line in lines.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let event: ExecEvent = serde_json::from_str(&line).map_err(|e| {
            anyhow::anyhow!("the server sent an exec event this hearth cannot read: {e}")
        })?;
        match event {
            ExecEvent::Output { stream, data } => {
                let bytes = STANDARD.decode(data).map_err(|e| {
                    anyhow::anyhow!("the server sent output that is not base64: {e}")
                })?;
                match stream {
                    Stream::Stdout => {
                        let mut out = std::io::stdout().lock();
                        out.write_all(&bytes)?;
                        out.flush()?;
                    }
                    Stream::Stderr => std::io::stderr().write_all(&bytes)?,
                }
            }
            ExecEvent::Exit {
                exit_code,
                signal,
                timed_out,
            } => {
                result.exit_code = exit_code;
                result.signal = signal;
                result.timed_out = timed_out;
                return Ok(result);
            }
            ExecEvent::Error { code, message } if code == "not_started" => {
                eprintln!("{message}");
                return Ok(result);
            }
            ExecEvent::Error { message, .. } => anyhow::bail!("{message}"),
        }
    }
    anyhow::bail!("the server ended the answer before the command's end: run it again")
}

/// The guest command's status as ours: its exit code, 128+N for signal N,
/// 127 when it never started.
fn exit_status(r: &ExecResult) -> u8 {
    match (r.exit_code, r.signal) {
        (Some(code), _) => (code & 0xff) as u8,
        (None, Some(sig)) => (128 + (sig & 0x7f)) as u8,
        (None, None) => NOT_STARTED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(exit_code: Option<i32>, signal: Option<i32>) -> ExecResult {
        ExecResult {
            exit_code,
            signal,
            timed_out: false,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
        }
    }

    #[test]
    fn the_status_is_the_guest_command_s() {
        assert_eq!(exit_status(&result(Some(3), None)), 3);
        assert_eq!(exit_status(&result(Some(0), None)), 0);
        assert_eq!(exit_status(&result(None, Some(9))), 137);
        assert_eq!(exit_status(&result(None, None)), 127);
    }
}
