//! Fixtures for the CLI's integration tests: the `hearth` binary pointed at
//! the suite's shared data directory, with the kernel and images made once
//! (hearth's own build locks serialise concurrent test processes).

#![allow(dead_code)]

/// The diagnosis `hearth vm run` prints, read back.
pub mod findings;
/// The guest's wall clock against the host's.
pub mod guest_clock;
/// A login session's rig: the fake provider, a server, the steps.
pub mod login;
/// Namespaces for VM networks' tests: a host and an internet.
pub mod netlab;
/// A `hearth serve` on a private data directory (the `serve_*` tests).
pub mod serve;
/// Create/destroy cycles and what they leave (`serve_soak`, `benches/soak`).
pub mod soak;
/// Headless Chromium over WebDriver.
pub mod webdriver;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn data_dir() -> PathBuf {
    hearth_testkit::test_data_dir()
}

/// `hearth --data-dir <shared> ARGS...`
pub fn hearth(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.arg("--data-dir").arg(data_dir()).args(args);
    cmd
}

pub fn run(args: &[&str]) -> Output {
    hearth(args).output().expect("hearth binary runs")
}

/// Fetches the kernel and builds `image` into the shared data dir if needed,
/// with the static guest agent in it when this host can build one.
pub fn ensure_assets(image: &str) {
    let agent = hearth_testkit::static_agent();
    // Without static glibc there is no agent to build: say so.
    let build: &[&str] = match agent {
        Some(_) => &["image", "build", image],
        None => &["image", "build", image, "--no-agent"],
    };
    for args in [&["kernel", "fetch"][..], build] {
        let mut cmd = hearth(args);
        if let Some(agent) = &agent {
            cmd.env("HEARTH_AGENT", agent);
        }
        let out = cmd.output().expect("hearth binary runs");
        assert!(
            out.status.success(),
            "hearth {args:?} failed:\n{}",
            text(&out)
        );
    }
}

/// stdout and stderr together, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The console log path `hearth vm run` names on stderr.
pub fn console_log_of(out: &Output) -> PathBuf {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let path = stderr
        .lines()
        .find_map(|l| {
            l.split_once("console log: ")
                .map(|(_, p)| p.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no console log named:\n{}", text(out)));
    PathBuf::from(path)
}

/// The directories of foreground runs under the data dir.
pub fn vm_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(data_dir().join("runs")) else {
        return Vec::new();
    };
    entries.filter_map(|e| e.ok().map(|e| e.path())).collect()
}

/// Process ids whose command line mentions `needle`.
pub fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

/// An ext4 image of `tree` at `image` (`size` as mkfs.ext4 takes it), for
/// tests that boot a deliberately odd root filesystem.
pub fn ext4_image(tree: &Path, image: &Path, size: &str) {
    let ok = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "hearth-root", "-d"])
        .arg(tree)
        .arg(image)
        .arg(size)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mkfs.ext4 of {} failed", tree.display());
}
