//! The idle policy of persistent VMs (`idle_stop_secs`): every exec, file
//! copy and port stream (the viewer's too) goes through the controller's
//! checks of a ready VM, which mark the VM used; a stream or exec still
//! open keeps it in use. A ready VM unused for its idle period is stopped,
//! with an event saying so. Uses are kept in memory: after a restart of
//! `hearth serve` an adopted VM's idle period starts again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hearth_store::VmRecord;
use hearth_types::{VmId, VmState};

use super::Controller;

/// Held while an exec or a stream of a VM is open: the VM is in use.
#[derive(Debug)]
pub struct InUse(());

/// Per VM: when it was last seen used, and the uses still open.
#[derive(Debug, Default)]
pub(super) struct Activity {
    by_vm: Mutex<HashMap<VmId, Uses>>,
}

#[derive(Debug)]
struct Uses {
    last: Instant,
    open: Vec<Weak<InUse>>,
}

impl Activity {
    /// VM `id` is used now; the token keeps it in use while held.
    pub(super) fn touch(&self, id: &VmId) -> Arc<InUse> {
        let token = Arc::new(InUse(()));
        let mut map = self.lock();
        let uses = map.entry(id.clone()).or_insert_with(Uses::new);
        uses.last = Instant::now();
        uses.open.retain(|w| w.strong_count() > 0);
        uses.open.push(Arc::downgrade(&token));
        token
    }

    /// How long VM `id` has been unused at `now`; the first look starts
    /// its idle period.
    fn idle_for(&self, id: &VmId, now: Instant) -> Duration {
        let mut map = self.lock();
        let uses = map.entry(id.clone()).or_insert_with(Uses::new);
        uses.open.retain(|w| w.strong_count() > 0);
        if !uses.open.is_empty() {
            uses.last = now;
        }
        now.saturating_duration_since(uses.last)
    }

    /// Drops what is known of VM `id`'s uses (a new boot starts afresh).
    pub(super) fn forget(&self, id: &VmId) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<VmId, Uses>> {
        self.by_vm.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Uses {
    fn new() -> Self {
        Uses {
            last: Instant::now(),
            open: Vec::new(),
        }
    }
}

/// The reconciler: ready VMs with an idle period that nothing used for
/// that long are stopped.
pub(super) async fn stop_idle(ctl: &Arc<Controller>, active: &[VmRecord]) {
    let now = Instant::now();
    for r in active {
        let Some(secs) = r.vm.idle_stop_secs else {
            continue;
        };
        if r.vm.state != VmState::Ready {
            continue;
        }
        let idle = ctl.activity.idle_for(&r.vm.id, now);
        if idle < Duration::from_secs(secs) {
            continue;
        }
        let message = format!(
            "stopping: idle for {} s (idle_stop_secs {secs}): no exec, file copy, port stream or \
             viewer use",
            idle.as_secs()
        );
        match super::persist::stop_record(ctl, r, &message).await {
            Ok(_) => tracing::info!(vm = %r.vm.id, secs, "stopped an idle VM"),
            Err(e) => tracing::warn!(vm = %r.vm.id, error = %e, "could not stop an idle VM"),
        }
        ctl.activity.forget(&r.vm.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_use_keeps_a_vm_busy_until_it_is_dropped() {
        let activity = Activity::default();
        let id: VmId = "vm-0123456789ab".parse().unwrap();
        let start = Instant::now();
        assert!(activity.idle_for(&id, start) < Duration::from_secs(1));
        let later = start + Duration::from_secs(100);
        assert!(activity.idle_for(&id, later) >= Duration::from_secs(99));
        let token = activity.touch(&id);
        let much_later = start + Duration::from_secs(500);
        assert_eq!(activity.idle_for(&id, much_later), Duration::ZERO);
        drop(token);
        let after = much_later + Duration::from_secs(30);
        assert_eq!(activity.idle_for(&id, after), Duration::from_secs(30));
        activity.forget(&id);
        assert!(activity.idle_for(&id, Instant::now()) < Duration::from_secs(1));
    }
}
