//! What the rules know from the in-guest agent, as plain data.
//!
//! The console shows what the kernel, init and systemd print; the agent
//! knows more: whether it got to say hello at all, how each service it
//! runs ended, what the service wrote to stderr, which systemd units
//! failed. The host fills these facts from the store (they outlive the
//! VM), so the diagnosis of a VM destroyed last week reads the same as one
//! of a VM still running. Empty facts (the default) mean "nothing from an
//! agent": the console rules still work alone.

use hearth_types::guest::{BootReport, ExitStatus, Readiness, Stream};
use hearth_types::Timestamp;

/// Output lines kept per service: enough to show why it stopped.
pub const MAX_SERVICE_LINES: usize = 20;

/// Everything the agent told the host about one VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFacts {
    /// The VM's image carries the agent, so its silence means something.
    pub image_has_agent: bool,
    /// When the agent first said hello; `None` if it never did.
    pub hello_at: Option<Timestamp>,
    /// The services the agent ran, in the order they were configured.
    pub services: Vec<ServiceFacts>,
    /// What the agent found at its start, if it sent a report.
    pub boot_report: Option<BootReport>,
}

impl AgentFacts {
    /// The agent connected at least once.
    pub fn said_hello(&self) -> bool {
        self.hello_at.is_some()
    }
}

/// One service the agent ran, as the host last heard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceFacts {
    pub name: String,
    /// Its readiness check, if it has one.
    pub readiness: Option<Readiness>,
    /// The readiness check passed at least once (or there is none and the
    /// service started).
    pub became_ready: bool,
    /// How each run ended, newest last.
    pub exits: Vec<ExitStatus>,
    /// Why the agent could not start it at all, the last time that
    /// happened (`ServiceSpawnFailed`: no such program, `Exec format
    /// error`, no such user, ...).
    pub spawn_error: Option<String>,
    /// The agent declared a crash loop (the service's crash-loop rule).
    pub crash_loop: bool,
    /// Its last output lines, oldest first (up to [`MAX_SERVICE_LINES`]).
    pub last_lines: Vec<OutputLine>,
}

impl ServiceFacts {
    /// Its last lines on stderr, oldest first.
    pub fn stderr(&self) -> impl Iterator<Item = &str> {
        self.lines_on(Stream::Stderr)
    }

    /// Its last lines on one stream, oldest first.
    pub fn lines_on(&self, stream: Stream) -> impl Iterator<Item = &str> {
        self.last_lines
            .iter()
            .filter(move |l| l.stream == stream)
            .map(|l| l.text.as_str())
    }
}

/// One line a service wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    pub stream: Stream,
    pub text: String,
}

impl OutputLine {
    pub fn stderr(text: impl Into<String>) -> Self {
        OutputLine {
            stream: Stream::Stderr,
            text: text.into(),
        }
    }

    pub fn stdout(text: impl Into<String>) -> Self {
        OutputLine {
            stream: Stream::Stdout,
            text: text.into(),
        }
    }
}
