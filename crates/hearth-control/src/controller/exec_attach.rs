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

    /// Bytes for its stdin (its terminal, with `tty`). Never waits; a
    /// feeder reads no more from its client until [`AttachedExec::input_room`].
    pub fn stdin(&self, bytes: Vec<u8>) -> Result<(), ExecError> {
        self.input.send(bytes).map_err(|e| self.link_error(e))
    }

    /// Whether the command is keeping up with its input: false while the
    /// host holds a full `HELD_INPUT_LIMIT` of it, not yet taken.
    pub fn has_input_room(&self) -> bool {
        self.input.has_room()
    }

    /// Resolves once [`AttachedExec::has_input_room`]; owns what it needs,
    /// so it can wait beside [`AttachedExec::next`].
    pub fn input_room(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let input = self.input.clone();
        async move { input.room().await }
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
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::Arc;
    use std::time::Duration;

    use hearth_agent_proto::{read_frame, write_frame, GuestMessage, HostMessage};
    use hearth_store::{StateChange, Store};
    use hearth_types::{Timestamp, VmState};

    use super::*;
    use crate::agent_link::LinkSpec;
    use crate::controller::ControllerConfig;

    /// A controller with one ready VM of tenant `t` whose link talks to a
    /// scripted agent of protocol `protocol`: the agent's side, after the
    /// handshake.
    struct Rig {
        _dir: tempfile::TempDir,
        ctl: Arc<Controller>,
        vm: VmId,
        agent: UnixStream,
    }

    async fn rig(protocol: u32) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (store, vm) = crate::test_support::store_with_vm("vm-00000000000c").await;
        let ctl = Controller::new(
            store.clone(),
            ControllerConfig::new(hearth_guestkit::DataDir::new(dir.path())),
        );
        let now = Timestamp::now();
        for (from, to) in [
            (VmState::Requested, VmState::Booting),
            (VmState::Booting, VmState::Ready),
        ] {
            store
                .transition(&vm, from, &StateChange::to(to, now, "test"))
                .await
                .unwrap();
        }
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        ctl.links.start(LinkSpec {
            vm: vm.clone(),
            endpoint: hearth_vmm::AgentEndpoint::Unix(socket),
            store,
            notices: ctl.notice_tx.clone(),
        });
        let agent = tokio::task::spawn_blocking(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let hello = GuestMessage::Hello {
                protocol,
                agent_version: "old".into(),
                boot_id: "b".into(),
                instance: "i".into(),
                uptime_ms: 1,
            };
            write_frame(&mut s, &hello).unwrap();
            for _ in 0..2 {
                let _welcome_then_config: HostMessage = read_frame(&mut s).unwrap().unwrap();
            }
            s
        })
        .await
        .unwrap();
        Rig {
            _dir: dir,
            ctl,
            vm,
            agent,
        }
    }

    fn scope() -> Scope {
        Scope {
            tenant: "t".parse().unwrap(),
            admin: false,
        }
    }

    async fn agent_reads(agent: &mut UnixStream) -> HostMessage {
        let mut s = agent.try_clone().unwrap();
        tokio::task::spawn_blocking(move || read_frame(&mut s).unwrap().expect("a message"))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn an_agent_of_protocol_2_is_refused_before_anything_starts() {
        let rig = rig(2).await;
        let e = rig.ctl.exec_target(&scope(), &rig.vm).await.unwrap_err();
        assert!(
            matches!(e, ExecError::AgentTooOld { protocol: 2, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("scripts/build-agent"), "{e}");
    }

    #[tokio::test]
    async fn a_dropped_attached_exec_is_hung_up_and_an_ended_one_is_not() {
        let mut rig = rig(3).await;
        let target = rig.ctl.exec_target(&scope(), &rig.vm).await.unwrap();
        let exec = target.start(&rig.ctl, req(&["cat"]), false, None).unwrap();
        let HostMessage::Exec { id, stdin, .. } = agent_reads(&mut rig.agent).await else {
            panic!("not an exec")
        };
        assert!(stdin);
        drop(exec);
        assert_eq!(
            agent_reads(&mut rig.agent).await,
            HostMessage::ExecSignal { id, signal: 1 }
        );
        assert_eq!(
            agent_reads(&mut rig.agent).await,
            HostMessage::ExecInputEnd { id }
        );

        let target = rig.ctl.exec_target(&scope(), &rig.vm).await.unwrap();
        let mut exec = target.start(&rig.ctl, req(&["true"]), false, None).unwrap();
        let HostMessage::Exec { id, .. } = agent_reads(&mut rig.agent).await else {
            panic!("not an exec")
        };
        let exit = GuestMessage::ExecExit {
            id,
            code: Some(0),
            signal: None,
            timed_out: false,
        };
        write_frame(&mut rig.agent, &exit).unwrap();
        assert!(matches!(
            exec.next().await,
            Ok(Some(ExecEvent::Exit { .. }))
        ));
        drop(exec);
        // Nothing for the ended exec: the next message is this file read.
        let _file = rig
            .ctl
            .links
            .get(&rig.vm)
            .unwrap()
            .read_file("/x".into(), 1)
            .unwrap();
        let next = agent_reads(&mut rig.agent).await;
        assert!(matches!(next, HostMessage::FileRead { .. }), "{next:?}");
    }

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
