//! The static `hearth-agent` for tests that put it in a guest: built once
//! per process (and, under a file lock, once at a time across processes)
//! with the same command as `scripts/build-agent`, into `target/agent-build`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::test_data_dir;

/// The static glibc the agent is linked with; without it there is no agent.
pub const STATIC_LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.a";
/// The target the agent is built for (`--target` keeps `crt-static` off
/// build scripts and proc-macros).
pub const AGENT_TARGET: &str = "x86_64-unknown-linux-gnu";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The static agent, built on first use; `None` (after one printed skip
/// line) when this host has no static glibc to link it with. Panics when
/// the build itself fails.
pub fn static_agent() -> Option<PathBuf> {
    static AGENT: OnceLock<Option<PathBuf>> = OnceLock::new();
    AGENT.get_or_init(build).clone()
}

fn build() -> Option<PathBuf> {
    if !Path::new(STATIC_LIBC).exists() {
        println!("skipped: no static glibc ({STATIC_LIBC}) to link hearth-agent with");
        return None;
    }
    let locks = test_data_dir().join("locks");
    std::fs::create_dir_all(&locks).expect("the shared data directory is writable");
    let lock_path = locks.join("static-agent-build.lock");
    let lock = std::fs::File::create(&lock_path).expect("the agent build lock opens");
    lock.lock().expect("the agent build lock is taken");
    let target_dir = workspace().join("target/agent-build");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--locked", "-p", "hearth-agent"])
        .args(["--target", AGENT_TARGET])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(workspace())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the static agent failed");
    drop(lock);
    Some(target_dir.join(AGENT_TARGET).join("release/hearth-agent"))
}
