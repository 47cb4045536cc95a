//! Finding the static `hearth-agent` that images carry (see docs/agent.md).
//! The agent must be statically linked: the minimal image has no C library.
//! `$HEARTH_AGENT` names it; otherwise a `hearth-agent` next to the running
//! executable is used when it is static. `scripts/build-agent` builds one.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The environment variable naming the agent binary to put in images.
pub const AGENT_ENV: &str = "HEARTH_AGENT";
/// The binary's file name next to `hearth`.
pub const AGENT_FILE: &str = "hearth-agent";
/// The virtio-serial port name the agent is started with.
pub const AGENT_PORT: &str = "hearth.agent";
/// How to get an agent, for messages.
pub const HOW_TO_BUILD: &str = "build one with `scripts/build-agent` and set HEARTH_AGENT to the \
                                path it prints (or put it next to hearth as `hearth-agent`)";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot read the agent {path} (from ${AGENT_ENV})")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} (from ${AGENT_ENV}) is not a statically linked x86-64 ELF; the guest has no C \
         library: {HOW_TO_BUILD}"
    )]
    NotStatic { path: PathBuf },
}

/// A static agent found for an image: where it is, its bytes and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticAgent {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub sha256: String,
}

/// `$HEARTH_AGENT` if set (an error when it is not a static ELF), else
/// `hearth-agent` next to the current executable if it is static.
pub fn find_static_agent() -> Result<Option<PathBuf>, AgentError> {
    Ok(load_static_agent()?.map(|a| a.path))
}

/// Like [`find_static_agent`], with the binary read and hashed.
pub fn load_static_agent() -> Result<Option<StaticAgent>, AgentError> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(AGENT_FILE)));
    locate(std::env::var_os(AGENT_ENV).map(PathBuf::from), beside)
}

fn locate(
    from_env: Option<PathBuf>,
    beside: Option<PathBuf>,
) -> Result<Option<StaticAgent>, AgentError> {
    if let Some(path) = from_env.filter(|p| !p.as_os_str().is_empty()) {
        let bytes = std::fs::read(&path).map_err(|source| AgentError::Unreadable {
            path: path.clone(),
            source,
        })?;
        if !is_static_elf(&bytes) {
            return Err(AgentError::NotStatic { path });
        }
        return Ok(Some(agent(path, bytes)));
    }
    let Some(path) = beside else { return Ok(None) };
    match std::fs::read(&path) {
        Ok(bytes) if is_static_elf(&bytes) => Ok(Some(agent(path, bytes))),
        _ => Ok(None),
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
        let found = locate(Some(STATIC.into()), None).unwrap().unwrap();
        assert_eq!(found.path, Path::new(STATIC));
        assert_eq!(found.sha256.len(), 64);
        let err = locate(Some("/bin/sh".into()), Some(STATIC.into())).unwrap_err();
        assert!(err.to_string().contains("scripts/build-agent"), "{err}");
        assert!(matches!(
            locate(Some("/nonexistent/agent".into()), None),
            Err(AgentError::Unreadable { .. })
        ));
    }

    #[test]
    fn beside_the_executable_only_a_static_one_counts() {
        let found = locate(None, Some(STATIC.into())).unwrap().unwrap();
        assert_eq!(found.path, Path::new(STATIC));
        assert_eq!(locate(None, Some("/bin/sh".into())).unwrap(), None);
        assert_eq!(locate(None, Some("/nonexistent".into())).unwrap(), None);
        assert_eq!(locate(Some("".into()), None).unwrap(), None);
    }
}
