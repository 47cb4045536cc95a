//! `GET /v1/vms/{id}/diagnosis`: the evidence of one VM — its logs, live or
//! archived, and what the store recorded — through the diagnosis rules.

use hearth_store::VmRecord;
use hearth_types::api::Diagnosis;
use hearth_types::VmState;

use super::{ControlError, Controller};
use crate::diagnosis::{diagnose, read_logs, Evidence};

pub(super) async fn diagnosis(
    ctl: &Controller,
    record: &VmRecord,
) -> Result<Diagnosis, ControlError> {
    let evidence = gather(ctl, record).await?;
    let findings = diagnose(&evidence);
    Ok(Diagnosis {
        vm: record.vm.id.clone(),
        findings,
    })
}

async fn gather(ctl: &Controller, record: &VmRecord) -> Result<Evidence, ControlError> {
    let id = &record.vm.id;
    let dir = if record.vm.state == VmState::Destroyed {
        ctl.config.data.archive(id)
    } else {
        ctl.config.data.vm(id)
    };
    let read = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || read_logs(&dir))
    };
    let (console, hypervisor_log) = read
        .await
        .map_err(|e| ControlError::Io {
            what: dir.display().to_string(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| ControlError::Io {
            what: dir.display().to_string(),
            source,
        })?;
    let events = ctl.store.events(id).await?;
    Ok(Evidence {
        console,
        hypervisor_log,
        // The store keeps no exit status; the failure's message quotes it.
        exit: None,
        failure: record.vm.failure.clone(),
        events: events.into_iter().map(|e| e.message).collect(),
        memory_mib: Some(record.vm.memory_mib),
    })
}
