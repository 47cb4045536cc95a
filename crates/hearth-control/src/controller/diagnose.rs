//! `GET /v1/vms/{id}/diagnosis`: the evidence of one VM — its logs, live or
//! archived, and what the store recorded — through the diagnosis rules.

use hearth_store::VmRecord;
use hearth_types::api::Diagnosis;
use hearth_types::VmState;

use super::health::RecordView;
use super::{ControlError, Controller};
use crate::diagnosis::{
    diagnose_with_agent, read_isolation, read_logs, AgentFacts, Evidence, OutputLine, ServiceFacts,
    MAX_SERVICE_LINES,
};

pub(super) async fn diagnosis(
    ctl: &Controller,
    record: &VmRecord,
) -> Result<Diagnosis, ControlError> {
    let evidence = gather(ctl, record).await?;
    let facts = agent_facts(ctl, record).await?;
    let findings = diagnose_with_agent(&evidence, &facts);
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
        tokio::task::spawn_blocking(move || {
            read_logs(&dir).map(|(console, logs)| (console, logs, read_isolation(&dir)))
        })
    };
    let (console, hypervisor_log, isolation) = read
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
        isolation,
    })
}

/// What the agent told the store about the VM, for the agent's rules.
async fn agent_facts(ctl: &Controller, record: &VmRecord) -> Result<AgentFacts, ControlError> {
    let id = &record.vm.id;
    let view = RecordView::fold(&ctl.store.agent_records(id).await?);
    let status = ctl.store.agent_status(id).await?.unwrap_or_default();
    let mut services = Vec::new();
    for s in view.services {
        let lines = ctl
            .store
            .service_lines(id, &s.health.name, MAX_SERVICE_LINES)
            .await?;
        services.push(ServiceFacts {
            name: s.health.name,
            readiness: s.readiness,
            became_ready: s.health.ready,
            exits: s.exits,
            spawn_error: s.health.spawn_error,
            crash_loop: s.health.crash_loop,
            last_lines: lines
                .into_iter()
                .map(|l| OutputLine {
                    stream: l.stream,
                    text: l.line,
                })
                .collect(),
        });
    }
    let boot_report = super::health::boot_report(ctl, record)
        .await?
        .map(|r| r.report);
    Ok(AgentFacts {
        image_has_agent: super::agent::image_has_agent(ctl, &record.vm.image),
        hello_at: status.hello.map(|h| h.connected_at),
        services,
        boot_report,
    })
}
