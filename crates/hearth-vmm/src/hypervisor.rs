//! The one trait every backend implements.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use hearth_types::{BackendKind, ProcessRef, VmDescription};

use crate::{Nic, RunningVm};

/// Told the hypervisor's process the moment it is spawned, before it is
/// configured and its guest started (which can take seconds): a caller
/// that records it there can adopt a VM that was still starting when the
/// caller died.
pub type OnSpawn = Box<dyn FnOnce(ProcessRef) + Send>;

/// Starts VMs on one kind of hypervisor.
#[async_trait]
pub trait Hypervisor: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> BackendKind;

    /// Spawns the hypervisor, configures it and starts the guest. Returns as
    /// soon as the guest's vCPUs run; the console is already being captured.
    async fn start(&self, vm: &VmDescription) -> Result<RunningVm, VmmError> {
        self.start_reporting(vm, Box::new(|_| {})).await
    }

    /// [`Hypervisor::start`], calling `on_spawn` with the process as soon
    /// as it exists (not at all when spawning failed).
    async fn start_reporting(
        &self,
        vm: &VmDescription,
        on_spawn: OnSpawn,
    ) -> Result<RunningVm, VmmError>;

    /// [`Hypervisor::start_reporting`] with a NIC on `nic`'s TAP. Backends
    /// that cannot take one refuse.
    async fn start_with_nic(
        &self,
        vm: &VmDescription,
        on_spawn: OnSpawn,
        nic: Nic,
    ) -> Result<RunningVm, VmmError> {
        let _ = (vm, on_spawn, nic);
        Err(VmmError::NoNic(self.kind()))
    }

    /// Takes over a hypervisor an earlier hearth started (detached) for
    /// `vm`; `VmmError::Gone` when that process no longer runs.
    async fn adopt(&self, vm: &VmDescription, process: ProcessRef) -> Result<RunningVm, VmmError>;

    // Snapshots (docs/snapshots.md).

    /// The hypervisor build a snapshot records and a restore must match:
    /// its binary and version.
    fn build(&self) -> String {
        format!("{} (version unknown)", self.kind())
    }

    /// The machine arguments a snapshot depends on beyond the VM's size
    /// (machine type, acceleration, CPU model).
    fn machine(&self) -> String {
        String::new()
    }

    /// Pauses `vm`'s guest and writes its memory and device state to
    /// `state`; the guest stays paused until [`Hypervisor::resume`].
    async fn save(&self, vm: &VmDescription, state: &Path) -> Result<(), VmmError> {
        let _ = (vm, state);
        Err(VmmError::NoSnapshots(self.kind()))
    }

    /// Runs a guest paused by [`Hypervisor::save`] again.
    async fn resume(&self, vm: &VmDescription) -> Result<(), VmmError> {
        let _ = vm;
        Err(VmmError::NoSnapshots(self.kind()))
    }

    /// Starts a new hypervisor for `vm` that loads `state` (written by
    /// [`Hypervisor::save`] for a VM of the same build, machine, size and
    /// devices) and runs the guest on from there.
    async fn restore_reporting(
        &self,
        vm: &VmDescription,
        state: &Path,
        on_spawn: OnSpawn,
    ) -> Result<RunningVm, VmmError> {
        let _ = (vm, state, on_spawn);
        Err(VmmError::NoSnapshots(self.kind()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("invalid VM description")]
    Spec(#[from] hearth_types::SpecError),
    #[error("{what} not found at {path}: {fix}")]
    NotFound {
        what: &'static str,
        path: PathBuf,
        fix: &'static str,
    },
    #[error("could not start {program}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not prepare {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel cannot be booted by {backend}")]
    Kernel {
        backend: BackendKind,
        #[source]
        source: hearth_guestkit::kernel::KernelError,
    },
    #[error("{backend} API call {call} failed: {detail}")]
    Api {
        backend: BackendKind,
        call: String,
        detail: String,
    },
    #[error("{backend} exited before the guest started: {detail}")]
    EarlyExit {
        backend: BackendKind,
        detail: String,
    },
    #[error("the {0} backend cannot give a VM a NIC yet: create it with the qemu backend")]
    NoNic(BackendKind),
    #[error(
        "the {0} backend cannot snapshot or restore VMs through hearth yet: use the qemu backend"
    )]
    NoSnapshots(BackendKind),
    #[error("hypervisor process {pid} is gone")]
    Gone { pid: u32 },
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("could not confine the hypervisor: {step}")]
    Isolation {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("could not confine the hypervisor")]
    IsolationFiles(#[from] crate::isolation::files::FileError),
}
