//! Kernel modules for the initramfs: which files, in which load order,
//! read from the `modules.dep` that `depmod` generated for the kernel.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The modules a hearth guest needs before it can mount its root: virtio
/// transport and devices, vsock for the agent channel, overlayfs to join the
/// shared image and the VM's writable layer.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "vsock",
    "vmw_vsock_virtio_transport",
    "overlay",
];

/// One module to load, as it will be named inside the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    pub name: String,
    /// Path below `lib/modules/<version>/` on the host.
    pub rel_path: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("could not read {path}: run `hearth kernel fetch` again to regenerate it")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel {version} has no module {name:?} and does not build it in: the guest could not find its disks or channel with it; use a kernel that has it")]
    Missing { version: String, name: String },
    #[error("could not decompress module {path}")]
    Decompress {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `modules.dep` and `modules.builtin` of one kernel.
#[derive(Debug)]
pub struct ModuleIndex {
    version: String,
    dir: PathBuf,
    deps: HashMap<String, (String, Vec<String>)>,
    builtin: HashSet<String>,
}

/// `kernel/fs/overlayfs/overlay.ko.xz` -> `overlay`; `-` and `_` are one.
pub fn module_name(rel_path: &str) -> String {
    let file = rel_path.rsplit('/').next().unwrap_or(rel_path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl ModuleIndex {
    /// Reads the index of `<modules_root>/lib/modules/<version>`.
    pub fn load(modules_root: &Path, version: &str) -> Result<Self, ModuleError> {
        Self::load_dir(&modules_root.join("lib/modules").join(version), version)
    }

    /// Reads the index of `dir`, a kernel's `lib/modules/<version>/`.
    pub fn load_dir(dir: &Path, version: &str) -> Result<Self, ModuleError> {
        let dir = dir.to_owned();
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| ModuleError::Read { path, source })
        };
        let dep = read("modules.dep")?;
        let builtin = read("modules.builtin").unwrap_or_default();
        Ok(ModuleIndex {
            version: version.to_owned(),
            deps: parse_modules_dep(&dep),
            builtin: builtin.lines().map(module_name).collect(),
            dir,
        })
    }

    /// The modules to load for `wanted`, dependencies first, each once.
    /// Built-in modules are skipped.
    pub fn load_order(&self, wanted: &[&str]) -> Result<Vec<ModuleFile>, ModuleError> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for name in wanted {
            self.visit(&name.replace('-', "_"), &mut seen, &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        seen: &mut HashSet<String>,
        order: &mut Vec<ModuleFile>,
    ) -> Result<(), ModuleError> {
        if !seen.insert(name.to_owned()) || self.builtin.contains(name) {
            return Ok(());
        }
        let Some((rel_path, deps)) = self.deps.get(name) else {
            return Err(ModuleError::Missing {
                version: self.version.clone(),
                name: name.to_owned(),
            });
        };
        // modules.dep lists the deepest dependency last.
        for dep in deps.iter().rev() {
            self.visit(&module_name(dep), seen, order)?;
        }
        order.push(ModuleFile {
            name: name.to_owned(),
            rel_path: rel_path.clone(),
        });
        Ok(())
    }

    /// The module's bytes, decompressed if it is shipped as .xz, .zst or .gz.
    pub fn read_module(&self, m: &ModuleFile) -> Result<Vec<u8>, ModuleError> {
        let path = self.dir.join(&m.rel_path);
        let raw = std::fs::read(&path).map_err(|source| ModuleError::Read {
            path: path.clone(),
            source,
        })?;
        decompress_module(&m.rel_path, raw)
            .map_err(|source| ModuleError::Decompress { path, source })
    }
}

fn decompress_module(rel_path: &str, raw: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    if rel_path.ends_with(".ko.xz") {
        xz2::read::XzDecoder::new(&raw[..]).read_to_end(&mut out)?;
    } else if rel_path.ends_with(".ko.zst") {
        out = zstd::decode_all(&raw[..])?;
    } else if rel_path.ends_with(".ko.gz") {
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out)?;
    } else {
        return Ok(raw);
    }
    Ok(out)
}

fn parse_modules_dep(text: &str) -> HashMap<String, (String, Vec<String>)> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(path, deps)| {
            let deps = deps.split_whitespace().map(str::to_owned).collect();
            (module_name(path), (path.to_owned(), deps))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(dep: &str, builtin: &str) -> (tempfile::TempDir, ModuleIndex) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("lib/modules/6.1.0-test");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("modules.dep"), dep).unwrap();
        std::fs::write(dir.join("modules.builtin"), builtin).unwrap();
        let idx = ModuleIndex::load(root.path(), "6.1.0-test").unwrap();
        (root, idx)
    }

    const DEP: &str = "kernel/drivers/virtio/virtio_ring.ko:\n\
        kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n\
        kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
        kernel/net/vmw_vsock/vsock-diag.ko.xz:\n";

    #[test]
    fn dependencies_come_first_and_once() {
        let (_d, idx) = index(DEP, "");
        let names: Vec<_> = idx
            .load_order(&["virtio_blk", "virtio"])
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["virtio_ring", "virtio", "virtio_blk"]);
    }

    #[test]
    fn builtin_modules_are_skipped_and_dashes_match_underscores() {
        let (_d, idx) = index(DEP, "kernel/drivers/virtio/virtio_ring.ko\n");
        let order = idx.load_order(&["virtio", "vsock-diag"]).unwrap();
        let names: Vec<_> = order.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["virtio", "vsock_diag"]);
        assert_eq!(order[1].rel_path, "kernel/net/vmw_vsock/vsock-diag.ko.xz");
    }

    #[test]
    fn a_missing_module_is_named() {
        let (_d, idx) = index(DEP, "");
        let err = idx.load_order(&["overlay"]).unwrap_err().to_string();
        assert!(
            err.contains("\"overlay\"") && err.contains("6.1.0-test"),
            "{err}"
        );
    }

    #[test]
    fn compressed_modules_are_decompressed() {
        let mut xz = Vec::new();
        xz2::read::XzEncoder::new(&b"\x7fELF module"[..], 1)
            .read_to_end(&mut xz)
            .unwrap();
        assert_eq!(decompress_module("a.ko.xz", xz).unwrap(), b"\x7fELF module");
        assert_eq!(decompress_module("a.ko", b"raw".to_vec()).unwrap(), b"raw");
    }
}
