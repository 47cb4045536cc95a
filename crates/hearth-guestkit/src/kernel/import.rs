//! Kernels the user brings. A Firecracker user usually has a kernel of
//! their own, often with every driver built in and no modules; hearth's
//! initramfs needs to know which modules (if any) to load before the root
//! can be mounted. `hearth kernel import` stores such a kernel beside the
//! fetched ones, with its modules or with the statement that its drivers
//! are built in, so `--kernel RELEASE` (or the file) finds them later.
//!
//! A stored kernel directory is complete or absent: it is assembled in a
//! temporary directory under `kernels/` and renamed into place.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{inspect, KernelError};
use crate::DataDir;

/// The file in a kernel directory saying its drivers are built in: the
/// initramfs loads no module for it.
pub const BUILT_IN_MARKER: &str = "modules-built-in";
const IMPORT_MANIFEST: &str = "import.json";

/// Where a kernel's modules come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelModules {
    /// `lib/modules/<release>/` of the kernel, with its `modules.dep`.
    Dir(PathBuf),
    /// None: the drivers a guest needs (virtio, vsock, overlayfs) are built
    /// into the kernel.
    BuiltIn,
}

/// Why a kernel could not be imported, or its modules not found.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("kernel {path} has no version string, so hearth cannot tell its release; import a kernel built with one, or boot it with `hearth vm run --kernel FILE --no-initramfs`")]
    NoRelease { path: PathBuf },
    #[error(
        "kernel {release} is already stored in {dir}; remove that directory first to replace it"
    )]
    Exists { release: String, dir: PathBuf },
    #[error("{dir} holds no modules for kernel {release}: give the directory `make modules_install INSTALL_MOD_PATH=DIR` wrote (with lib/modules/{release}/modules.dep), or lib/modules/{release} itself; run `depmod -b DIR {release}` if modules.dep is missing")]
    NoModulesDep { dir: PathBuf, release: String },
    #[error("could not store the kernel in {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What `import` stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedKernel {
    pub release: String,
    pub dir: PathBuf,
    pub vmlinuz: PathBuf,
    pub modules: KernelModules,
}

/// `kernels/<release>/import.json`: where an imported kernel came from.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportManifest {
    release: String,
    source: PathBuf,
    vmlinuz_sha256: String,
    modules: String,
}

/// The release a kernel file names (`6.1.0-57-cloud-amd64`), if any.
pub fn release_of(path: &Path) -> Result<Option<String>, KernelError> {
    let info = inspect(path)?;
    Ok(info
        .version
        .as_deref()
        .and_then(|v| v.split_whitespace().next())
        .filter(|r| super::fetch::is_plain_version(r))
        .map(str::to_owned))
}

/// Finds `lib/modules/<release>/` in what the user named: the install root
/// (`DIR/lib/modules/<release>`), the `modules` directory above the
/// release (`DIR/<release>`), or the release directory itself.
pub fn modules_release_dir(dir: &Path, release: &str) -> Result<PathBuf, ImportError> {
    [
        dir.join("lib/modules").join(release),
        dir.join(release),
        dir.to_owned(),
    ]
    .into_iter()
    .find(|d| d.join("modules.dep").is_file())
    .ok_or_else(|| ImportError::NoModulesDep {
        dir: dir.to_owned(),
        release: release.to_owned(),
    })
}

/// The modules stored for `release` in the data directory: fetched or
/// imported with its modules, imported as built in, or nothing.
pub fn stored_modules(data: &DataDir, release: &str) -> Option<KernelModules> {
    let dir = data.kernel(release);
    let modules = dir.join("modules/lib/modules").join(release);
    if modules.join("modules.dep").is_file() {
        Some(KernelModules::Dir(modules))
    } else if dir.join(BUILT_IN_MARKER).is_file() {
        Some(KernelModules::BuiltIn)
    } else {
        None
    }
}

/// The stored kernel file of `release`, when the data directory has one.
pub fn stored_kernel(data: &DataDir, release: &str) -> Option<PathBuf> {
    if !super::fetch::is_plain_version(release) {
        return None;
    }
    Some(data.kernel(release).join("vmlinuz")).filter(|p| p.is_file())
}

/// Stores `file` as kernel `<release>` with `modules` (a directory as
/// [`modules_release_dir`] finds it, or built in).
pub fn import(
    data: &DataDir,
    file: &Path,
    modules: &KernelModules,
) -> Result<ImportedKernel, ImportError> {
    let release = release_of(file)?.ok_or_else(|| ImportError::NoRelease {
        path: file.to_owned(),
    })?;
    let modules_src = match modules {
        KernelModules::Dir(dir) => Some(modules_release_dir(dir, &release)?),
        KernelModules::BuiltIn => None,
    };
    let dir = data.kernel(&release);
    if dir.exists() {
        return Err(ImportError::Exists { release, dir });
    }
    let kernels = data.kernels();
    fs::create_dir_all(&kernels).map_err(io_at(&kernels))?;
    let work = tempfile::Builder::new()
        .prefix(".import-")
        .tempdir_in(&kernels)
        .map_err(io_at(&kernels))?;
    let bytes = fs::read(file).map_err(io_at(file))?;
    let vmlinuz = work.path().join("vmlinuz");
    fs::write(&vmlinuz, &bytes).map_err(io_at(&vmlinuz))?;
    let stored_modules = match &modules_src {
        Some(src) => {
            let to = work.path().join("modules/lib/modules").join(&release);
            copy_tree(src, &to)?;
            "dir"
        }
        None => {
            let marker = work.path().join(BUILT_IN_MARKER);
            fs::write(&marker, b"").map_err(io_at(&marker))?;
            "built-in"
        }
    };
    let manifest = ImportManifest {
        release: release.clone(),
        source: file.to_owned(),
        vmlinuz_sha256: hex::encode(Sha256::digest(&bytes)),
        modules: stored_modules.to_owned(),
    };
    let path = work.path().join(IMPORT_MANIFEST);
    let json = serde_json::to_vec_pretty(&manifest).expect("the manifest serializes");
    fs::write(&path, json).map_err(io_at(&path))?;
    let work = work.keep();
    fs::rename(&work, &dir).map_err(|source| {
        let _ = fs::remove_dir_all(&work);
        ImportError::Io {
            path: dir.clone(),
            source,
        }
    })?;
    let modules = match modules_src {
        Some(_) => KernelModules::Dir(dir.join("modules/lib/modules").join(&release)),
        None => KernelModules::BuiltIn,
    };
    Ok(ImportedKernel {
        vmlinuz: dir.join("vmlinuz"),
        modules,
        release,
        dir,
    })
}

/// Copies the regular files and directories below `from` to `to`. Links
/// are left out: a module tree's `build` and `source` point at the
/// kernel's build tree, which a guest never needs.
fn copy_tree(from: &Path, to: &Path) -> Result<(), ImportError> {
    fs::create_dir_all(to).map_err(io_at(to))?;
    for entry in fs::read_dir(from).map_err(io_at(from))? {
        let entry = entry.map_err(io_at(from))?;
        let kind = entry.file_type().map_err(io_at(&entry.path()))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target).map_err(io_at(&target))?;
        }
    }
    Ok(())
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release_tree(root: &Path, release: &str) -> PathBuf {
        let dir = root.join("lib/modules").join(release);
        fs::create_dir_all(dir.join("kernel/fs")).unwrap();
        fs::write(dir.join("modules.dep"), "kernel/fs/overlay.ko:\n").unwrap();
        fs::write(dir.join("kernel/fs/overlay.ko"), b"module").unwrap();
        dir
    }

    #[test]
    fn the_modules_directory_is_found_in_each_of_its_three_shapes() {
        let root = tempfile::tempdir().unwrap();
        let release_dir = release_tree(root.path(), "6.9.0-own");
        for given in [
            root.path().to_owned(),
            root.path().join("lib/modules"),
            release_dir.clone(),
        ] {
            assert_eq!(
                modules_release_dir(&given, "6.9.0-own").unwrap(),
                release_dir
            );
        }
    }

    #[test]
    fn a_directory_without_modules_dep_is_refused_naming_depmod() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("lib/modules/6.9.0-own")).unwrap();
        let err = modules_release_dir(root.path(), "6.9.0-own").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("depmod -b DIR 6.9.0-own"), "{text}");
        assert!(text.contains("modules.dep"), "{text}");
    }

    #[test]
    fn copying_a_tree_keeps_files_and_leaves_links_out() {
        let root = tempfile::tempdir().unwrap();
        let src = release_tree(root.path(), "6.9.0-own");
        std::os::unix::fs::symlink("/usr/src/linux", src.join("build")).unwrap();
        let to = root.path().join("copy");
        copy_tree(&src, &to).unwrap();
        assert_eq!(
            fs::read(to.join("kernel/fs/overlay.ko")).unwrap(),
            b"module"
        );
        assert!(to.join("modules.dep").is_file());
        assert!(fs::symlink_metadata(to.join("build")).is_err());
    }

    #[test]
    fn a_kernel_without_a_version_string_cannot_be_imported() {
        let root = tempfile::tempdir().unwrap();
        let data = DataDir::new(root.path().join("data"));
        let file = root.path().join("toy.elf");
        // An ELF header with nothing else: a kernel to `inspect`, no version.
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        fs::write(&file, &elf).unwrap();
        match import(&data, &file, &KernelModules::BuiltIn) {
            Err(ImportError::NoRelease { .. }) | Err(ImportError::Kernel(_)) => {}
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(!data.kernels().exists() || fs::read_dir(data.kernels()).unwrap().count() == 0);
    }
}
