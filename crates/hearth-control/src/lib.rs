//! The VM lifecycle, independent of HTTP and of any one hypervisor: the
//! steps that prepare and boot a VM (each with its undo), and the verdict a
//! VM's console gives.

pub mod agent_link;
pub mod controller;
pub mod diagnosis;
pub mod disk_keys;
pub mod foreground;
pub mod isolation;
pub mod lifecycle;
pub mod prepare;
pub mod restart;
pub mod verdict;

#[cfg(test)]
mod test_support;

pub use foreground::{run_foreground, RunReport, RunRequest};
pub use verdict::{FailReason, Verdict};
