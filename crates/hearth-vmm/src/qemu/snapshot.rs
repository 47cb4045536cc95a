//! Snapshots on QEMU: the guest paused and its memory and device state
//! written to one file by QEMU's file migration with `mapped-ram` (each
//! RAM page at its own offset, so the file is as sparse as the guest's
//! memory), over the VM's second QMP socket; and a new QEMU started with
//! `-incoming defer` that loads such a file and runs on.
//!
//! A shared template's RAM is a file of its own (`share=on`), so its state
//! is saved with `x-ignore-shared` instead: QEMU leaves the file-backed RAM
//! out of the state file (the file is the memory), and a VM restored from
//! it, whose RAM maps that file copy-on-write, loads with the same
//! capability. Not with `mapped-ram` too: QEMU 10.0 fails such a save
//! ("Failed to write bitmap to file: Unable to write to file: Bad
//! address"), and with no RAM in the stream it would save nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use hearth_types::{BackendKind, MemoryMapping, VmDescription};
use serde_json::{json, Value};

use super::cmdline;
use super::qmp::Qmp;
use crate::VmmError;

/// A save or load that takes longer is given up (a 1 GiB guest saved in
/// ~3 s here, loaded in ~1 s).
const MIGRATION_DEADLINE: Duration = Duration::from_secs(120);

/// What QEMU is told to wait with: the state comes over QMP.
pub const INCOMING: [&str; 2] = ["-incoming", "defer"];

/// The migration capability that leaves a template's file-backed RAM out
/// of its state, on both sides.
pub const IGNORE_SHARED: &str = "x-ignore-shared";

/// The migration capability a save or load of `vm` needs.
pub fn capability(vm: &VmDescription) -> &'static str {
    match vm.memory.as_ref().map(|m| m.mapping) {
        None => "mapped-ram",
        Some(MemoryMapping::Template | MemoryMapping::CopyOnWrite) => IGNORE_SHARED,
    }
}

/// Pauses the guest and writes its state to `state` (which QEMU creates:
/// it must be in a directory QEMU may write, such as the run directory).
/// The guest stays paused; [`resume`] runs it again.
pub async fn save(vm: &VmDescription, state: &Path) -> Result<(), VmmError> {
    let mut qmp = connect(vm).await?;
    call(&mut qmp, "stop", None).await?;
    set_capability(&mut qmp, capability(vm)).await?;
    let uri = file_uri(state);
    call(&mut qmp, "migrate", Some(json!({ "uri": uri }))).await?;
    wait_migration(&mut qmp).await
}

/// Runs a guest paused by [`save`] again.
pub async fn resume(vm: &VmDescription) -> Result<(), VmmError> {
    let mut qmp = connect(vm).await?;
    call(&mut qmp, "cont", None).await.map(|_| ())
}

/// Loads `state` into `vm`'s QEMU, started with [`INCOMING`], and runs
/// the guest.
pub async fn load(qmp: &mut Qmp, vm: &VmDescription, state: &Path) -> Result<(), VmmError> {
    set_capability(qmp, capability(vm)).await?;
    let uri = file_uri(state);
    call(qmp, "migrate-incoming", Some(json!({ "uri": uri }))).await?;
    wait_migration(qmp).await?;
    call(qmp, "cont", None).await.map(|_| ())
}

async fn connect(vm: &VmDescription) -> Result<Qmp, VmmError> {
    Qmp::connect(&cmdline::snapshot_socket(vm), Duration::from_secs(5))
        .await
        .map_err(|e| {
            api_error(
                "connect to the snapshot QMP socket",
                format!(
                    "{}; a VM started before snapshots existed has none: create it anew",
                    hearth_types::error_chain(&e)
                ),
            )
        })
}

async fn set_capability(qmp: &mut Qmp, capability: &str) -> Result<(), VmmError> {
    let caps = json!({ "capabilities": [{ "capability": capability, "state": true }] });
    call(qmp, "migrate-set-capabilities", Some(caps))
        .await
        .map(|_| ())
}

/// Polls `query-migrate` until it is over: `completed`, or the error QEMU
/// gives for `failed`.
async fn wait_migration(qmp: &mut Qmp) -> Result<(), VmmError> {
    let start = Instant::now();
    loop {
        let ret = call(qmp, "query-migrate", None).await?;
        match ret.get("status").and_then(Value::as_str) {
            Some("completed") => return Ok(()),
            Some("failed" | "cancelled") => {
                let why = ret
                    .get("error-desc")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given");
                return Err(api_error("migrate", why.to_owned()));
            }
            _ if start.elapsed() > MIGRATION_DEADLINE => {
                return Err(VmmError::Timeout {
                    what: "QEMU to save or load the snapshot".into(),
                    secs: MIGRATION_DEADLINE.as_secs(),
                })
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn call(qmp: &mut Qmp, command: &str, args: Option<Value>) -> Result<Value, VmmError> {
    qmp.execute_with(command, args)
        .await
        .map_err(|e| api_error(command, hearth_types::error_chain(&e)))
}

fn api_error(call: &str, detail: String) -> VmmError {
    VmmError::Api {
        backend: BackendKind::Qemu,
        call: call.to_owned(),
        detail,
    }
}

/// `file:PATH` (QEMU takes the rest of the URI as the path).
fn file_uri(path: &Path) -> String {
    format!("file:{}", path.display())
}
