//! The rows of what a VM's guest agent reported: its hello, the records it
//! sent (service lifecycles, readiness, boot reports) and its services'
//! output lines. The store does not read the agent's protocol: a record is
//! kept as its kind, its service and its JSON body.

use hearth_types::guest::Stream;
use hearth_types::Timestamp;

/// Output lines kept per service of a VM; older ones are dropped, so a
/// chatty service cannot fill the disk.
pub const MAX_LINES_PER_SERVICE: u64 = 10_000;
/// Records (other than log lines) kept per VM; older ones are dropped. A
/// crash-looping service adds a few per backoff, so this is hours of it.
pub const MAX_RECORDS_PER_VM: u64 = 10_000;

/// The agent's hello, as the host saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentHello {
    /// Random per agent process; record sequence numbers are per instance.
    pub instance: String,
    pub agent_version: String,
    pub boot_id: String,
    pub connected_at: Timestamp,
}

/// One record to store; `seq` is the agent's sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAgentRecord {
    pub seq: u64,
    /// Host time of what it records.
    pub at: Timestamp,
    pub entry: AgentEntry,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentEntry {
    /// A line of a service's output.
    Log {
        service: String,
        stream: Stream,
        line: String,
    },
    /// Anything else: `kind` is the record's kind (`service_exited`, ...),
    /// `body` the whole record as JSON.
    Record {
        kind: String,
        service: Option<String>,
        body: String,
    },
}

/// A stored record other than a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentRecord {
    pub at: Timestamp,
    pub kind: String,
    pub service: Option<String>,
    pub body: String,
}

/// A stored line of a service's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceLine {
    pub at: Timestamp,
    pub stream: Stream,
    pub line: String,
}

/// The agent's connection as last stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentStatus {
    /// `None` until the first hello.
    pub hello: Option<AgentHello>,
    /// Set while the channel is down after a hello.
    pub disconnected_at: Option<Timestamp>,
    pub last_heartbeat: Option<Timestamp>,
}
