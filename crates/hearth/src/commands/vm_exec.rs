//! `hearth vm exec ID [--timeout SECS] -- CMD...`: run a command in a ready
//! VM through `hearth serve` and its guest agent. The guest's stdout goes
//! to stdout, its stderr to stderr, and its status becomes ours.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use hearth_types::api::{ExecRequest, ExecResult};

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
    };
    let wait = Duration::from_secs(req.timeout()) + ANSWER_SLACK;
    let client = Client::new(&args.api)?.with_answer_timeout(wait);
    let result: ExecResult = client.post(&format!("/v1/vms/{}/exec", args.id), Some(&req))?;
    std::io::stdout().write_all(result.stdout.as_bytes())?;
    std::io::stdout().flush()?;
    std::io::stderr().write_all(result.stderr.as_bytes())?;
    if result.truncated {
        eprintln!("hearth: the output was cut at 1 MiB per stream");
    }
    if result.timed_out {
        eprintln!(
            "hearth: the command ran past its timeout of {} s and was killed",
            req.timeout()
        );
    }
    Ok(ExitCode::from(exit_status(&result)))
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
