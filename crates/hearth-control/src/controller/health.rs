//! What the agent's stored records say about a VM: its services' states,
//! restarts and exits, readiness, the boot report and the output lines.
//! Read from the store only, so it reads the same after the VM is gone.

use hearth_agent_proto::Record;
use hearth_store::{AgentRecord, VmRecord};
use hearth_types::api::{
    AgentHealth, ServiceExit, ServiceHealth, ServiceLogLine, ServiceLogs, VmBootReport, VmHealth,
};
use hearth_types::guest::{Readiness, ServiceState};

use super::{ControlError, Controller};

/// The most lines a logs request returns.
pub const MAX_TAIL: usize = hearth_store::MAX_LINES_PER_SERVICE as usize;

/// One service as the records tell it, with what diagnosis also wants.
#[derive(Debug, Clone)]
pub(super) struct ServiceView {
    pub health: ServiceHealth,
    pub readiness: Option<Readiness>,
    pub exits: Vec<hearth_types::guest::ExitStatus>,
}

impl ServiceView {
    fn new(name: &str) -> Self {
        ServiceView {
            health: ServiceHealth {
                name: name.to_owned(),
                state: ServiceState::Starting,
                restarts: 0,
                last_exit: None,
                ready: false,
                crash_loop: false,
                spawn_error: None,
            },
            readiness: None,
            exits: Vec::new(),
        }
    }
}

/// Everything the records say, folded in order.
#[derive(Debug, Default)]
pub(super) struct RecordView {
    pub services: Vec<ServiceView>,
    pub ready: bool,
    pub config_error: Option<String>,
}

impl RecordView {
    pub(super) fn fold(records: &[AgentRecord]) -> RecordView {
        let mut view = RecordView::default();
        for stored in records {
            // A body this build cannot read (a newer agent) is skipped.
            if let Ok(record) = serde_json::from_str::<Record>(&stored.body) {
                view.apply(stored, record);
            }
        }
        view
    }

    fn service(&mut self, name: &str) -> &mut ServiceView {
        let i = match self.services.iter().position(|s| s.health.name == name) {
            Some(i) => i,
            None => {
                self.services.push(ServiceView::new(name));
                self.services.len() - 1
            }
        };
        &mut self.services[i]
    }

    fn apply(&mut self, stored: &AgentRecord, record: Record) {
        match record {
            Record::ConfigApplied { services, .. } => {
                for spec in services {
                    self.service(&spec.name).readiness = spec.readiness;
                }
            }
            Record::ConfigFailed { message, .. } => self.config_error = Some(message),
            Record::ServiceStarted {
                service, attempt, ..
            } => {
                let s = &mut self.service(&service).health;
                s.restarts = attempt.saturating_sub(1);
                if s.state != ServiceState::CrashLooping {
                    s.state = ServiceState::Starting;
                }
            }
            Record::ServiceSpawnFailed {
                service, message, ..
            } => {
                let s = &mut self.service(&service).health;
                s.spawn_error = Some(message);
                if s.state != ServiceState::CrashLooping {
                    s.state = ServiceState::Stopped;
                }
            }
            Record::ServiceReady { service, .. } => {
                let s = &mut self.service(&service).health;
                s.ready = true;
                s.state = ServiceState::Running;
            }
            Record::ServiceExited {
                service,
                status,
                restarts,
                restart_in_ms,
                ..
            } => {
                let view = self.service(&service);
                view.exits.push(status);
                let s = &mut view.health;
                s.restarts = restarts;
                s.last_exit = Some(ServiceExit {
                    status,
                    at: stored.at,
                });
                s.state = match (restart_in_ms, s.state) {
                    (Some(_), ServiceState::CrashLooping) => ServiceState::CrashLooping,
                    (Some(_), _) => ServiceState::Backoff,
                    (None, _) => ServiceState::Stopped,
                };
            }
            Record::CrashLoop { service, .. } => {
                let s = &mut self.service(&service).health;
                s.crash_loop = true;
                if s.state != ServiceState::Stopped {
                    s.state = ServiceState::CrashLooping;
                }
            }
            Record::Ready { .. } => self.ready = true,
            Record::ServiceLog { .. } | Record::LinesDropped { .. } | Record::BootReport { .. } => {
            }
        }
    }
}

pub(super) async fn health(ctl: &Controller, record: &VmRecord) -> Result<VmHealth, ControlError> {
    let id = &record.vm.id;
    let view = RecordView::fold(&ctl.store.agent_records(id).await?);
    let status = ctl.store.agent_status(id).await?.unwrap_or_default();
    let connected = ctl.links.get(id).is_some_and(|l| l.connected());
    let agent = AgentHealth {
        connected,
        agent_version: status.hello.as_ref().map(|h| h.agent_version.clone()),
        connected_at: status.hello.as_ref().map(|h| h.connected_at),
        last_heartbeat: status.last_heartbeat,
    };
    Ok(VmHealth {
        vm: id.clone(),
        agent,
        ready: view.ready,
        config_error: view.config_error,
        services: view.services.into_iter().map(|s| s.health).collect(),
    })
}

pub(super) async fn service_logs(
    ctl: &Controller,
    record: &VmRecord,
    service: &str,
    tail: usize,
) -> Result<ServiceLogs, ControlError> {
    let id = &record.vm.id;
    let lines = ctl
        .store
        .service_lines(id, service, tail.min(MAX_TAIL))
        .await?;
    Ok(ServiceLogs {
        vm: id.clone(),
        service: service.to_owned(),
        lines: lines
            .into_iter()
            .map(|l| ServiceLogLine {
                at: l.at,
                stream: l.stream,
                line: l.line,
            })
            .collect(),
    })
}

/// The latest boot report; `None` when the agent sent none.
pub(super) async fn boot_report(
    ctl: &Controller,
    record: &VmRecord,
) -> Result<Option<VmBootReport>, ControlError> {
    let id = &record.vm.id;
    let Some(stored) = ctl.store.latest_agent_record(id, "boot_report").await? else {
        return Ok(None);
    };
    match serde_json::from_str::<Record>(&stored.body) {
        Ok(Record::BootReport { report, .. }) => Ok(Some(VmBootReport {
            vm: id.clone(),
            at: stored.at,
            report,
        })),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use hearth_types::guest::ExitStatus;
    use hearth_types::Timestamp;

    use super::*;

    fn stored(r: Record) -> AgentRecord {
        AgentRecord {
            at: Timestamp::from_millis(5),
            kind: String::new(),
            service: None,
            body: serde_json::to_string(&r).unwrap(),
        }
    }

    fn exited(code: i32, restarts: u32) -> Record {
        Record::ServiceExited {
            uptime_ms: 1,
            service: "web".into(),
            status: ExitStatus {
                code: Some(code),
                signal: None,
            },
            restarts,
            restart_in_ms: Some(100),
        }
    }

    #[test]
    fn a_crash_looping_service_shows_its_restarts_and_last_exit() {
        let started = |attempt| Record::ServiceStarted {
            uptime_ms: 1,
            service: "web".into(),
            pid: 9,
            attempt,
        };
        let records = [
            started(1),
            exited(3, 1),
            started(2),
            exited(3, 2),
            Record::CrashLoop {
                uptime_ms: 1,
                service: "web".into(),
                restarts: 2,
                window_secs: 30,
            },
            started(3),
        ]
        .map(stored);
        let view = RecordView::fold(&records);
        let web = &view.services[0].health;
        assert_eq!(web.state, ServiceState::CrashLooping);
        assert!(web.crash_loop && !web.ready);
        assert_eq!(web.restarts, 2);
        assert_eq!(web.last_exit.unwrap().status.code, Some(3));
        assert_eq!(view.services[0].exits.len(), 2);
        assert!(!view.ready);
    }

    #[test]
    fn a_ready_service_runs_and_the_vm_is_ready() {
        let records = [
            Record::ServiceReady {
                uptime_ms: 1,
                service: "db".into(),
            },
            Record::Ready { uptime_ms: 2 },
        ]
        .map(stored);
        let view = RecordView::fold(&records);
        assert_eq!(view.services[0].health.state, ServiceState::Running);
        assert!(view.ready);
    }
}
