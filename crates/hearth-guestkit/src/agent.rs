//! Finding the static `hearth-agent` that images carry (see docs/agent.md).
//! The agent must be statically linked: the minimal image has no C library.
//! `$HEARTH_AGENT` names it; otherwise `scripts/build-agent`'s output (in
//! the `target/agent-build` beside the `target/release` or `target/debug`
//! that holds the running `hearth`, where no plain `cargo build` writes),
//! then a `hearth-agent` next to the running executable. A dynamically
//! linked agent is refused, never put in an image, and never skipped in
//! silence: an image without the agent is asked for (`--no-agent`).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The environment variable naming the agent binary to put in images.
pub const AGENT_ENV: &str = "HEARTH_AGENT";
/// The binary's file name next to `hearth`.
pub const AGENT_FILE: &str = "hearth-agent";
/// Where `scripts/build-agent` leaves the agent, from the target directory
/// (the parent of the `release` or `debug` directory holding `hearth`).
pub const AGENT_BUILD: &str = "agent-build/x86_64-unknown-linux-gnu/release/hearth-agent";
/// The virtio-serial port name the agent is started with.
pub const AGENT_PORT: &str = "hearth.agent";
/// How to get an agent, for messages.
pub const HOW_TO_BUILD: &str = "build it with `scripts/build-agent` (a static build into \
                                target/agent-build, which `hearth image build` finds) or set \
                                HEARTH_AGENT to a static hearth-agent; or build the image \
                                without the agent with `--no-agent`";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot read the agent {path} (from ${AGENT_ENV})")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the agent {path} is not a statically linked x86-64 ELF (it has an ELF interpreter, or \
         is no x86-64 ELF at all; a plain `cargo build` writes a dynamically linked one), and \
         a guest may have no C library: {HOW_TO_BUILD}"
    )]
    NotStatic { path: PathBuf },
    #[error("no guest agent found (${AGENT_ENV} is unset, and none at {looked}): {HOW_TO_BUILD}")]
    Missing { looked: String },
}

/// Whether an image gets the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentChoice {
    /// Found by [`load_static_agent`]; none, or a dynamic one, is an error.
    Find,
    /// No agent: the user asked for an image without it (`--no-agent`).
    Without,
}

/// A static agent found for an image: where it is, its bytes and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticAgent {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub sha256: String,
}

/// The agent an image built with `choice` gets: `None` only for
/// [`AgentChoice::Without`].
pub fn agent_for(choice: AgentChoice) -> Result<Option<StaticAgent>, AgentError> {
    match choice {
        AgentChoice::Find => load_static_agent().map(Some),
        AgentChoice::Without => Ok(None),
    }
}

/// The path of the agent [`load_static_agent`] finds.
pub fn find_static_agent() -> Result<PathBuf, AgentError> {
    Ok(load_static_agent()?.path)
}

/// `$HEARTH_AGENT` if set, else `scripts/build-agent`'s output near the
/// running executable, else `hearth-agent` beside it; read and hashed. The
/// first that exists must be a static ELF.
pub fn load_static_agent() -> Result<StaticAgent, AgentError> {
    let from_env = std::env::var_os(AGENT_ENV)
        .map(PathBuf::from)
        .filter(|p| !p.as_os_str().is_empty());
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_owned));
    locate(from_env, &candidates(exe_dir.as_deref()))
}

/// Where to look without `$HEARTH_AGENT`, in order: the static build of
/// `scripts/build-agent` (for a `hearth` in `target/release` or
/// `target/debug`), then beside `hearth`.
fn candidates(exe_dir: Option<&Path>) -> Vec<PathBuf> {
    let Some(dir) = exe_dir else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let in_target = dir
        .file_name()
        .is_some_and(|n| n == "release" || n == "debug");
    if let (true, Some(target)) = (in_target, dir.parent()) {
        out.push(target.join(AGENT_BUILD));
    }
    out.push(dir.join(AGENT_FILE));
    out
}

fn locate(from_env: Option<PathBuf>, candidates: &[PathBuf]) -> Result<StaticAgent, AgentError> {
    let path = match from_env {
        Some(path) => path,
        None => candidates
            .iter()
            .find(|p| p.is_file())
            .cloned()
            .ok_or_else(|| AgentError::Missing {
                looked: looked(candidates),
            })?,
    };
    let bytes = std::fs::read(&path).map_err(|source| AgentError::Unreadable {
        path: path.clone(),
        source,
    })?;
    if !is_static_elf(&bytes) {
        return Err(AgentError::NotStatic { path });
    }
    Ok(agent(path, bytes))
}

fn looked(candidates: &[PathBuf]) -> String {
    let shown: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    match shown.is_empty() {
        true => "no place beside hearth".to_owned(),
        false => shown.join(" or "),
    }
}

fn agent(path: PathBuf, bytes: Vec<u8>) -> StaticAgent {
    let sha256 = hex::encode(Sha256::digest(&bytes));
    StaticAgent {
        path,
        bytes,
        sha256,
    }
}

/// A 64-bit little-endian ELF with no PT_INTERP (no dynamic loader).
pub fn is_static_elf(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        u32_at(at).is_some_and(|p_type| p_type != PT_INTERP)
    })
}

/// Whether `path` is a static ELF (false when unreadable).
pub fn is_static_elf_file(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| is_static_elf(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATIC: &str = "/bin/busybox";

    #[test]
    fn static_elf_is_told_from_dynamic_and_from_junk() {
        let busybox = std::fs::read(STATIC).expect("busybox-static is installed");
        assert!(is_static_elf(&busybox));
        assert!(!is_static_elf(&std::fs::read("/bin/sh").unwrap()));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        assert!(!is_static_elf(b"\x7fELF\x02\x01"));
    }

    #[test]
    fn the_environment_wins_and_must_name_a_static_elf() {
        let found = locate(Some(STATIC.into()), &[]).unwrap();
        assert_eq!(found.path, Path::new(STATIC));
        assert_eq!(found.sha256.len(), 64);
        let err = locate(Some("/bin/sh".into()), &[STATIC.into()]).unwrap_err();
        assert!(matches!(err, AgentError::NotStatic { .. }), "{err}");
        assert!(err.to_string().contains("scripts/build-agent"), "{err}");
        assert!(matches!(
            locate(Some("/nonexistent/agent".into()), &[]),
            Err(AgentError::Unreadable { .. })
        ));
    }

    #[test]
    fn a_dynamic_agent_beside_hearth_is_refused_not_skipped() {
        // What a plain `cargo build --release` leaves in target/release.
        let err = locate(None, &["/nonexistent".into(), "/bin/sh".into()]).unwrap_err();
        assert!(matches!(&err, AgentError::NotStatic { path } if path == Path::new("/bin/sh")));
        assert!(err.to_string().contains("--no-agent"), "{err}");
        let err = locate(None, &["/nonexistent/a".into(), "/nonexistent/b".into()]).unwrap_err();
        assert!(
            matches!(&err, AgentError::Missing { looked } if looked == "/nonexistent/a or /nonexistent/b"),
            "{err}"
        );
    }

    #[test]
    fn the_static_build_comes_before_what_a_cargo_build_puts_beside_hearth() {
        let dir = tempfile::tempdir().unwrap();
        let release = dir.path().join("target/release");
        let built = dir.path().join("target").join(AGENT_BUILD);
        std::fs::create_dir_all(&release).unwrap();
        std::fs::create_dir_all(built.parent().unwrap()).unwrap();
        std::fs::copy("/bin/sh", release.join(AGENT_FILE)).unwrap();
        std::fs::copy(STATIC, &built).unwrap();
        let found = locate(None, &candidates(Some(&release))).unwrap();
        assert_eq!(found.path, built);
        // Installed side by side (no target/agent-build): beside counts.
        assert_eq!(
            candidates(Some(Path::new("/usr/local/bin"))),
            [PathBuf::from("/usr/local/bin/hearth-agent")]
        );
    }

    #[test]
    fn without_means_without() {
        assert_eq!(agent_for(AgentChoice::Without).unwrap(), None);
    }
}
