//! Hypervisor backends behind one trait. A backend turns a
//! [`VmDescription`](hearth_types::VmDescription) into a running hypervisor
//! process; everything after that (console capture, noticing the exit,
//! stopping with a deadline) is shared in [`process`]; confining the
//! hypervisor (its own user, cgroup and limits) in [`isolation`].
//!
//! Nothing outside this crate knows a hypervisor's command line or API.

pub mod accel;
pub mod console;
pub mod firecracker;
pub mod hypervisor;
pub mod isolation;
pub mod nic;
pub mod process;
pub mod qemu;

pub use firecracker::vsock::{AgentEndpoint, AGENT_VSOCK_PORT};
pub use hypervisor::{Hypervisor, OnSpawn, VmmError};
pub use nic::Nic;
pub use process::{ExitInfo, RunningVm, VmControl};
