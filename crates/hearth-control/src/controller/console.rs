//! Reading a VM's logs: from its directory while it exists, from its
//! archive after it is destroyed, the same way both times.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use bytes::Bytes;
use hearth_store::VmRecord;
use hearth_types::api::ConsoleTail;
use hearth_types::VmState;
use tokio::sync::broadcast;

use super::{watch, ControlError, Controller};

/// The most lines one request may ask for.
pub const MAX_LINES: usize = 10_000;
/// How much of a log's end is read to find its last lines.
const TAIL_BYTES: u64 = 4 << 20;

/// Which log of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogName {
    /// The guest's serial console.
    Console,
    /// The hypervisor's own output (QEMU's stderr, Firecracker's stderr).
    Hypervisor,
}

impl LogName {
    fn file(self) -> &'static str {
        match self {
            LogName::Console => "console.log",
            LogName::Hypervisor => "hypervisor.log",
        }
    }
}

/// The log so far, and a stream of what follows while the VM runs.
#[derive(Debug)]
pub struct ConsoleFollow {
    pub tail: ConsoleTail,
    /// None when the VM no longer runs: the tail is all there is.
    pub stream: Option<broadcast::Receiver<Bytes>>,
}

fn path_of(ctl: &Controller, record: &VmRecord, log: LogName) -> (PathBuf, bool) {
    let id = &record.vm.id;
    if record.vm.state == VmState::Destroyed {
        (ctl.config.data.archive(id).join(log.file()), true)
    } else {
        (ctl.config.data.vm(id).join(log.file()), false)
    }
}

pub(super) async fn tail(
    ctl: &Controller,
    record: &VmRecord,
    log: LogName,
    lines: usize,
) -> Result<ConsoleTail, ControlError> {
    if lines == 0 || lines > MAX_LINES {
        return Err(ControlError::Invalid(format!(
            "lines is {lines}; give between 1 and {MAX_LINES}"
        )));
    }
    let (path, archived) = path_of(ctl, record, log);
    let text = read_end(&path).map_err(|source| ControlError::Io {
        what: path.display().to_string(),
        source,
    })?;
    let all: Vec<&str> = text.lines().collect();
    let lines = all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect();
    Ok(ConsoleTail { lines, archived })
}

/// The last few MiB of a file; a missing file reads as empty (a VM that
/// never started has no console).
fn read_end(path: &std::path::Path) -> std::io::Result<String> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

pub(super) async fn follow(
    ctl: &Controller,
    record: &VmRecord,
    log: LogName,
    lines: usize,
) -> Result<ConsoleFollow, ControlError> {
    // Subscribe first: a line may then arrive twice, but none is lost.
    let stream = match log {
        LogName::Console => watch::subscribe(ctl, &record.vm.id),
        LogName::Hypervisor => None,
    };
    let tail = tail(ctl, record, log, lines).await?;
    Ok(ConsoleFollow { tail, stream })
}
