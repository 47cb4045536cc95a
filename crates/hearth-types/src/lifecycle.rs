//! The states a VM goes through and why one failed. The rules for moving
//! between states live in `hearth-control::lifecycle`; these are the words.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a VM is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Recorded; nothing created yet.
    Requested,
    /// Writable layer and directory being made.
    Preparing,
    /// The hypervisor runs; the guest has not said it is ready.
    Booting,
    /// The guest said it is ready.
    Ready,
    /// Asked to stop; the hypervisor is being shut down.
    Stopping,
    /// The hypervisor ended without a failure (the guest powered off, or a
    /// requested stop).
    Stopped,
    /// Something went wrong; `failure` says what. Kept for inspection.
    Failed,
    /// Its files are removed and its logs archived. Terminal.
    Destroyed,
}

impl VmState {
    pub const ALL: [VmState; 8] = [
        VmState::Requested,
        VmState::Preparing,
        VmState::Booting,
        VmState::Ready,
        VmState::Stopping,
        VmState::Stopped,
        VmState::Failed,
        VmState::Destroyed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Requested => "requested",
            VmState::Preparing => "preparing",
            VmState::Booting => "booting",
            VmState::Ready => "ready",
            VmState::Stopping => "stopping",
            VmState::Stopped => "stopped",
            VmState::Failed => "failed",
            VmState::Destroyed => "destroyed",
        }
    }

    /// A hypervisor process may exist in these states.
    pub fn has_process(self) -> bool {
        matches!(self, VmState::Booting | VmState::Ready | VmState::Stopping)
    }

    /// Not yet stopped, failed or destroyed.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            VmState::Requested
                | VmState::Preparing
                | VmState::Booting
                | VmState::Ready
                | VmState::Stopping
        )
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VmState {
    type Err = UnknownWord;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VmState::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownWord(s.to_owned()))
    }
}

/// Why a VM failed, as a stable code scripts can match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    /// Not ready within its readiness deadline.
    BootTimeout,
    /// The hypervisor process ended while the VM was meant to run.
    HypervisorExited,
    /// A create step failed (layer, hypervisor start, ...).
    StartFailed,
    KernelPanic,
    RootNotMountable,
    MissingModule,
    /// The controller restarted and could not adopt the VM.
    Lost,
}

impl FailureCode {
    pub const ALL: [FailureCode; 7] = [
        FailureCode::BootTimeout,
        FailureCode::HypervisorExited,
        FailureCode::StartFailed,
        FailureCode::KernelPanic,
        FailureCode::RootNotMountable,
        FailureCode::MissingModule,
        FailureCode::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::BootTimeout => "boot_timeout",
            FailureCode::HypervisorExited => "hypervisor_exited",
            FailureCode::StartFailed => "start_failed",
            FailureCode::KernelPanic => "kernel_panic",
            FailureCode::RootNotMountable => "root_not_mountable",
            FailureCode::MissingModule => "missing_module",
            FailureCode::Lost => "lost",
        }
    }
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FailureCode {
    type Err = UnknownWord;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FailureCode::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownWord(s.to_owned()))
    }
}

/// A failure: the code, and the cause in plain words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Failure {
    pub code: FailureCode,
    pub message: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown word {0:?}")]
pub struct UnknownWord(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_codes_round_trip_through_their_words() {
        for s in VmState::ALL {
            assert_eq!(s.as_str().parse::<VmState>(), Ok(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        for c in FailureCode::ALL {
            assert_eq!(c.as_str().parse::<FailureCode>(), Ok(c));
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{c}\""));
        }
        assert!("running".parse::<VmState>().is_err());
    }
}
