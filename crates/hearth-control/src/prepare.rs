//! Preparing a VM: resolve its kernel, initramfs and image, then create its
//! directory and writable layer. Everything is checked before anything is
//! created, and what was created is undone when a later step fails.

use std::path::{Path, PathBuf};

use hearth_guestkit::image::{self, guest_command};
use hearth_guestkit::{initramfs, kernel, layer, DataDir};
use hearth_types::{Channel, Disk, DiskKey, SpecError, VmDescription, VmId};

/// The kernel command line every hearth guest gets. Guests power off by
/// rebooting (the hypervisor exits on reset; each backend adds the reset
/// method that is fast on it), and `panic=1` turns a panic into that reset
/// instead of a hang.
pub const BASE_CMDLINE: &str = "console=ttyS0 panic=1";

/// The virtio-serial port the guest agent listens on (`hearth-agent --port`).
pub const AGENT_PORT: &str = "hearth.agent";
/// The file name of the agent channel's socket in the VM directory.
pub const AGENT_SOCKET: &str = "agent.sock";

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("kernel {path} cannot be used")]
    Kernel {
        path: PathBuf,
        #[source]
        source: kernel::KernelError,
    },
    #[error("no default kernel")]
    DefaultKernel(#[source] kernel::KernelError),
    #[error("kernel {path} has no version string, so its modules cannot be found; use a kernel stored by `hearth kernel fetch` or `hearth kernel import`, or boot it without hearth's initramfs (`--no-initramfs`) if it mounts its root itself")]
    KernelVersion { path: PathBuf },
    #[error("no modules for kernel {release} in {dir}: hearth's initramfs loads the kernel's own virtio, vsock and overlay modules; name them with `--modules DIR` (or store them with `hearth kernel import FILE --modules DIR`), or say `--no-modules` if the kernel builds those drivers in")]
    NoModules { release: String, dir: PathBuf },
    #[error("the modules given for kernel {release} cannot be used")]
    Modules {
        release: String,
        #[source]
        source: kernel::ImportError,
    },
    #[error("image {name:?} cannot be used")]
    Image {
        name: String,
        #[source]
        source: image::ImageError,
    },
    #[error("the command cannot be passed to the guest")]
    Command(#[source] image::ImageError),
    #[error("could not build the initramfs")]
    Initramfs(#[from] initramfs::InitramfsError),
    #[error("could not create the VM directory {path}")]
    VmDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not create the writable layer")]
    Layer(#[from] layer::LayerError),
    #[error("an encrypted disk is made only with its key")]
    NoDiskKey,
}

/// What a VM boots from; shared by every VM using the same kernel and image.
#[derive(Debug, Clone)]
pub struct BootAssets {
    pub kernel: PathBuf,
    /// The kernel's release; `None` for a kernel booted without an
    /// initramfs that carries no version string (a toy guest, say).
    pub kernel_release: Option<String>,
    /// hearth's initramfs for the kernel's release; `None` when the kernel
    /// is booted straight ([`Initramfs::None`]).
    pub initramfs: Option<PathBuf>,
    pub image: PathBuf,
}

/// How the kernel gets to the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Initramfs {
    /// hearth's initramfs, with the kernel's own modules (which its release
    /// names): it joins the image and the writable layer with overlayfs.
    #[default]
    Hearth,
    /// None: the kernel mounts the image itself (`root=/dev/vda ro`, its
    /// drivers built in) or needs no root at all. Any kernel file will do,
    /// with or without a version string.
    None,
}

/// What [`Initramfs::None`] adds to the kernel command line: the image,
/// the first disk, as the root filesystem, read-only as it is shared.
pub const NO_INITRAMFS_ROOT: &str = "root=/dev/vda ro rootfstype=ext4";

/// Resolves and checks the kernel (given, or the default one), builds or
/// reuses the initramfs for it, and finds the image.
pub fn resolve_assets(
    data: &DataDir,
    kernel_path: Option<&Path>,
    image_name: &str,
) -> Result<BootAssets, PrepareError> {
    resolve_assets_with(data, kernel_path, image_name, Initramfs::Hearth, None)
}

/// [`resolve_assets`], with or without hearth's initramfs, and with the
/// kernel's modules named (`None`: the ones stored for its release).
/// `kernel_path` is a file, or the release of a stored kernel.
pub fn resolve_assets_with(
    data: &DataDir,
    kernel_path: Option<&Path>,
    image_name: &str,
    initramfs: Initramfs,
    modules: Option<&kernel::KernelModules>,
) -> Result<BootAssets, PrepareError> {
    let kernel_path = kernel_path.map(|p| stored_or_file(data, p));
    let kernel_path = kernel_path.as_deref();
    let image = image_path(data, image_name)
        .and_then(|p| image::check_ext4(&p).map(|()| p))
        .map_err(|source| PrepareError::Image {
            name: image_name.to_owned(),
            source,
        })?;
    if initramfs == Initramfs::None {
        let (kernel, release) = match kernel_path {
            Some(path) => (path.to_owned(), checked_kernel(path)?),
            None => {
                let k = kernel::default_kernel(data).map_err(PrepareError::DefaultKernel)?;
                (k.vmlinuz, Some(k.version))
            }
        };
        return Ok(BootAssets {
            kernel,
            kernel_release: release,
            initramfs: None,
            image,
        });
    }
    let (kernel, release, modules) = match kernel_path {
        Some(path) => {
            let release = release_of(path)?;
            let modules = modules_for(data, &release, modules)?;
            (path.to_owned(), release, modules)
        }
        None => {
            let k = kernel::default_kernel(data).map_err(PrepareError::DefaultKernel)?;
            let modules = kernel::KernelModules::Dir(k.modules_dir());
            (k.vmlinuz, k.version, modules)
        }
    };
    let initramfs = initramfs::ensure_initramfs_with(data, &release, &modules)?;
    Ok(BootAssets {
        kernel,
        kernel_release: Some(release),
        initramfs: Some(initramfs),
        image,
    })
}

/// A `--kernel` that names no file but a stored kernel's release
/// (`hearth kernel import` or `fetch` stored it) is that kernel's file.
fn stored_or_file(data: &DataDir, given: &Path) -> PathBuf {
    if given.exists() {
        return given.to_owned();
    }
    given
        .to_str()
        .and_then(|release| kernel::stored_kernel(data, release))
        .unwrap_or_else(|| given.to_owned())
}

/// The modules of a kernel the user named: those given, else those stored
/// for its release, else a refusal saying how to give them.
fn modules_for(
    data: &DataDir,
    release: &str,
    given: Option<&kernel::KernelModules>,
) -> Result<kernel::KernelModules, PrepareError> {
    match given {
        Some(kernel::KernelModules::Dir(dir)) => kernel::modules_release_dir(dir, release)
            .map(kernel::KernelModules::Dir)
            .map_err(|source| PrepareError::Modules {
                release: release.to_owned(),
                source,
            }),
        Some(kernel::KernelModules::BuiltIn) => Ok(kernel::KernelModules::BuiltIn),
        None => kernel::stored_modules(data, release).ok_or_else(|| PrepareError::NoModules {
            release: release.to_owned(),
            dir: data.kernel(release).join("modules"),
        }),
    }
}

/// An image is named (`minimal`) or, when the argument has a `/`, a path.
fn image_path(data: &DataDir, name: &str) -> Result<PathBuf, image::ImageError> {
    if name.contains('/') {
        Ok(PathBuf::from(name))
    } else {
        image::find_image(data, name)
    }
}

/// The kernel release (`6.1.0-56-cloud-amd64`) of a kernel file.
fn release_of(path: &Path) -> Result<String, PrepareError> {
    checked_kernel(path)?.ok_or_else(|| PrepareError::KernelVersion {
        path: path.to_owned(),
    })
}

/// Checks that `path` is a kernel (ELF or bzImage); its release, if it
/// says one.
fn checked_kernel(path: &Path) -> Result<Option<String>, PrepareError> {
    kernel::release_of(path).map_err(|source| PrepareError::Kernel {
        path: path.to_owned(),
        source,
    })
}

/// The kernel command line for a VM that runs `command` (may be empty).
/// It carries the host's time (`hearth.time=`, Unix seconds), which the
/// initramfs sets before anything writes a file: the guest has no clock
/// device. The agent sets it precisely once connected.
pub fn cmdline(command: &[String]) -> Result<String, PrepareError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut line = format!("{BASE_CMDLINE} hearth.time={}", now.as_secs());
    if let Some(arg) = guest_command::cmdline_arg(command).map_err(PrepareError::Command)? {
        line.push(' ');
        line.push_str(&arg);
    }
    Ok(line)
}

/// The file name of a persistent VM's writable disk in its directory.
/// [`VmFiles::release_runtime`] never removes it: only the deletion of
/// the VM's directory (`rm`) does.
pub const KEPT_DISK: &str = "disk.ext4";
/// The file name of a persistent VM's encrypted disk: a qcow2 QEMU
/// decrypts with the VM's key (LUKS), never removed but by `rm` either.
pub const ENCRYPTED_DISK: &str = "disk.qcow2";
/// The logs a restart moves aside (to `NAME.previous.log`), so that each
/// boot's console is read on its own.
pub const ROTATED_LOGS: &[&str] = &["console", "hypervisor"];

/// The files of one VM on the host.
#[derive(Debug, Clone)]
pub struct VmFiles {
    pub dir: PathBuf,
    /// The guest's writable layer: `layer.ext4`, made per boot, or a
    /// persistent VM's kept disk ([`KEPT_DISK`]).
    pub layer: PathBuf,
    pub console_log: PathBuf,
    /// The host end of the guest agent's channel (QEMU listens on it).
    pub agent_socket: PathBuf,
    /// The layer is a persistent VM's disk, kept across boots.
    pub kept: bool,
    /// The key of an encrypted kept disk, once read from the vault.
    pub layer_key: Option<DiskKey>,
}

impl VmFiles {
    /// The files of a VM managed by `hearth serve`.
    pub fn for_vm(data: &DataDir, id: &VmId) -> Self {
        Self::in_dir(data.vm(id))
    }

    /// The files of a foreground run.
    pub fn for_run(data: &DataDir, id: &VmId) -> Self {
        Self::in_dir(data.runs().join(id.as_str()))
    }

    fn in_dir(dir: PathBuf) -> Self {
        VmFiles {
            layer: dir.join("layer.ext4"),
            console_log: dir.join("console.log"),
            agent_socket: dir.join(AGENT_SOCKET),
            dir,
            kept: false,
            layer_key: None,
        }
    }

    /// The same VM's files with its kept disk as the writable layer (a
    /// raw one).
    pub fn with_kept_disk(mut self) -> Self {
        self.layer = self.dir.join(KEPT_DISK);
        self.kept = true;
        self
    }

    /// The same VM's files with its kept disk as the writable layer: the
    /// one it has, else a new one, encrypted when `encrypt`. A raw disk
    /// made before encryption existed stays raw.
    pub fn with_kept_disk_for(self, encrypt: bool) -> Self {
        let mut files = self.with_kept_disk();
        let encrypted = files.dir.join(ENCRYPTED_DISK);
        if encrypted.exists() || (encrypt && !files.layer.exists()) {
            files.layer = encrypted;
        }
        files
    }

    /// The kept disk is encrypted: it needs its key to boot.
    pub fn encrypted(&self) -> bool {
        self.kept && self.layer.file_name() == Some(std::ffi::OsStr::new(ENCRYPTED_DISK))
    }

    /// Creates the directory and, unless it exists, the kept disk of
    /// `size_mib` (an empty ext4 the guest's initramfs finds by its
    /// label). True when the disk was made now.
    /// An encrypted one is converted from the empty template under
    /// [`VmFiles::layer_key`].
    pub fn ensure_kept_disk(&self, data: &DataDir, size_mib: u32) -> Result<bool, PrepareError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| PrepareError::VmDir {
            path: self.dir.clone(),
            source,
        })?;
        if self.layer.exists() {
            return Ok(false);
        }
        let size = u64::from(size_mib) << 20;
        match (&self.layer_key, self.encrypted()) {
            (Some(key), true) => {
                let template = layer::ensure_layer_template(data, size)?;
                layer::create_encrypted_disk(&template, &self.layer, key)?;
            }
            (None, true) => return Err(PrepareError::NoDiskKey),
            _ => layer::create_layer_of_size(data, &self.layer, size)?,
        }
        Ok(true)
    }

    /// Moves the last boot's logs aside (`console.previous.log`, ...)
    /// before a kept VM boots again: the hypervisor appends to its logs,
    /// and the verdict and diagnosis read one boot's.
    pub fn rotate_logs(&self) -> std::io::Result<()> {
        for name in ROTATED_LOGS {
            let from = self.dir.join(format!("{name}.log"));
            match std::fs::rename(&from, self.dir.join(format!("{name}.previous.log"))) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Creates the directory and the writable layer; undoes both on failure.
    pub fn create(&self, data: &DataDir) -> Result<(), PrepareError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| PrepareError::VmDir {
            path: self.dir.clone(),
            source,
        })?;
        if let Err(err) = layer::create_layer(data, &self.layer) {
            self.remove_all();
            return Err(err.into());
        }
        Ok(())
    }

    /// Frees what only a running VM needs (the writable layer, sockets) and
    /// keeps the evidence: console and hypervisor logs. A kept disk stays.
    pub fn release_runtime(&self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.layer);
        }
        // A restored VM's layer, and what snapshots leave while they run.
        for file in ["layer.qcow2", "qmp-snapshot.sock", "snapshot.state"] {
            let _ = std::fs::remove_file(self.dir.join(file));
        }
        for sock in ["qmp.sock", "firecracker.sock", AGENT_SOCKET] {
            let _ = std::fs::remove_file(self.dir.join(sock));
        }
    }

    /// Undo of [`VmFiles::create`] for a VM that never started.
    pub fn remove_all(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// The description a backend boots.
    pub fn describe(
        &self,
        id: &VmId,
        assets: &BootAssets,
        vcpus: u8,
        memory_mib: u32,
        cmdline: String,
    ) -> VmDescription {
        VmDescription {
            id: id.clone(),
            kernel: assets.kernel.clone(),
            initramfs: assets.initramfs.clone(),
            disks: vec![
                Disk {
                    path: assets.image.clone(),
                    read_only: true,
                    key: None,
                },
                Disk {
                    path: self.layer.clone(),
                    read_only: false,
                    key: self.layer_key.clone().filter(|_| self.encrypted()),
                },
            ],
            vcpus,
            memory_mib,
            cmdline,
            run_dir: self.dir.clone(),
            console_log: self.console_log.clone(),
            channels: vec![Channel {
                name: AGENT_PORT.to_owned(),
                socket: self.agent_socket.clone(),
            }],
            memory: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releasing_a_kept_vm_keeps_its_disk_and_a_restart_moves_its_logs_aside() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().to_owned());
        let id: VmId = "vm-0123456789ab".parse().unwrap();
        let files = VmFiles::for_vm(&data, &id).with_kept_disk();
        std::fs::create_dir_all(&files.dir).unwrap();
        std::fs::write(&files.layer, b"the kept disk").unwrap();
        std::fs::write(files.dir.join("layer.ext4"), b"a per-boot layer").unwrap();
        std::fs::write(&files.console_log, b"boot 1\n").unwrap();

        files.release_runtime();
        VmFiles::for_vm(&data, &id).release_runtime();
        assert_eq!(std::fs::read(&files.layer).unwrap(), b"the kept disk");
        assert!(!files.dir.join("layer.ext4").exists());

        files.rotate_logs().unwrap();
        assert!(!files.console_log.exists());
        let previous = std::fs::read(files.dir.join("console.previous.log")).unwrap();
        assert_eq!(previous, b"boot 1\n");
        files.rotate_logs().unwrap();
        assert!(
            !files.ensure_kept_disk(&data, 64).unwrap(),
            "an existing disk is reused"
        );
    }
}
