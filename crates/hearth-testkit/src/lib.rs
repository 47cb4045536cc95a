//! Test support shared by the crates' integration tests: one data directory
//! for kernels and images that every test process reuses (builds inside it
//! are serialised by hearth's own build locks), and the tiny Firecracker
//! test guest, the static guest agent, and a fake OAuth provider for
//! offline login tests ([`fake_oauth`]), and the namespaces of VM
//! networks' tests ([`netlab`]).

use std::path::PathBuf;

pub mod fake_oauth;
pub mod netlab;
pub mod private_dir;
pub mod pty;
pub mod static_agent;
pub mod tiny_guest;

pub use private_dir::{kill_processes_naming, PrivateDir};
pub use static_agent::static_agent;
pub use tiny_guest::{
    count_of, counting_guest_elf, tiny_guest_elf, tiny_guest_elf_ending, GuestEnd,
};

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

/// The asset directories a private data directory borrows from the shared
/// one: kernels, images, derived files and the build locks guarding them.
const SHARED_ASSETS: &[&str] = &["kernels", "images", "cache", "locks"];

/// A fresh data directory of its own (its own store, VMs and archives) that
/// reuses the suite's kernels and images through symlinks, so a test can
/// run a controller without seeing another test's VMs and without building
/// anything again. The shared assets must exist already.
/// Dropping it kills the hypervisors of VMs left in it (see [`PrivateDir`]).
pub fn private_data_dir() -> PrivateDir {
    let shared = test_data_dir();
    let dir = PrivateDir::new("hearth-test-");
    for name in SHARED_ASSETS {
        let target = shared.join(name);
        std::fs::create_dir_all(&target).expect("the shared data directory is writable");
        std::os::unix::fs::symlink(&target, dir.path().join(name))
            .expect("symlink in a fresh directory");
    }
    dir
}
