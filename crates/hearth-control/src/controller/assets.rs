//! What VMs boot from, resolved once per image and reused while the image
//! and the default kernel are unchanged: resolving means hashing busybox
//! and reading the module index for the initramfs, a few milliseconds that
//! every create would otherwise pay.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use hearth_guestkit::{image, DataDir};

use crate::prepare::{self, BootAssets, PrepareError};

/// The modification times that, when changed, make cached assets stale.
type Fingerprint = Option<(SystemTime, SystemTime)>;

#[derive(Debug, Default)]
pub(super) struct AssetCache {
    by_image: Mutex<HashMap<String, (BootAssets, Fingerprint)>>,
}

impl AssetCache {
    pub(super) fn get(&self, data: &DataDir, image_name: &str) -> Result<BootAssets, PrepareError> {
        let key = fingerprint(data, image_name);
        let cached = self.lock().get(image_name).cloned();
        if let Some((assets, k)) = cached {
            if key.is_some() && k == key && assets.initramfs.as_ref().is_none_or(|p| p.exists()) {
                return Ok(assets);
            }
        }
        let assets = prepare::resolve_assets(data, None, image_name)?;
        self.lock()
            .insert(image_name.to_owned(), (assets.clone(), key));
        Ok(assets)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (BootAssets, Fingerprint)>> {
        self.by_image.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn fingerprint(data: &DataDir, image_name: &str) -> Fingerprint {
    let mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let image = mtime(&image::find_image(data, image_name).ok()?)?;
    let kernel = mtime(&data.default_kernel_file())?;
    Some((image, kernel))
}
