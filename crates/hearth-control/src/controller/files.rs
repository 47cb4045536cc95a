//! `hearth vm cp`: files into and out of a ready VM over its agent link,
//! bounded in size, with the SHA-256 checked at both ends. Never logs a
//! file's content.

use std::time::Duration;

use hearth_types::api::FileWritten;
use hearth_types::VmId;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::exec::{ready_link, ExecError};
use super::{Controller, Scope};
use crate::agent_link::FileEvent;

/// Mode of a file written by `hearth vm cp`.
pub const FILE_MODE: u32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("the file is larger than {limit} bytes, the most `hearth vm cp` moves (ControllerConfig::max_file_bytes, `hearth serve --max-file-bytes`): split it or raise the bound")]
    TooLarge { limit: u64 },
    #[error("the guest refused: {0}")]
    Guest(String),
    #[error("the file arrived damaged ({what}): try again")]
    Checksum { what: String },
    #[error("the agent of VM {vm} did not finish the transfer within {secs}s")]
    Deadline { vm: VmId, secs: u64 },
}

/// How long a transfer of `bytes` may take: slow TCG guests move a few
/// MiB per second through virtio-serial.
fn budget(bytes: u64) -> Duration {
    Duration::from_secs(30 + bytes / (256 << 10))
}

pub(super) async fn write(
    ctl: &Controller,
    scope: &Scope,
    id: &VmId,
    path: String,
    data: Vec<u8>,
) -> Result<FileWritten, FileError> {
    let limit = ctl.config.max_file_bytes;
    if data.len() as u64 > limit {
        return Err(FileError::TooLarge { limit });
    }
    let link = ready_link(ctl, scope, id).await?;
    let sha256 = hex::encode(Sha256::digest(&data));
    let size = data.len() as u64;
    let secs = budget(size);
    let mut events = link
        .write_file(path.clone(), data, FILE_MODE)
        .ok_or_else(|| ExecError::Lost { vm: id.clone() })?;
    match next(&mut events, id, secs).await? {
        FileEvent::Done {
            size: got,
            sha256: theirs,
        } if got == size && theirs == sha256 => Ok(FileWritten { path, size, sha256 }),
        FileEvent::Done { .. } => Err(FileError::Checksum {
            what: "the guest's size or SHA-256 differs from the host's".into(),
        }),
        other => Err(failure(other, id, limit)),
    }
}

/// The file's bytes and their SHA-256 (checked against the agent's).
pub(super) async fn read(
    ctl: &Controller,
    scope: &Scope,
    id: &VmId,
    path: String,
) -> Result<(Vec<u8>, String), FileError> {
    let limit = ctl.config.max_file_bytes;
    let link = ready_link(ctl, scope, id).await?;
    let secs = budget(limit);
    let mut events = link
        .read_file(path, limit)
        .ok_or_else(|| ExecError::Lost { vm: id.clone() })?;
    let mut data = Vec::new();
    loop {
        match next(&mut events, id, secs).await? {
            FileEvent::Chunk(bytes) => {
                data.extend_from_slice(&bytes);
                if data.len() as u64 > limit {
                    return Err(FileError::TooLarge { limit });
                }
            }
            FileEvent::Done { size, sha256 } => {
                let ours = hex::encode(Sha256::digest(&data));
                if size != data.len() as u64 || sha256 != ours {
                    return Err(FileError::Checksum {
                        what: "the bytes received do not match the guest's size and SHA-256".into(),
                    });
                }
                return Ok((data, ours));
            }
            other => return Err(failure(other, id, limit)),
        }
    }
}

async fn next(
    events: &mut mpsc::UnboundedReceiver<FileEvent>,
    id: &VmId,
    budget: Duration,
) -> Result<FileEvent, FileError> {
    match tokio::time::timeout(budget, events.recv()).await {
        Err(_) => Err(FileError::Deadline {
            vm: id.clone(),
            secs: budget.as_secs(),
        }),
        Ok(None) | Ok(Some(FileEvent::Lost)) => Err(ExecError::Lost { vm: id.clone() }.into()),
        Ok(Some(e)) => Ok(e),
    }
}

/// A transfer's failure. The agent words a file over the bound as
/// "larger than"; that is the host's 413 too.
fn failure(event: FileEvent, id: &VmId, limit: u64) -> FileError {
    match event {
        FileEvent::Error(m) if m.contains("larger than") || m.contains("too large") => {
            FileError::TooLarge { limit }
        }
        FileEvent::Error(m) => FileError::Guest(m),
        FileEvent::Lost => ExecError::Lost { vm: id.clone() }.into(),
        FileEvent::Chunk(_) | FileEvent::Done { .. } => {
            FileError::Guest("the agent answered out of order".into())
        }
    }
}
