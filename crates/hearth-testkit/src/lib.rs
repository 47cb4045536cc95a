//! Test support shared by the crates' integration tests: one data directory
//! for kernels and images that every test process reuses (builds inside it
//! are serialised by hearth's own build locks), and the tiny Firecracker
//! test guest.

use std::path::PathBuf;

pub mod tiny_guest;

pub use tiny_guest::{tiny_guest_elf, tiny_guest_elf_ending, GuestEnd};

/// The data directory shared by all tests: `$HEARTH_TEST_DATA_DIR`, else
/// `target/hearth-test-data` in the workspace. Kernels and images built
/// there are reused by every later test and run.
pub fn test_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HEARTH_TEST_DATA_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    workspace.join("target/hearth-test-data")
}
