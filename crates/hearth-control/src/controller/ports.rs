//! Port forwarding: a TCP stream to a port on a VM's loopback, through its
//! agent (no guest network). What the API's port WebSocket and `hearth vm
//! port-forward` ride on. The checks are those of exec (the caller may see
//! the VM, it is ready, its agent is connected), then the agent's own
//! connect, so "nothing listens there" is an error the caller reads
//! before any byte flows.

use std::time::Duration;

use hearth_types::VmId;

use super::exec::{ready_link, ExecError};
use super::{Controller, Scope};
use crate::agent_link::{PortError, PortStream};

/// How long the agent may take to answer a connect.
const CONNECT_ANSWER: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum PortForwardError {
    /// The VM cannot be reached at all (not found, not ready, no agent).
    #[error(transparent)]
    Vm(#[from] ExecError),
    #[error("port 0 is not a TCP port: give one from 1 to 65535")]
    BadPort,
    #[error("VM {vm}: {why}; start the program that should listen there, or check its port (`hearth vm exec {vm} -- netstat -ltn`)")]
    Refused { vm: VmId, why: String },
    #[error("the agent of VM {vm} speaks protocol {protocol}, too old for port forwarding (it needs protocol {}): rebuild the image with the current agent (`scripts/build-agent`, then `hearth image build --force`) and create the VM again", crate::agent_link::PORTS_PROTOCOL)]
    AgentTooOld { vm: VmId, protocol: u32 },
    #[error("the agent of VM {vm} did not answer the connect to port {port} within {}s", CONNECT_ANSWER.as_secs())]
    NoAnswer { vm: VmId, port: u16 },
    #[error("the agent of VM {vm} hung up before the connect to port {port} was answered: the VM may have stopped (`hearth vm show {vm}`)")]
    Lost { vm: VmId, port: u16 },
}

/// Opens a stream to `port` on VM `id`'s loopback.
pub(super) async fn open(
    ctl: &Controller,
    scope: &Scope,
    id: &VmId,
    port: u16,
) -> Result<PortStream, PortForwardError> {
    if port == 0 {
        return Err(PortForwardError::BadPort);
    }
    let link = ready_link(ctl, scope, id).await?;
    let vm = id.clone();
    match tokio::time::timeout(CONNECT_ANSWER, link.open_port(port)).await {
        Err(_) => Err(PortForwardError::NoAnswer { vm, port }),
        Ok(Ok(mut stream)) => {
            stream.writer.keep_in_use(ctl.activity.touch(id));
            Ok(stream)
        }
        Ok(Err(PortError::Refused(why))) => Err(PortForwardError::Refused { vm, why }),
        Ok(Err(PortError::AgentTooOld { protocol })) => {
            Err(PortForwardError::AgentTooOld { vm, protocol })
        }
        Ok(Err(PortError::Ended | PortError::Lost)) => Err(PortForwardError::Lost { vm, port }),
    }
}
