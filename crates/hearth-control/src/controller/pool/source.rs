//! The seam that makes a pooled VM. Today every pooled VM is a cold boot
//! of its image with no configuration; a source that restores one from a
//! snapshot template fits behind the same trait
//! ([`Controller::set_pool_source`](crate::controller::Controller::set_pool_source)).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use hearth_types::VmId;

use crate::controller::{ControlError, Controller};

/// A future a [`PoolSource`] returns.
pub type Making<'a> = Pin<Box<dyn Future<Output = Result<VmId, ControlError>> + Send + 'a>>;

/// Makes one pooled VM of an image.
///
/// A source must: record the VM (tenant [`hearth_types::TenantId::pool`],
/// no configuration, the image's size, on QEMU) and its row in the pool
/// (`PoolStore::add_pool_vm`, with [`assets_of`] the image) before it
/// answers; start it so that its agent connects and waits for its
/// configuration (the agent link holds it back while the VM is the pool
/// tenant's); and give it a readiness deadline no sooner than `keep`
/// (the pool's time to live) from now, as the pool removes it by then.
pub trait PoolSource: Send + Sync + std::fmt::Debug {
    fn make<'a>(&'a self, ctl: &'a Arc<Controller>, image: &'a str, keep: Duration) -> Making<'a>;
}

/// A pooled VM booted cold from its image.
#[derive(Debug, Clone, Copy, Default)]
pub struct ColdBoot;

impl PoolSource for ColdBoot {
    fn make<'a>(&'a self, ctl: &'a Arc<Controller>, image: &'a str, keep: Duration) -> Making<'a> {
        Box::pin(async move {
            let assets = assets_of(ctl, image);
            crate::controller::create::create_pooled(ctl, image, assets, keep).await
        })
    }
}

/// What a VM of `image` boots from now: the image file, the default
/// kernel and the QEMU binary, each by path, size and modification time.
/// A pooled VM booted from other assets is replaced, never handed out.
pub fn assets_of(ctl: &Controller, image: &str) -> String {
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
