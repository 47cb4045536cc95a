//! The command-line grammar. Only parsing lives here; `commands/` runs it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "hearth", version, about = "Boot and manage Linux microVMs")]
pub struct Cli {
    /// Data directory (kernels, images, VM logs). Default: $HEARTH_DATA_DIR,
    /// else /var/lib/hearth as root, else ~/.local/share/hearth.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch, inspect and extract guest kernels.
    #[command(subcommand)]
    Kernel(KernelCommand),
    /// Build root filesystem images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Run and manage VMs.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Check that this host can boot VMs, and say how to fix what is missing.
    Doctor,
}

#[derive(Debug, Subcommand)]
pub enum KernelCommand {
    /// Download Debian's cloud kernel through apt and store it with its modules.
    Fetch,
    /// Say what a kernel file is: ELF or bzImage, payload compression, version.
    Inspect { path: PathBuf },
    /// Write the ELF vmlinux contained in a bzImage.
    Extract {
        bzimage: PathBuf,
        #[arg(short, long, value_name = "VMLINUX")]
        output: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build (or reuse, when its inputs are unchanged) the named image.
    Build {
        #[arg(value_enum)]
        name: ImageName,
        /// Rebuild even when the inputs are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// List built images.
    List,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ImageName {
    /// busybox only: builds in seconds; for tests and demos.
    Minimal,
    /// Debian bookworm with systemd.
    Debian,
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Boot a VM in the foreground, streaming its console.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[arg(long, value_enum, default_value_t = Backend::Qemu)]
    pub backend: Backend,
    /// Image name (built with `hearth image build`), or a path to an ext4 file.
    #[arg(long, default_value = "minimal")]
    pub image: String,
    /// Kernel file (ELF or bzImage). Default: the one `hearth kernel fetch` stored.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub vcpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    pub memory: u32,
    /// Give up (and stop the VM) after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// QEMU acceleration; default: detected (KVM where it can run a guest).
    #[arg(long, value_enum)]
    pub accel: Option<AccelArg>,
    /// Firecracker binary (default: $HEARTH_FIRECRACKER, else `firecracker` on PATH).
    #[arg(long)]
    pub firecracker: Option<PathBuf>,
    /// Do not copy the console to stdout.
    #[arg(long)]
    pub quiet: bool,
    /// What the guest runs before it powers off.
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Backend {
    Qemu,
    Firecracker,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum AccelArg {
    Kvm,
    Tcg,
}
