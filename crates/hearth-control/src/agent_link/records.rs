//! Turning the agent's records into rows: host times from the guest's
//! uptime, the kind and service for lookups, the whole record as JSON.

use hearth_agent_proto::Record;
use hearth_store::{AgentEntry, NewAgentRecord};
use hearth_types::Timestamp;

/// Host time = the hello's wall time - the hello's uptime + the record's
/// uptime (corrected by heartbeats that arrive sooner after they were
/// sent): the kernel's uptime is one clock for the whole boot, whichever
/// agent process or connection the record came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Clock {
    /// Host milliseconds at guest uptime 0.
    boot_ms: i64,
}

impl Clock {
    pub(crate) fn from_hello(now: Timestamp, hello_uptime_ms: u64) -> Self {
        let uptime = i64::try_from(hello_uptime_ms).unwrap_or(i64::MAX);
        Clock {
            boot_ms: now.as_millis().saturating_sub(uptime),
        }
    }

    /// A later message stamped `uptime_ms` arrived at `now`. Transit only
    /// ever adds time, so the earliest boot it implies is the better one:
    /// a hello that waited in the channel for the host to connect (a
    /// virtio-serial port holds it) would otherwise put every later record
    /// that much late.
    pub(crate) fn observe(&mut self, now: Timestamp, uptime_ms: u64) {
        let other = Clock::from_hello(now, uptime_ms);
        self.boot_ms = self.boot_ms.min(other.boot_ms);
    }

    pub(crate) fn at(self, uptime_ms: u64) -> Timestamp {
        let uptime = i64::try_from(uptime_ms).unwrap_or(i64::MAX);
        Timestamp::from_millis(self.boot_ms.saturating_add(uptime))
    }
}

/// The row for one record.
pub(crate) fn to_row(seq: u64, record: &Record, clock: Clock) -> NewAgentRecord {
    let at = clock.at(uptime_of(record));
    let entry = match record {
        Record::ServiceLog {
            service,
            stream,
            line,
            ..
        } => AgentEntry::Log {
            service: service.clone(),
            stream: *stream,
            line: line.clone(),
        },
        other => AgentEntry::Record {
            kind: kind_of(other).to_owned(),
            service: service_of(other).map(str::to_owned),
            // Serializing a record of plain fields cannot fail.
            body: serde_json::to_string(other).unwrap_or_default(),
        },
    };
    NewAgentRecord { seq, at, entry }
}

pub(crate) fn uptime_of(record: &Record) -> u64 {
    match record {
        Record::ConfigApplied { uptime_ms, .. }
        | Record::ConfigFailed { uptime_ms, .. }
        | Record::ServiceStarted { uptime_ms, .. }
        | Record::ServiceSpawnFailed { uptime_ms, .. }
        | Record::ServiceLog { uptime_ms, .. }
        | Record::LinesDropped { uptime_ms, .. }
        | Record::ServiceReady { uptime_ms, .. }
        | Record::ServiceExited { uptime_ms, .. }
        | Record::CrashLoop { uptime_ms, .. }
        | Record::Ready { uptime_ms }
        | Record::BootReport { uptime_ms, .. } => *uptime_ms,
    }
}

/// The record's `kind` word, as on the wire.
pub(crate) fn kind_of(record: &Record) -> &'static str {
    match record {
        Record::ConfigApplied { .. } => "config_applied",
        Record::ConfigFailed { .. } => "config_failed",
        Record::ServiceStarted { .. } => "service_started",
        Record::ServiceSpawnFailed { .. } => "service_spawn_failed",
        Record::ServiceLog { .. } => "service_log",
        Record::LinesDropped { .. } => "lines_dropped",
        Record::ServiceReady { .. } => "service_ready",
        Record::ServiceExited { .. } => "service_exited",
        Record::CrashLoop { .. } => "crash_loop",
        Record::Ready { .. } => "ready",
        Record::BootReport { .. } => "boot_report",
    }
}

fn service_of(record: &Record) -> Option<&str> {
    match record {
        Record::ServiceStarted { service, .. }
        | Record::ServiceSpawnFailed { service, .. }
        | Record::ServiceLog { service, .. }
        | Record::LinesDropped { service, .. }
        | Record::ServiceReady { service, .. }
        | Record::ServiceExited { service, .. }
        | Record::CrashLoop { service, .. } => Some(service),
        Record::ConfigApplied { .. }
        | Record::ConfigFailed { .. }
        | Record::Ready { .. }
        | Record::BootReport { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use hearth_types::guest::ExitStatus;

    use super::*;

    #[test]
    fn times_count_from_the_guests_boot() {
        let clock = Clock::from_hello(Timestamp::from_millis(10_000), 4_000);
        assert_eq!(clock.at(4_500), Timestamp::from_millis(10_500));
        assert_eq!(clock.at(1_000), Timestamp::from_millis(7_000));
    }

    #[test]
    fn a_hello_that_waited_is_corrected_by_a_quicker_heartbeat_never_the_other_way() {
        // The hello (uptime 4 s) waited 3 s in the channel.
        let mut clock = Clock::from_hello(Timestamp::from_millis(13_000), 4_000);
        clock.observe(Timestamp::from_millis(12_010), 6_000);
        assert_eq!(clock.at(6_000), Timestamp::from_millis(12_010));
        // A slow heartbeat does not move it back.
        clock.observe(Timestamp::from_millis(20_000), 7_000);
        assert_eq!(clock.at(6_000), Timestamp::from_millis(12_010));
    }

    #[test]
    fn kinds_match_the_wire_tag() {
        let r = Record::ServiceExited {
            uptime_ms: 1,
            service: "web".into(),
            status: ExitStatus {
                code: Some(3),
                signal: None,
            },
            restarts: 0,
            restart_in_ms: None,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["kind"], kind_of(&r));
        let row = to_row(4, &r, Clock::from_hello(Timestamp::from_millis(0), 0));
        let AgentEntry::Record {
            kind,
            service,
            body,
        } = row.entry
        else {
            panic!("a log line")
        };
        assert_eq!(
            (kind.as_str(), service.as_deref()),
            ("service_exited", Some("web"))
        );
        assert_eq!(serde_json::from_str::<Record>(&body).unwrap(), r);
    }
}
