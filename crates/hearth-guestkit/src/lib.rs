//! The guest kit: everything a VM boots from, made from distribution
//! packages without host mounts or root: kernels, the initramfs, root
//! filesystem images, and the per-VM writable layer over a shared image.

pub mod agent;
pub mod datadir;
pub mod image;
pub mod initramfs;
pub mod kernel;
pub mod layer;
pub mod lock;

pub use datadir::DataDir;
pub use lock::BuildLock;
