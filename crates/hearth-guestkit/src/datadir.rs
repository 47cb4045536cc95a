//! hearth's data directory: where kernels, images, caches and VM
//! directories live. One type owns the layout so no other code joins paths
//! by hand.
//!
//! ```text
//! <root>/kernels/<version>/vmlinuz           the kernel as packaged
//! <root>/kernels/<version>/modules/          lib/modules/<version>/... with modules.dep
//! <root>/kernels/<version>/initramfs.cpio.gz built by hearth, cached
//! <root>/kernels/default                     the version `hearth kernel fetch` chose
//! <root>/images/<name>/rootfs.ext4           a shared, read-only image
//! <root>/images/<name>/manifest.json         the inputs it was built from
//! <root>/cache/                              derived files (extracted vmlinux, layer templates)
//! <root>/vms/<vm-id>/                        one directory per VM of `hearth serve`
//! <root>/runs/<vm-id>/                       one directory per `hearth vm run`
//! <root>/archives/<vm-id>/                   logs of a destroyed VM
//! <root>/hearth.db                           the store of `hearth serve`
//! ```

use std::path::{Path, PathBuf};

use hearth_types::VmId;

/// The data directory root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The environment variable that overrides the default location.
    pub const ENV: &'static str = "HEARTH_DATA_DIR";

    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    /// `$HEARTH_DATA_DIR`, else /var/lib/hearth for root, else
    /// `$XDG_DATA_HOME/hearth` or `~/.local/share/hearth`.
    pub fn from_env() -> Self {
        if let Some(dir) = std::env::var_os(Self::ENV).filter(|v| !v.is_empty()) {
            return DataDir::new(dir);
        }
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return DataDir::new("/var/lib/hearth");
        }
        let base = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        DataDir::new(base.join("hearth"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn kernels(&self) -> PathBuf {
        self.root.join("kernels")
    }

    pub fn kernel(&self, version: &str) -> PathBuf {
        self.kernels().join(version)
    }

    /// The file naming the default kernel version.
    pub fn default_kernel_file(&self) -> PathBuf {
        self.kernels().join("default")
    }

    pub fn image(&self, name: &str) -> PathBuf {
        self.root.join("images").join(name)
    }

    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }

    pub fn vms(&self) -> PathBuf {
        self.root.join("vms")
    }

    pub fn vm(&self, id: &VmId) -> PathBuf {
        self.vms().join(id.as_str())
    }

    /// Directories of foreground runs (`hearth vm run`), kept apart from
    /// the VMs `hearth serve` manages so neither cleans up the other's.
    /// Where snapshots keep their files, one directory per snapshot.
    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    pub fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// Where destroyed VMs' logs are kept, one directory per VM.
    pub fn archives(&self) -> PathBuf {
        self.root.join("archives")
    }

    pub fn archive(&self, id: &VmId) -> PathBuf {
        self.archives().join(id.as_str())
    }

    /// The embedded store of `hearth serve`.
    pub fn store_file(&self) -> PathBuf {
        self.root.join("hearth.db")
    }

    /// The lock file serialising builds of one asset across processes.
    pub fn build_lock(&self, asset: &str) -> PathBuf {
        self.root.join("locks").join(format!("{asset}.lock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_rooted_and_vm_dirs_use_the_id() {
        let d = DataDir::new("/data");
        let id: VmId = "vm-abc".parse().unwrap();
        assert_eq!(d.vm(&id), Path::new("/data/vms/vm-abc"));
        assert_eq!(d.image("minimal"), Path::new("/data/images/minimal"));
        assert_eq!(d.default_kernel_file(), Path::new("/data/kernels/default"));
    }
}
