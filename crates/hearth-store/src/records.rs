//! The rows hearth keeps.

use std::path::PathBuf;

use hearth_types::api::{CreateVm, Vm};
use hearth_types::{Failure, TenantId, Timestamp, VmId, VmState};

/// A VM as stored: what the API shows plus what only the controller needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmRecord {
    pub vm: Vm,
    /// The hypervisor process, while one may exist.
    pub process: Option<ProcessRef>,
    /// The readiness deadline every boot gets, seconds from its start;
    /// `None` for rows older than persistent VMs (their `ready_deadline`
    /// minus `created_at` says it).
    pub readiness_secs: Option<u64>,
}

impl VmRecord {
    pub fn id(&self) -> &VmId {
        &self.vm.id
    }

    pub fn state(&self) -> VmState {
        self.vm.state
    }

    /// A new record in `requested` for `tenant`.
    pub fn requested(
        id: VmId,
        tenant: TenantId,
        req: &CreateVm,
        now: Timestamp,
        ready_deadline: Timestamp,
    ) -> Self {
        VmRecord {
            vm: Vm {
                id,
                tenant,
                state: VmState::Requested,
                failure: None,
                held: false,
                image: req.image.clone(),
                backend: req.backend,
                vcpus: req.vcpus.unwrap_or(hearth_types::api::DEFAULT_VCPUS),
                memory_mib: req
                    .memory_mib
                    .unwrap_or(hearth_types::api::DEFAULT_MEMORY_MIB),
                command: req.command.clone(),
                created_at: now,
                updated_at: now,
                ready_at: None,
                ready_deadline,
                cleanup_after: None,
                persistent: req.persistent,
                disk_mib: req.persistent.then(|| {
                    req.disk_mib
                        .unwrap_or(hearth_types::persistence::DEFAULT_DISK_MIB)
                }),
                restart: req.restart.unwrap_or_default(),
                idle_stop_secs: req.idle_stop_secs,
                restarts: 0,
                restart_at: None,
                network_policy: req
                    .network
                    .map(|_| req.network_policy.clone().unwrap_or_default()),
            },
            process: None,
            readiness_secs: Some(ready_deadline.since(now).as_secs()),
        }
    }

    /// Seconds each boot has to become ready.
    pub fn readiness_secs(&self) -> u64 {
        self.readiness_secs
            .unwrap_or_else(|| self.vm.ready_deadline.since(self.vm.created_at).as_secs())
    }

    /// When its latest boot began: its creation, or the start of a kept VM
    /// that booted again (each boot's deadline is its start plus
    /// [`VmRecord::readiness_secs`]).
    pub fn boot_started_at(&self) -> Timestamp {
        let secs = i64::try_from(self.readiness_secs()).unwrap_or(i64::MAX / 1000);
        let start = self
            .vm
            .ready_deadline
            .as_millis()
            .saturating_sub(secs * 1000);
        Timestamp::from_millis(start.max(self.vm.created_at.as_millis()))
    }
}

pub use hearth_types::ProcessRef;

/// A state change to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange {
    pub to: VmState,
    pub at: Timestamp,
    /// For the event log, in plain words.
    pub message: String,
    /// Set when `to` is `failed`.
    pub failure: Option<Failure>,
    /// Set when `to` is `ready`.
    pub ready_at: Option<Timestamp>,
    /// Set when `to` is `stopped` or `failed`: when cleanup may happen.
    pub cleanup_after: Option<Timestamp>,
    /// Set when a stopped or failed VM starts again (`to` is `preparing`):
    /// its failure, readiness, cleanup time and planned restart are
    /// cleared, and it gets these.
    pub new_boot: Option<NewBoot>,
    /// Set when a persistent VM's run ended and its restart policy starts
    /// it again: when, and the restart's number (its new `restarts`).
    pub restart: Option<(Timestamp, u32)>,
}

/// What a new boot of a kept VM starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewBoot {
    pub ready_deadline: Timestamp,
    /// Its `restarts` from now on: kept by a restart of its policy, 0 for
    /// a start someone asked for.
    pub restarts: u32,
}

impl StateChange {
    pub fn to(to: VmState, at: Timestamp, message: impl Into<String>) -> Self {
        StateChange {
            to,
            at,
            message: message.into(),
            failure: None,
            ready_at: None,
            cleanup_after: None,
            new_boot: None,
            restart: None,
        }
    }
}

/// Which VMs to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmFilter {
    /// Only this tenant's; `None`: everyone's.
    pub tenant: Option<TenantId>,
    /// Only VMs in one of these states; empty: any.
    pub states: Vec<VmState>,
}

/// An API token, stored by the SHA-256 of its secret only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    /// Shown to people (`hth_3f9a1c2b`); not secret.
    pub id: String,
    pub secret_sha256: String,
    pub tenant: TenantId,
    pub admin: bool,
    pub created_at: Timestamp,
    /// From then on the token is refused; `None`: never.
    pub expires_at: Option<Timestamp>,
    /// The last request it authenticated, to within a minute or so (the
    /// server writes it at most that often); `None`: never used.
    pub last_used_at: Option<Timestamp>,
}

impl TokenRecord {
    /// Whether the token is past its expiry at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// A viewer link: lets whoever holds its secret watch and click one VM's
/// screen until it expires or is revoked. The secret is never stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewerLinkRecord {
    /// Shown to people (`hvl_3f9a1c2b`); not secret.
    pub id: String,
    pub secret_sha256: String,
    pub vm: VmId,
    pub tenant: TenantId,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl ViewerLinkRecord {
    /// Whether it still opens its VM's screen at `now`.
    pub fn is_valid(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// What a cleanup job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Archive the VM's logs, remove its files, mark it destroyed: the
    /// cleanup after a grace period, which never removes a persistent VM.
    Destroy,
    /// The same, asked for by `rm` (`DELETE /v1/vms/{id}`): the only job
    /// that removes a persistent VM and its disk.
    Remove,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Destroy => "destroy",
            JobKind::Remove => "remove",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [JobKind::Destroy, JobKind::Remove]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJob {
    pub kind: JobKind,
    pub vm: VmId,
    pub due: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub kind: JobKind,
    pub vm: VmId,
    pub due: Timestamp,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<Timestamp>,
}

/// Where a destroyed VM's logs went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveRecord {
    pub vm: VmId,
    pub tenant: TenantId,
    /// A directory holding console.log, hypervisor.log, ...
    pub path: PathBuf,
    pub bytes: u64,
    pub created_at: Timestamp,
}
