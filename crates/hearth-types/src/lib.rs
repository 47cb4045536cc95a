//! Types every hearth crate shares: typed ids, the description a hypervisor
//! backend boots from, and the lines the guest prints to tell the host what
//! happened. Nothing here performs I/O.

pub mod console;
pub mod id;
pub mod vm;

pub use id::{IdError, VmId};
pub use vm::{Accel, BackendKind, Disk, SpecError, VmDescription};
