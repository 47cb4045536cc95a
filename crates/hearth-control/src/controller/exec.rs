//! `POST /v1/vms/{id}/exec`: run one command in a ready VM through its
//! guest agent. Only the command's name goes into the VM's events and the
//! log, never its arguments or output: they may carry secrets.

use std::time::Duration;

use hearth_types::api::{ExecRequest, ExecResult};
use hearth_types::guest::Stream;
use hearth_types::{BackendKind, Timestamp, VmId, VmState};
use tokio::sync::mpsc;

use super::{ControlError, Controller, Scope};
use crate::agent_link::{ExecEvent, ExecSpec, LinkError, LinkHandle};

/// Output kept per stream by a collected exec; the rest is dropped and
/// `truncated` set.
pub const MAX_OUTPUT: usize = 1 << 20;
/// How long an exec waits for the agent to be connected (it may be
/// reconnecting after a hang-up, or still booting).
pub const CONNECT_WINDOW: Duration = Duration::from_secs(10);
/// Slack on top of the command's timeout for the agent to report the kill.
pub const GRACE: Duration = Duration::from_secs(5);

/// Why an exec did not run, or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("VM {id} is {state}, not ready: exec needs a ready VM, or a booting one whose agent is connected (`hearth vm health {id}`)")]
    NotReady { id: VmId, state: VmState },
    #[error("VM {0} runs under Firecracker and its agent did not connect over vsock: is the image built with an agent that listens on vsock? a QEMU VM has the virtio-serial channel")]
    NoChannel(VmId),
    #[error("the agent of VM {vm} is not connected (none within {}s): is the image built with the agent? run scripts/build-agent and rebuild the image (`hearth image build --force`); the VM's console (`hearth vm console {vm}`) shows the agent's side", CONNECT_WINDOW.as_secs())]
    Unreachable { vm: VmId },
    #[error("the agent of VM {vm} hung up before the command ended: it may have crashed or the VM stopped; its messages are in the VM's console (`hearth vm console {vm}`)")]
    Lost { vm: VmId },
    #[error("the agent of VM {vm} did not report the end of the command within {secs}s (its timeout plus {}s)", GRACE.as_secs())]
    Deadline { vm: VmId, secs: u64 },
    #[error("the agent of VM {vm} speaks protocol {protocol}, too old for interactive exec (stdin, a terminal's size and signals need protocol {}): rebuild the image with the current agent (`scripts/build-agent`, then `hearth image build --force`) and create the VM again", crate::agent_link::INTERACTIVE_PROTOCOL)]
    AgentTooOld { vm: VmId, protocol: u32 },
}

impl ExecError {
    /// A link's refusal, for VM `vm`.
    pub(super) fn from_link(vm: &VmId, e: LinkError) -> Self {
        match e {
            LinkError::AgentTooOld { protocol } => ExecError::AgentTooOld {
                vm: vm.clone(),
                protocol,
            },
            LinkError::Ended => ExecError::Lost { vm: vm.clone() },
        }
    }
}

/// A running exec's events, ending at the deadline at the latest. The
/// VM's event log gets the program's name and outcome when it ends.
#[derive(Debug)]
pub struct ExecStream {
    vm: VmId,
    program: String,
    events: mpsc::UnboundedReceiver<ExecEvent>,
    deadline: tokio::time::Instant,
    budget: Duration,
    store: std::sync::Arc<dyn hearth_store::Store>,
    done: bool,
    /// Keeps the VM in use (its idle policy) while the exec runs.
    _in_use: std::sync::Arc<super::InUse>,
}

impl ExecStream {
    /// Starts `spec` (from a checked request) on `link`; its events end at
    /// its timeout plus [`GRACE`] at the latest.
    pub(super) fn start(
        ctl: &Controller,
        vm: &VmId,
        link: &LinkHandle,
        spec: ExecSpec,
    ) -> Result<(ExecStream, crate::agent_link::ExecInput), ExecError> {
        let program = program_name(spec.argv.first().map_or("", String::as_str));
        let budget = spec.timeout.unwrap_or_default() + GRACE;
        let exec = link
            .start_exec(spec)
            .map_err(|e| ExecError::from_link(vm, e))?;
        let stream = ExecStream {
            vm: vm.clone(),
            program,
            events: exec.events,
            deadline: tokio::time::Instant::now() + budget,
            budget,
            store: ctl.store.clone(),
            done: false,
            _in_use: ctl.activity.touch(vm),
        };
        Ok((stream, exec.input))
    }

    /// Whether its last event was taken.
    pub fn ended(&self) -> bool {
        self.done
    }

    /// The next event; `Ok(None)` after the last.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>, ExecError> {
        if self.done {
            return Ok(None);
        }
        let event = tokio::time::timeout_at(self.deadline, self.events.recv()).await;
        let event = match event {
            Err(_) => Err(ExecError::Deadline {
                vm: self.vm.clone(),
                secs: self.budget.as_secs(),
            }),
            Ok(None) | Ok(Some(ExecEvent::Lost)) => Err(ExecError::Lost {
                vm: self.vm.clone(),
            }),
            Ok(Some(e)) => Ok(e),
        };
        let last = match &event {
            Ok(ExecEvent::Output(..)) => None,
            Ok(ExecEvent::Exit {
                code,
                signal,
                timed_out,
            }) => Some(outcome(*code, *signal, *timed_out)),
            Ok(ExecEvent::Error(_)) => Some("could not be started".to_owned()),
            Ok(ExecEvent::Lost) | Err(_) => {
                Some("failed: the agent could not be reached".to_owned())
            }
        };
        if let Some(how) = last {
            self.done = true;
            self.record(&how);
        }
        event.map(Some)
    }

    /// The whole result, each stream capped at [`MAX_OUTPUT`].
    pub async fn collect(mut self) -> Result<ExecResult, ExecError> {
        let mut out = Output::default();
        while let Some(event) = self.next().await? {
            match event {
                ExecEvent::Output(stream, bytes) => out.push(stream, &bytes),
                ExecEvent::Exit {
                    code,
                    signal,
                    timed_out,
                } => return Ok(out.finish(code, signal, timed_out)),
                ExecEvent::Error(message) => {
                    let mut result = out.finish(None, None, false);
                    result.stderr = format!("hearth-agent: {message}\n");
                    return Ok(result);
                }
                ExecEvent::Lost => break,
            }
        }
        Err(ExecError::Lost {
            vm: self.vm.clone(),
        })
    }

    /// The event names the program and how it ended, never an argument.
    fn record(&self, how: &str) {
        let message = format!("exec: {} {how}", self.program);
        tracing::info!(vm = %self.vm, program = %self.program, "{message}");
        let (store, vm) = (self.store.clone(), self.vm.clone());
        tokio::spawn(async move {
            if let Err(e) = store.add_event(&vm, Timestamp::now(), &message).await {
                tracing::warn!(vm = %vm, error = %hearth_types::error_chain(&e), "the exec event was not recorded");
            }
        });
    }
}

/// Starts `req` in VM `id` over its agent link.
pub(super) async fn start(
    ctl: &Controller,
    scope: &Scope,
    id: &VmId,
    req: ExecRequest,
    tty: bool,
) -> Result<ExecStream, ExecError> {
    req.check().map_err(ControlError::Invalid)?;
    let link = ready_link(ctl, scope, id).await?;
    let spec = ExecSpec {
        tty,
        ..spec_of(req)
    };
    let (stream, _input) = ExecStream::start(ctl, id, &link, spec)?;
    Ok(stream)
}

/// A checked request as the agent's exec: empty stdin, no terminal.
pub(super) fn spec_of(req: ExecRequest) -> ExecSpec {
    let timeout = Duration::from_secs(req.timeout());
    ExecSpec {
        env: req.env.into_iter().map(|v| (v.name, v.value)).collect(),
        argv: req.argv,
        timeout: Some(timeout),
        ..ExecSpec::default()
    }
}

/// The link of a VM the caller may see, once its agent is connected: a
/// ready VM, or a booting one whose agent is connected already.
pub(super) async fn ready_link(
    ctl: &Controller,
    scope: &Scope,
    id: &VmId,
) -> Result<LinkHandle, ExecError> {
    let record = ctl.record(scope, id).await?;
    // A booting VM whose agent is already connected may be waiting on a
    // service that never gets ready: exec is how one finds out why.
    let booting_with_agent =
        record.vm.state == VmState::Booting && ctl.links.get(id).is_some_and(|l| l.connected());
    if record.vm.state != VmState::Ready && !booting_with_agent {
        return Err(ExecError::NotReady {
            id: id.clone(),
            state: record.vm.state,
        });
    }
    let unreachable = || match record.vm.backend {
        BackendKind::Firecracker => ExecError::NoChannel(id.clone()),
        BackendKind::Qemu => ExecError::Unreachable { vm: id.clone() },
    };
    let link = ctl.links.get(id).ok_or_else(unreachable)?;
    if !link.wait_connected(CONNECT_WINDOW).await {
        return Err(unreachable());
    }
    // Every exec, file copy and port stream comes here: a use of the VM.
    drop(ctl.activity.touch(id));
    Ok(link)
}

/// Both streams of one exec, each capped at [`MAX_OUTPUT`].
#[derive(Default)]
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    truncated: bool,
}

impl Output {
    fn push(&mut self, stream: Stream, bytes: &[u8]) {
        let buf = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        let room = MAX_OUTPUT.saturating_sub(buf.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn finish(self, code: Option<i32>, signal: Option<i32>, timed_out: bool) -> ExecResult {
        ExecResult {
            exit_code: code,
            signal,
            timed_out,
            stdout: String::from_utf8_lossy(&self.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&self.stderr).into_owned(),
            truncated: self.truncated,
        }
    }
}

/// How an exec ended, in a few words.
fn outcome(code: Option<i32>, signal: Option<i32>, timed_out: bool) -> String {
    match (code, signal) {
        (Some(code), _) => format!("exited {code}"),
        (None, Some(sig)) if timed_out => format!("timed out (killed by signal {sig})"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "could not be started".to_owned(),
    }
}

/// The program's name for the event: its last path component, at most 64
/// characters, printable only. Never an argument.
fn program_name(argv0: &str) -> String {
    let base = argv0.rsplit('/').next().unwrap_or(argv0);
    let base = if base.is_empty() { argv0 } else { base };
    base.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_names_the_program_only() {
        assert_eq!(program_name("/usr/bin/env"), "env");
        assert_eq!(program_name("sh"), "sh");
        assert_eq!(program_name("a\nb"), "ab");
        assert_eq!(program_name(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn outcomes_read_plainly() {
        assert_eq!(
            outcome(None, Some(9), true),
            "timed out (killed by signal 9)"
        );
        assert_eq!(outcome(Some(3), None, false), "exited 3");
        assert_eq!(outcome(None, None, false), "could not be started");
    }
}
