//! Opening one connection to the agent: connect, read the hello, agree on
//! a protocol version (or refuse the agent with the fix), record the
//! agent, answer `welcome` with what is stored of its records, and send
//! the VM's configuration (held back while the VM waits in a pool).

use std::time::Duration;

use hearth_agent_proto::{
    negotiate, redacted, FrameError, GuestMessage, HostMessage, PORTS_PROTOCOL, PROTOCOL,
    RESTORE_PROTOCOL,
};
use hearth_store::{AgentHello, SnapshotRole};
use hearth_types::{error_chain, Timestamp};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::records::Clock;
use super::{wire, LinkSpec};

/// How long one connect (Firecracker's vsock handshake included) may take.
const CONNECT_TRY: Duration = Duration::from_secs(1);

/// Why a connection never got past its handshake.
pub(super) enum Greet {
    /// Nobody listens (QEMU not up yet, or gone).
    Unreachable,
    /// Connected, but no hello in time.
    Silent,
    Failed(String),
}

/// A connection past its handshake.
pub(super) struct Connection {
    pub(super) writer: OwnedWriteHalf,
    pub(super) frames: mpsc::UnboundedReceiver<Result<GuestMessage, FrameError>>,
    pub(super) reader: JoinHandle<()>,
    pub(super) instance: String,
    pub(super) clock: Clock,
    /// The version chosen in the handshake.
    pub(super) protocol: u32,
}

/// Connects, reads the hello, answers welcome (with the ack of the hello's
/// instance) and sends the VM's configuration.
pub(super) async fn greet(spec: &LinkSpec, hello_window: Duration) -> Result<Connection, Greet> {
    let stream = spec
        .endpoint
        .connect_async(CONNECT_TRY)
        .await
        .map_err(|_| Greet::Unreachable)?;
    let (mut reader, mut writer) = stream.into_split();
    let hello = match tokio::time::timeout(hello_window, wire::read_message(&mut reader)).await {
        Err(_) | Ok(Ok(None)) => return Err(Greet::Silent),
        Ok(Err(e)) => return Err(Greet::Failed(error_chain(&e))),
        Ok(Ok(Some(msg))) => msg,
    };
    let GuestMessage::Hello {
        protocol,
        agent_version,
        boot_id,
        instance,
        uptime_ms,
    } = hello
    else {
        return Err(Greet::Failed(
            "the agent's first message was not a hello".into(),
        ));
    };
    let chosen = match negotiate(PROTOCOL, protocol) {
        Ok(v) => v,
        Err(e) => {
            let reason = e.to_string();
            let refused = HostMessage::Refused {
                reason: reason.clone(),
            };
            let _ = wire::write_message(&mut writer, &refused).await;
            return Err(Greet::Failed(format!(
                "refused the agent: {reason}; rebuild the image with this hearth's agent (scripts/build-agent)"
            )));
        }
    };
    let now = Timestamp::now();
    let record = AgentHello {
        instance: instance.clone(),
        agent_version,
        boot_id,
        connected_at: now,
    };
    let store_failed = |e: hearth_store::StoreError| Greet::Failed(error_chain(&e));
    let acked = spec
        .store
        .agent_hello(&spec.vm, &record)
        .await
        .map_err(store_failed)?;
    let config = config_to_send(spec).await.map_err(store_failed)?;
    let write_failed = |e: FrameError| Greet::Failed(error_chain(&e));
    let welcome = HostMessage::Welcome {
        protocol: chosen,
        acked,
    };
    wire::write_message(&mut writer, &welcome)
        .await
        .map_err(write_failed)?;
    // The clock first: whatever the configuration starts gets the right
    // time (after a boot, and after a restore from a snapshot alike).
    if chosen >= PORTS_PROTOCOL {
        wire::write_message(&mut writer, &time_now())
            .await
            .map_err(write_failed)?;
    }
    // Snapshots: a template gets an empty configuration, so the image's
    // own services run and are in the snapshot but no VM's configuration
    // is; a restored VM is told so, with its new identity, first. A
    // pooled VM's configuration (`None`) waits for its hand-out.
    let role = spec
        .store
        .snapshot_role(&spec.vm)
        .await
        .map_err(store_failed)?;
    let config = match role {
        Some((_, SnapshotRole::Template)) => Some(Default::default()),
        Some((_, SnapshotRole::Restored)) => {
            if chosen < RESTORE_PROTOCOL {
                // It would keep the snapshot's configuration, identity and
                // random state: never a VM of its own.
                return Err(Greet::Failed(format!(
                    "the agent speaks protocol {chosen}, and a VM restored from a snapshot needs \
                     {RESTORE_PROTOCOL}: rebuild the image with this hearth's agent and take the snapshot again"
                )));
            }
            let own = config.clone().unwrap_or_default();
            let restored = super::restored::message(&spec.vm, &own);
            wire::write_message(&mut writer, &restored)
                .await
                .map_err(write_failed)?;
            config
        }
        None => config,
    };
    if let Some(config) = config {
        wire::write_message(&mut writer, &HostMessage::Config { config })
            .await
            .map_err(write_failed)?;
    }
    let (tx, frames) = mpsc::unbounded_channel();
    let vm = spec.vm.clone();
    let reader = tokio::spawn(async move {
        loop {
            match wire::read_message(&mut reader).await {
                Ok(Some(msg)) => {
                    if tx.send(Ok(msg)).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                // The body was consumed whole: the stream is still in step.
                // Its values unquoted: the message may carry a secret.
                Err(FrameError::Decode(e)) => {
                    tracing::warn!(vm = %vm, error = %redacted(&e), "ignoring a message from the agent that is not understood");
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    });
    Ok(Connection {
        writer,
        frames,
        reader,
        instance,
        clock: Clock::from_hello(now, uptime_ms),
        protocol: chosen,
    })
}

/// The VM's configuration, or `None` while it waits in a pool: a pooled VM
/// belongs to no tenant, so its agent is told nothing until a create takes
/// it ([`super::LinkHandle::configure`] sends it then).
pub(super) async fn config_to_send(
    spec: &LinkSpec,
) -> Result<Option<hearth_types::guest::GuestConfig>, hearth_store::StoreError> {
    let pooled = spec
        .store
        .vm(&spec.vm)
        .await?
        .is_some_and(|r| r.vm.tenant == hearth_types::TenantId::pool());
    if pooled {
        return Ok(None);
    }
    Ok(Some(spec.store.guest_config(&spec.vm).await?))
}

/// The host's clock, for the agent to set the guest's from.
pub(super) fn time_now() -> HostMessage {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    HostMessage::Time {
        unix_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
    }
}
