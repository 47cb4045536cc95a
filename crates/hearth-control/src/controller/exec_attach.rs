//! Interactive exec (the API's exec WebSocket): a command one types into.
//!
//! It comes in two steps because the WebSocket does: [`target`] checks the
//! VM (the caller may see it, it is ready, its agent is connected and new
//! enough) while an error can still be an HTTP status, and
//! [`ExecTarget::start`] runs the command once the client said what it is.
//! A started command that is dropped before its end is hung up: nothing a
//! client started outlives the client by accident. Only the program's name
//! reaches logs and events, never its arguments or input.

use hearth_types::api::ExecRequest;
use hearth_types::guest::{ExecSignal, TermSize};
use hearth_types::VmId;

use super::exec::{ready_link, spec_of, ExecError, ExecStream};
use super::{ControlError, Controller, Scope};
use crate::agent_link::{ExecEvent, ExecInput, ExecSpec, LinkHandle, INTERACTIVE_PROTOCOL};

/// A VM checked for an interactive exec, not running anything yet.
#[derive(Debug)]
pub struct ExecTarget {
    vm: VmId,
    link: LinkHandle,
}

/// The VM `id` for an interactive exec: one the caller may see, ready, its
/// agent connected and speaking protocol 3.
pub(super) async fn target(
    ctl: &Controller,
    scope: &Scope,
    id: &VmId,
) -> Result<ExecTarget, ExecError> {
    let link = ready_link(ctl, scope, id).await?;
    if let Some(protocol) = link.protocol() {
        if protocol < INTERACTIVE_PROTOCOL {
            return Err(ExecError::AgentTooOld {
                vm: id.clone(),
                protocol,
            });
        }
    }
    Ok(ExecTarget {
        vm: id.clone(),
        link,
    })
}

impl ExecTarget {
    /// Runs `req` with its stdin fed by [`AttachedExec::stdin`], on a
    /// terminal of `size` with `tty`.
    pub fn start(
        self,
        ctl: &Controller,
        req: ExecRequest,
        tty: bool,
        size: Option<TermSize>,
    ) -> Result<AttachedExec, ExecError> {
        check_start(&req, tty, size).map_err(ControlError::Invalid)?;
        let spec = ExecSpec {
            tty,
            stdin: true,
            size,
            ..spec_of(req)
        };
        let (stream, input) = ExecStream::start(ctl, &self.vm, &self.link, spec)?;
        Ok(AttachedExec {
            vm: self.vm,
            stream,
            input,
            tty,
        })
    }
}

/// What is wrong with a start, in words for the client.
fn check_start(req: &ExecRequest, tty: bool, size: Option<TermSize>) -> Result<(), String> {
    req.check()?;
    match size {
        Some(_) if !tty => Err(
            "size is the size of a terminal: give \"tty\": true with it, or leave it out".into(),
        ),
        Some(size) => size.check(),
        None => Ok(()),
    }
}

/// A running interactive exec: its events, and the way to feed it.
#[derive(Debug)]
pub struct AttachedExec {
    vm: VmId,
    stream: ExecStream,
    input: ExecInput,
    tty: bool,
}

impl AttachedExec {
    /// The next event; `Ok(None)` after the last. The VM's events get the
    /// program's name and outcome when it ends.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>, ExecError> {
        self.stream.next().await
    }

    /// Bytes for its stdin (its terminal, with `tty`).
    pub fn stdin(&self, bytes: Vec<u8>) -> Result<(), ExecError> {
        self.input.send(bytes).map_err(|e| self.link_error(e))
    }

    /// No more input.
    pub fn stdin_end(&self) -> Result<(), ExecError> {
        self.input.end().map_err(|e| self.link_error(e))
    }

    /// The terminal's new size; without a terminal there is nothing to
    /// size, and it is ignored (a client may forward every resize).
    pub fn resize(&self, size: TermSize) -> Result<(), ExecError> {
        size.check().map_err(ControlError::Invalid)?;
        if !self.tty {
            return Ok(());
        }
        self.input.resize(size).map_err(|e| self.link_error(e))
    }

    /// `signal` for its whole process group.
    pub fn signal(&self, signal: ExecSignal) -> Result<(), ExecError> {
        let number = signal.number();
        self.input.signal(number).map_err(|e| self.link_error(e))
    }

    /// The client went away: SIGHUP to its process group, input closed.
    /// Its events still come, to the end.
    pub fn hang_up(&self) {
        if let Err(e) = self.input.hang_up() {
            tracing::debug!(vm = %self.vm, exec = self.input.id(), error = %e, "no hang-up sent");
        }
    }

    fn link_error(&self, e: crate::agent_link::LinkError) -> ExecError {
        ExecError::from_link(&self.vm, e)
    }
}

impl Drop for AttachedExec {
    fn drop(&mut self) {
        if !self.stream.ended() {
            self.hang_up();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(argv: &[&str]) -> ExecRequest {
        ExecRequest {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            timeout_secs: None,
            env: vec![],
        }
    }

    #[test]
    fn a_start_names_what_is_wrong() {
        let size = TermSize { rows: 24, cols: 80 };
        assert!(check_start(&req(&["sh"]), true, Some(size)).is_ok());
        assert!(check_start(&req(&["sh"]), false, None).is_ok());
        let e = check_start(&req(&["sh"]), false, Some(size)).unwrap_err();
        assert!(e.contains("tty"), "{e}");
        let zero = TermSize { rows: 0, cols: 80 };
        let e = check_start(&req(&["sh"]), true, Some(zero)).unwrap_err();
        assert!(e.contains("zero"), "{e}");
        let e = check_start(&req(&[]), true, None).unwrap_err();
        assert!(e.contains("argv"), "{e}");
    }
}
