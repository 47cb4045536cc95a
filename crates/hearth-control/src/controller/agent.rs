//! The controller's side of the agent links: one per running VM (over
//! QEMU's virtio-serial socket or Firecracker's vsock), started with its
//! hypervisor (or at adoption) and stopped when it exits; the agent's
//! `ready` turns into the VM's.

use std::sync::Arc;

use hearth_guestkit::image;
use hearth_store::VmRecord;
use hearth_types::{BackendKind, VmId};
use hearth_vmm::AgentEndpoint;
use tokio::sync::mpsc;

use super::{prepare_files, watch, Controller};
use crate::agent_link::{LinkSpec, Notice};

/// Starts the link of a VM whose hypervisor was started or adopted: over
/// QEMU's virtio-serial socket, or Firecracker's vsock.
pub(super) fn start_link(ctl: &Controller, id: &VmId, backend: BackendKind) {
    let socket = prepare_files(ctl, id).agent_socket;
    ctl.links.start(LinkSpec {
        vm: id.clone(),
        endpoint: AgentEndpoint::for_channel(backend, &socket),
        store: Arc::clone(&ctl.store),
        notices: ctl.notice_tx.clone(),
    });
}

/// Turns the links' notices into state changes, until the controller goes.
pub(super) fn handle_notices(ctl: &Arc<Controller>) {
    let Some(mut rx) = ctl.notices.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    let weak = Arc::downgrade(ctl);
    tokio::spawn(async move {
        while let Some(notice) = rx.recv().await {
            let Some(ctl) = weak.upgrade() else { return };
            match notice {
                Notice::Ready(id) => {
                    watch::mark_ready(
                        &ctl,
                        &id,
                        "ready: the agent reported every readiness check passed",
                    )
                    .await
                }
            }
        }
    });
}

/// A booting VM whose agent's `ready` was stored by an earlier controller
/// that stopped before it marked the VM: the agent will not send it again
/// (it was acked), so the store says it.
/// Only a `ready` of this boot counts: a kept VM that booted again has its
/// earlier boots' records too.
pub(super) async fn ready_if_recorded(ctl: &Controller, record: &VmRecord) {
    let id = &record.vm.id;
    let since = record.boot_started_at();
    if let Ok(Some(r)) = ctl.store.latest_agent_record(id, "ready").await {
        if r.at < since {
            return;
        }
        watch::mark_ready(
            ctl,
            id,
            "ready: the agent had reported every readiness check passed",
        )
        .await;
    }
}

/// The kernel command line parameter that makes the agent wait for the
/// host's configuration before it starts services.
pub(super) const CONFIG_FROM_HOST: &str = "hearth.config=host";

/// Whether the VM's readiness comes from its agent rather than from the
/// console marker: agent readiness is on and the image carries the agent.
pub(super) fn ready_from_agent(ctl: &Controller, vm: &hearth_types::api::Vm) -> bool {
    ctl.config.agent_readiness && vm.backend == BackendKind::Qemu && image_has_agent(ctl, &vm.image)
}

/// Whether the image was built with the agent (its manifest names one).
/// The minimal image's init starts it; the debian image runs it as a unit.
pub(super) fn image_has_agent(ctl: &Controller, image: &str) -> bool {
    let Ok(Some(manifest)) = image::read_manifest(&ctl.config.data, image) else {
        return false;
    };
    let agent = &manifest.inputs.agent_sha256;
    !agent.is_empty() && agent != "none"
}

/// A sender and receiver for the controller's notices.
pub(super) fn notice_channel() -> (
    mpsc::UnboundedSender<Notice>,
    std::sync::Mutex<Option<mpsc::UnboundedReceiver<Notice>>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, std::sync::Mutex::new(Some(rx)))
}
