//! Making one pooled VM: a cold boot of the pool's image, or, for a pool
//! with a template, a restore of that snapshot (the image's services
//! already up in it); and the fingerprint of what a pooled VM is made
//! from, so one made from assets that changed since is never handed out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use hearth_store::{PoolRecord, PoolVmRecord, VmRecord};
use hearth_types::{error_chain, FailureCode, VmId};

use crate::controller::{create, restore, ControlError, Controller};

/// Makes one VM for `pool`: recorded (tenant
/// [`hearth_types::TenantId::pool`], no configuration) with its pool row
/// before it starts, so that its agent connects and waits for the
/// configuration its hand-out sends; its readiness deadline is past the
/// pool's time to live, as the pool removes it by then.
pub(super) async fn make(ctl: &Arc<Controller>, pool: &PoolRecord) -> Result<VmId, ControlError> {
    let keep = Duration::from_secs(pool.settings.ttl_secs);
    let assets = assets_of(ctl, pool).await;
    let nic = super::nic::pooled_nic(ctl, pool).then(super::nic::closed);
    match &pool.settings.template {
        None => create::create_pooled(ctl, &pool.image, assets, keep, nic).await,
        Some(name) => restore::create_pooled(ctl, name, assets, keep).await,
    }
}

/// Adds `record`, recorded already, to its pool; a VM that cannot be is
/// failed (and cleaned up like any failed VM).
pub(in crate::controller) async fn add_to_pool(
    ctl: &Arc<Controller>,
    record: &VmRecord,
    assets: String,
) -> Result<(), ControlError> {
    let row = PoolVmRecord {
        vm: record.vm.id.clone(),
        image: record.vm.image.clone(),
        assets,
        created_at: record.vm.created_at,
        warm: false,
        warm_since: None,
    };
    if let Err(e) = ctl.store.add_pool_vm(&row).await {
        let message = format!("could not be added to its pool: {}", error_chain(&e));
        crate::controller::cleanup::fail(ctl, &record.vm.id, FailureCode::StartFailed, message)
            .await;
        return Err(e.into());
    }
    Ok(())
}

/// What a VM of `pool` is made from now: the image file, the default
/// kernel and the QEMU binary, each by path, size and modification time,
/// whether its VMs have a NIC, and the template snapshot (by name and when
/// it was taken) if any.
pub(super) async fn assets_of(ctl: &Controller, pool: &PoolRecord) -> String {
    let mut assets = boot_assets(ctl, &pool.image);
    if super::nic::pooled_nic(ctl, pool) {
        assets.push_str(";nic");
    }
    if let Some(name) = &pool.settings.template {
        let taken = match ctl.store.snapshot(name).await {
            Ok(Some(s)) => s.created_at.as_millis(),
            _ => 0,
        };
        assets.push_str(&format!(";template {name}:{taken}"));
    }
    assets
}

/// The image, kernel and hypervisor part of [`assets_of`].
pub(super) fn boot_assets(ctl: &Controller, image: &str) -> String {
    let data = &ctl.config.data;
    let image = hearth_guestkit::image::find_image(data, image).ok();
    let qemu = on_path(hearth_vmm::qemu::QEMU);
    [image, Some(data.default_kernel_file()), qemu]
        .iter()
        .map(|p| p.as_deref().map_or("-".to_owned(), stamp))
        .collect::<Vec<_>>()
        .join(";")
}

fn stamp(path: &Path) -> String {
    let meta = std::fs::metadata(path).ok();
    let len = meta.as_ref().map_or(0, |m| m.len());
    let mtime = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{}:{len}:{mtime}", path.display())
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_changes_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("image.ext4");
        std::fs::write(&f, b"one").unwrap();
        let before = stamp(&f);
        std::fs::write(&f, b"three").unwrap();
        assert_ne!(before, stamp(&f));
        assert!(stamp(&dir.path().join("missing")).ends_with(":0:0"));
    }
}
