//! `POST /v1/vms/{id}/exec`: run one command in a ready VM through its
//! guest agent. Only the command's name goes into the VM's events and the
//! log, never its arguments or output: they may carry secrets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hearth_types::api::{ExecRequest, ExecResult};
use hearth_types::{BackendKind, Timestamp, VmId, VmState};

use super::{prepare_files, ControlError, Controller, Scope};
use crate::agent::{self, AgentError, ExecSpec};

/// Why an exec did not run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("VM {id} is {state}, not ready: exec needs a ready VM (`hearth vm show {id}`)")]
    NotReady { id: VmId, state: VmState },
    #[error("VM {0} runs under Firecracker, which has no agent channel yet: exec needs a QEMU VM")]
    NoChannel(VmId),
    #[error(transparent)]
    Agent(#[from] AgentError),
}

pub(super) async fn exec(
    ctl: &Controller,
    scope: &Scope,
    id: &VmId,
    req: ExecRequest,
) -> Result<ExecResult, ExecError> {
    req.check().map_err(ControlError::Invalid)?;
    let record = ctl.record(scope, id).await?;
    if record.vm.state != VmState::Ready {
        return Err(ExecError::NotReady {
            id: id.clone(),
            state: record.vm.state,
        });
    }
    if record.vm.backend == BackendKind::Firecracker {
        return Err(ExecError::NoChannel(id.clone()));
    }
    let program = program_name(&req.argv[0]);
    let socket = prepare_files(ctl, id).agent_socket;
    let spec = ExecSpec {
        argv: req.argv.clone(),
        timeout: Duration::from_secs(req.timeout()),
    };
    // The channel has one host end: execs on one VM take turns, each
    // starting a little after the last hang-up so the agent has seen it.
    let turn = channel_lock(id);
    let mut last_hangup = turn.lock().await;
    if let Some(at) = *last_hangup {
        tokio::time::sleep_until((at + agent::HANGUP_GAP).into()).await;
    }
    let vm = id.clone();
    let result = tokio::task::spawn_blocking(move || agent::exec(&vm, &socket, &spec))
        .await
        .map_err(|e| ControlError::Io {
            what: format!("the exec in VM {id}"),
            source: std::io::Error::other(e),
        })?;
    *last_hangup = Some(Instant::now());
    drop(last_hangup);
    let message = match &result {
        Ok(r) => format!("exec: {program} {}", outcome(r)),
        Err(_) => format!("exec: {program} failed: the agent could not be reached"),
    };
    tracing::info!(vm = %id, program = %program, "{message}");
    // The command ran: its result is worth more than a lost event.
    if let Err(e) = ctl.store.add_event(id, Timestamp::now(), &message).await {
        tracing::warn!(vm = %id, error = %hearth_types::error_chain(&e), "the exec event was not recorded");
    }
    Ok(result?)
}

/// A VM's channel: whose turn it is, and when the last exec hung up.
type Turn = tokio::sync::Mutex<Option<Instant>>;

/// Per VM, the lock its execs take turns on. Entries nobody holds are
/// dropped as new ones are made, so the map stays as small as the number
/// of VMs with an exec under way.
fn channel_lock(id: &VmId) -> Arc<Turn> {
    static LOCKS: OnceLock<Mutex<HashMap<VmId, Arc<Turn>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    locks.retain(|_, l| Arc::strong_count(l) > 1);
    Arc::clone(locks.entry(id.clone()).or_default())
}

/// How an exec ended, in a few words.
fn outcome(r: &ExecResult) -> String {
    match (r.exit_code, r.signal) {
        (Some(code), _) => format!("exited {code}"),
        (None, Some(sig)) if r.timed_out => format!("timed out (killed by signal {sig})"),
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
        let r = ExecResult {
            exit_code: None,
            signal: Some(9),
            timed_out: true,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
        };
        assert_eq!(outcome(&r), "timed out (killed by signal 9)");
        let r = ExecResult {
            exit_code: Some(3),
            ..r
        };
        assert_eq!(outcome(&r), "exited 3");
    }
}
