//! Request and response bodies of the HTTP API (`/v1`). One set of structs
//! serves the server, the CLI client and the committed OpenAPI document.

use serde::{Deserialize, Serialize};

use crate::lifecycle::{Failure, VmState};
use crate::time::Timestamp;
use crate::{BackendKind, TenantId, VmId};

/// `POST /v1/vms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateVm {
    /// Image name, as built with `hearth image build`.
    #[serde(default = "default_image")]
    pub image: String,
    #[serde(default = "default_backend")]
    pub backend: BackendKind,
    #[serde(default = "default_vcpus")]
    pub vcpus: u8,
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    /// What the guest runs; empty: it stays up until stopped.
    #[serde(default)]
    pub command: Vec<String>,
    /// Seconds the guest has to become ready; default: the server's (120).
    #[serde(default)]
    pub readiness_timeout_secs: Option<u64>,
}

fn default_image() -> String {
    "minimal".to_owned()
}
fn default_backend() -> BackendKind {
    BackendKind::Qemu
}
fn default_vcpus() -> u8 {
    1
}
fn default_memory() -> u32 {
    256
}

impl Default for CreateVm {
    fn default() -> Self {
        CreateVm {
            image: default_image(),
            backend: default_backend(),
            vcpus: default_vcpus(),
            memory_mib: default_memory(),
            command: Vec::new(),
            readiness_timeout_secs: None,
        }
    }
}

/// A VM as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Vm {
    pub id: VmId,
    pub tenant: TenantId,
    pub state: VmState,
    pub failure: Option<Failure>,
    /// Held VMs are never cleaned up until released.
    pub held: bool,
    pub image: String,
    pub backend: BackendKind,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub command: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub ready_at: Option<Timestamp>,
    /// Past this, a VM not yet ready fails with `boot_timeout`.
    pub ready_deadline: Timestamp,
    /// When a stopped or failed VM will be cleaned up (unless held).
    pub cleanup_after: Option<Timestamp>,
}

/// One state transition or notable happening.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VmEvent {
    pub seq: i64,
    pub at: Timestamp,
    /// The state after the event.
    pub state: VmState,
    pub message: String,
}

/// `GET /v1/vms/{id}/console?lines=N`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConsoleTail {
    pub lines: Vec<String>,
    /// The console log was archived (the VM is destroyed).
    pub archived: bool,
}

/// Every error the API returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    /// Stable, for scripts: `not_found`, `unauthorized`, `invalid_request`, ...
    pub code: String,
    /// For people: the problem and the fix.
    pub message: String,
}

/// `GET /v1/vms/{id}/diagnosis`: what the VM's logs and failure say went
/// wrong, most likely cause first. A healthy VM has no findings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Diagnosis {
    pub vm: VmId,
    pub findings: Vec<Finding>,
}

/// One problem the diagnosis found, with the lines that show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// Stable, for scripts: `kernel_panic`, `out_of_memory`, `failed_unit`, ...
    pub rule: String,
    /// What went wrong, in plain words.
    pub cause: String,
    /// The console or log lines that show it, as they were printed (without
    /// colour codes).
    pub evidence: Vec<String>,
    /// What to do about it.
    pub fix: String,
}
