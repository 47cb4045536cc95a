//! Request and response bodies of the HTTP API (`/v1`). One set of structs
//! serves the server, the CLI client and the committed OpenAPI document.

use serde::{Deserialize, Serialize};

use crate::lifecycle::{Failure, VmState};
use crate::time::Timestamp;
use crate::{BackendKind, ProviderId, TenantId, UserName, VmId};

/// `POST /v1/vms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateVm {
    /// Image name, as built with `hearth image build` (a built-in recipe's
    /// or a recipe file's `name`).
    #[serde(default = "default_image")]
    pub image: String,
    #[serde(default = "default_backend")]
    pub backend: BackendKind,
    /// 1 to 32 (`VmDescription::MAX_VCPUS`). Default: the image recipe's
    /// `vm.vcpus`, else 1.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 32))]
    pub vcpus: Option<u8>,
    /// Guest memory in MiB, 32 to 262144 (`VmDescription::MIN_MEMORY_MIB`
    /// to `MAX_MEMORY_MIB`). Default: the image recipe's `vm.memory_mib`,
    /// else 256.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 32, maximum = 262144))]
    pub memory_mib: Option<u32>,
    /// What the guest runs; empty: it stays up until stopped.
    #[serde(default)]
    pub command: Vec<String>,
    /// Seconds the guest has to become ready, 1 to 3600; default: the
    /// server's (120).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 3600))]
    pub readiness_timeout_secs: Option<u64>,
    /// What the guest agent applies at boot: hostname, environment, files,
    /// services. With the agent, the VM is ready once every service's
    /// readiness check passed.
    #[serde(default)]
    pub config: crate::guest::GuestConfig,
    /// A NIC for the guest (docs/networking.md); absent: the server's
    /// default (`hearth serve --default-network`, none unless set), and a
    /// guest without one reaches out only through its agent; `none`: no
    /// NIC whatever the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkMode>,
    /// What the NIC may reach beyond what every VM is refused; needs a
    /// NIC (`network`, or the server's default). The VM's tenant's policy
    /// (`PUT /v1/tenants/{tenant}/network-policy`) is merged into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicy>,
    /// Keep the VM across boots: it gets its own writable disk
    /// (`disk_mib`), kept across stop and start (`POST
    /// /v1/vms/{id}/stop`, `/start`), host reboots and server restarts;
    /// only `DELETE /v1/vms/{id}` removes it. The grace-period cleanup
    /// never touches it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub persistent: bool,
    /// The persistent disk's size in MiB, 64 to 262144 (default 1024; the
    /// file is sparse). Only with `persistent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 64, maximum = 262144))]
    pub disk_mib: Option<u32>,
    /// What the controller does when the VM's run ends without a stop
    /// being asked for (default `never`). Only with `persistent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<crate::RestartPolicy>,
    /// Stop the VM when nothing used it (no exec, file copy, port stream or
    /// viewer) for this many seconds, 5 to 2592000; absent: never. Only
    /// with `persistent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 5, maximum = 2592000))]
    pub idle_stop_secs: Option<u64>,
    /// Start from this snapshot instead of booting (docs/snapshots.md):
    /// the image, size and kernel are the snapshot's, and a request that
    /// names others is refused with what differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<crate::SnapshotName>,
}

/// A VM NIC's egress policy, on top of the networks every VM is refused
/// (private, loopback, link-local, carrier-grade NAT, multicast, the
/// host's own addresses). Refused connections are counted per VM
/// (`GET /v1/vms/{id}/network`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    /// IPv4 networks (`203.0.113.0/24`, or an address) the guest may
    /// reach; empty: any that is not refused. At most 256.
    #[serde(default)]
    pub allow: Vec<String>,
    /// IPv4 networks the guest may not reach, checked first. At most 256.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Each direction's rate limit in kbit/s, 64 to 10000000; absent: none.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 64, maximum = 10000000))]
    pub bandwidth_kbit: Option<u32>,
    /// Names the guest's web traffic (TCP 80 and 443, sent through the
    /// host's egress proxy, which reads the Host header or the TLS server
    /// name) may reach: exact names or `*.example.com` (every name below
    /// it). Given: the resolver answers only these names, and nothing
    /// leaves directly but for the `allow` networks. At most 256.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_domains: Vec<String>,
}

/// A VM's NIC as it is now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmNetworkInfo {
    pub mode: NetworkMode,
    /// The guest's address with its prefix length (the same in every VM).
    pub address: String,
    pub gateway: String,
    pub mac: String,
    /// The guest's packets refused for their destination since the VM's
    /// network was made (policy denials and the networks always refused).
    pub refused_packets: u64,
    /// The resolver hearth answers the guest's DNS with (the gateway).
    pub resolver: String,
    /// The guest's DNS queries refused (a name its domain rules leave
    /// out, or whose every address its policy refuses) since its network
    /// was first served, across controller restarts.
    pub refused_queries: u64,
    /// The guest's web connections (or requests on a kept-alive one) the
    /// egress proxy refused (domain rules, denied or private addresses),
    /// over the same time.
    pub refused_connections: u64,
}

/// The kind of network a VM's NIC is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Its own namespace and address, source NAT to the outside; private,
    /// loopback, link-local and the host's own addresses refused.
    Nat,
    /// No NIC, whatever the server's default network.
    None,
}

impl NetworkMode {
    /// The NIC a request gets: its own choice, else the server's default;
    /// `None` when it has none.
    pub fn resolve(
        asked: Option<NetworkMode>,
        default: Option<NetworkMode>,
    ) -> Option<NetworkMode> {
        match asked.or(default) {
            Some(NetworkMode::None) | None => None,
            nic => nic,
        }
    }
}

/// `GET/PUT /v1/tenants/{tenant}/network-policy`: what every NIC of a
/// tenant's VMs may reach, merged into each VM's own policy at its create
/// (docs/networking.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TenantNetworkPolicy {
    pub tenant: TenantId,
    pub policy: NetworkPolicy,
    pub updated_at: Timestamp,
}

fn default_image() -> String {
    "minimal".to_owned()
}
fn default_backend() -> BackendKind {
    BackendKind::Qemu
}
/// A VM's vCPUs when neither the request nor the image's recipe says.
pub const DEFAULT_VCPUS: u8 = 1;
/// A VM's memory (MiB) when neither the request nor the image's recipe says.
pub const DEFAULT_MEMORY_MIB: u32 = 256;

impl CreateVm {
    /// The longest `readiness_timeout_secs` a create may ask for.
    pub const MAX_READINESS_TIMEOUT_SECS: u64 = 3600;

    /// What is wrong with the request's persistence fields, in words for
    /// the caller.
    pub fn check_persistence(&self) -> Result<(), String> {
        crate::persistence::check(
            self.persistent,
            self.disk_mib,
            self.restart,
            self.idle_stop_secs,
        )
    }
}

impl Default for CreateVm {
    fn default() -> Self {
        CreateVm {
            image: default_image(),
            backend: default_backend(),
            vcpus: None,
            memory_mib: None,
            command: Vec::new(),
            readiness_timeout_secs: None,
            config: Default::default(),
            network: None,
            network_policy: None,
            persistent: false,
            disk_mib: None,
            restart: None,
            idle_stop_secs: None,
            from_snapshot: None,
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
    /// When a stopped or failed VM will be cleaned up (unless held); never
    /// for a persistent VM.
    pub cleanup_after: Option<Timestamp>,
    /// Kept across boots with its own disk (see `CreateVm::persistent`).
    #[serde(default)]
    pub persistent: bool,
    /// The persistent disk's size, MiB; set exactly when `persistent`.
    #[serde(default)]
    pub disk_mib: Option<u32>,
    #[serde(default)]
    pub restart: crate::RestartPolicy,
    #[serde(default)]
    pub idle_stop_secs: Option<u64>,
    /// Restarts by its restart policy since its last healthy run (what
    /// the backoff grows with).
    #[serde(default)]
    pub restarts: u32,
    /// When the controller starts it again by its restart policy; `None`:
    /// no restart is planned.
    #[serde(default)]
    pub restart_at: Option<Timestamp>,
    /// Its NIC's policy (`{}` when it has a NIC with none); absent: no NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicy>,
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

/// One event of `GET /v1/vms/{id}/console?follow=true`, a
/// `text/event-stream`, as a Server-Sent Events reader hands it over (the
/// shape OpenAPI 3.2 gives such items): its `event` type and its `data`.
/// Comments (`:` lines) are keep-alives and carry no event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsoleStreamEvent {
    pub event: ConsoleStreamEventKind,
    /// `message`: one console line as a JSON string (`"[    0.000000] Linux
    /// version ..."`); `end`: `{"reason": "..."}`, why the stream ended;
    /// `lagged`: how much this reader missed, in words.
    pub data: String,
}

/// The type of a [`ConsoleStreamEvent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConsoleStreamEventKind {
    /// A console line (the stream's events carry no `event:` field, which
    /// Server-Sent Events reads as `message`).
    Message,
    /// The last event: the VM's console closed or the server shuts down.
    End,
    /// The reader was too slow and missed some of the console.
    Lagged,
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

/// `POST /v1/vms/{id}/exec`: run a program in a ready VM through its guest
/// agent. `argv` is run directly, never through a shell (send
/// `["sh", "-c", "..."]` for one); stdin is empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The program and its arguments; not empty, the program not an empty
    /// string, no NUL in any.
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub argv: Vec<String>,
    /// Seconds the program may run before it is killed (1..=3600; default
    /// 60).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 3600))]
    pub timeout_secs: Option<u64>,
    /// Added to the agent's environment (and the VM's configured one) for
    /// this program only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<crate::guest::EnvVar>,
}

impl ExecRequest {
    pub const DEFAULT_TIMEOUT_SECS: u64 = 60;
    pub const MAX_TIMEOUT_SECS: u64 = 3600;

    /// The timeout in seconds, the default when none was given.
    pub fn timeout(&self) -> u64 {
        self.timeout_secs.unwrap_or(Self::DEFAULT_TIMEOUT_SECS)
    }

    /// What is wrong with the request, in words for the caller.
    pub fn check(&self) -> Result<(), String> {
        if self.argv.is_empty() {
            return Err("argv is empty: name the program to run, e.g. [\"uname\", \"-a\"]".into());
        }
        if self.argv[0].is_empty() {
            return Err("argv[0] is empty: name the program to run".into());
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return Err("an argument contains a NUL byte, which no program can receive".into());
        }
        for v in &self.env {
            v.check()?;
        }
        match self.timeout_secs {
            Some(t) if !(1..=Self::MAX_TIMEOUT_SECS).contains(&t) => Err(format!(
                "timeout_secs {t} is out of range: give 1 to {} seconds",
                Self::MAX_TIMEOUT_SECS
            )),
            _ => Ok(()),
        }
    }
}

/// What an exec did. Exactly one of `exit_code` and `signal` is set, unless
/// the program could not be started: then both are null and `stderr` says
/// why (`hearth vm exec` then exits 127, like a shell).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExecResult {
    /// The program's exit status, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed it (9 after a timeout).
    pub signal: Option<i32>,
    /// It ran past its timeout and was killed with its process group.
    pub timed_out: bool,
    /// Its standard output, as UTF-8 (invalid bytes replaced), at most 1 MiB.
    pub stdout: String,
    /// Its standard error, likewise.
    pub stderr: String,
    /// Output beyond 1 MiB per stream was dropped.
    pub truncated: bool,
}

/// `GET /v1/vms/{id}/health`: what the VM's guest agent last said about
/// itself and its services. Readable after the VM is destroyed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VmHealth {
    pub vm: VmId,
    pub agent: AgentHealth,
    /// The agent reported every readiness check passed.
    pub ready: bool,
    /// Why the agent could not apply the VM's configuration, if it could not.
    pub config_error: Option<String>,
    /// In the order the agent reported them.
    pub services: Vec<ServiceHealth>,
}

/// The agent's connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentHealth {
    /// Connected now (always false once the VM is gone).
    pub connected: bool,
    pub agent_version: Option<String>,
    /// The latest hello.
    pub connected_at: Option<Timestamp>,
    pub last_heartbeat: Option<Timestamp>,
}

/// One supervised service, as the host last heard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServiceHealth {
    pub name: String,
    pub state: crate::guest::ServiceState,
    pub restarts: u32,
    pub last_exit: Option<ServiceExit>,
    /// Its readiness check passed (or it has none and started).
    pub ready: bool,
    /// The agent declared a crash loop (its crash-loop rule was met).
    pub crash_loop: bool,
    /// Why it could not be started, the last time that happened.
    pub spawn_error: Option<String>,
}

/// How and when a service's run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServiceExit {
    pub status: crate::guest::ExitStatus,
    pub at: Timestamp,
}

/// `GET /v1/vms/{id}/services/{name}/logs?tail=N`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServiceLogs {
    pub vm: VmId,
    pub service: String,
    /// Oldest first.
    pub lines: Vec<ServiceLogLine>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServiceLogLine {
    /// Host time of the line.
    pub at: Timestamp,
    pub stream: crate::guest::Stream,
    pub line: String,
}

/// `GET /v1/vms/{id}/boot-report`: the latest the agent sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VmBootReport {
    pub vm: VmId,
    pub at: Timestamp,
    pub report: crate::guest::BootReport,
}

/// One line of `POST /v1/vms/{id}/exec?stream=true` (newline-delimited
/// JSON): output as it comes, then one `exit` or `error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExecEvent {
    /// `data`: standard base64 of the raw bytes.
    Output {
        stream: crate::guest::Stream,
        data: String,
    },
    Exit {
        exit_code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
    },
    /// The program could not be started, or the exec broke off; `code` as
    /// in [`ApiError`].
    Error { code: String, message: String },
}

/// What a client sends on the exec WebSocket (`GET
/// /v1/vms/{id}/exec/attach`), one JSON text frame each. The first is
/// `start`; then any number of the others, in any order, until the
/// server's `exit` or `error` (an `ExecEvent`, like every frame the server
/// sends) and its close frame. A client that goes away before the end
/// hangs the program up (SIGHUP to its process group).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExecClientMessage {
    /// Starts the program. With `tty` it runs on a pseudo-terminal of
    /// `size` (default 24x80; stdout and stderr merged, input echoed by
    /// the terminal); without, its stdin is a pipe fed by `stdin`.
    Start {
        request: ExecRequest,
        #[serde(default)]
        tty: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<crate::guest::TermSize>,
    },
    /// Bytes for the program's stdin (the terminal's input with `tty`);
    /// `data` is standard base64.
    Stdin { data: String },
    /// No more input: the pipe is closed (with `tty`, the terminal's
    /// end-of-file character is typed).
    StdinEnd,
    /// The terminal's new size (with `tty`; the program gets SIGWINCH).
    Resize { size: crate::guest::TermSize },
    /// A signal for the program's whole process group.
    Signal { signal: crate::guest::ExecSignal },
}

/// `PUT /v1/vms/{id}/files?path=`: the file as written in the guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FileWritten {
    pub path: String,
    pub size: u64,
    /// Hex SHA-256 of the content, as the agent computed it.
    pub sha256: String,
}

/// An API token as `GET /v1/tokens` lists it: never its secret, nor the
/// secret's hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenInfo {
    /// `hth_` and 8 hex digits: the token's first part, not secret.
    pub id: String,
    pub tenant: TenantId,
    /// Sees and manages every tenant's VMs, and the tokens.
    pub admin: bool,
    pub created_at: Timestamp,
    /// From then on the token is refused; null: never.
    pub expires_at: Option<Timestamp>,
    /// The last request it authenticated, to within a minute; null: never used.
    pub last_used_at: Option<Timestamp>,
}

/// The body of `POST /v1/vms/{id}/viewer-links`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateViewerLink {
    /// How long the link opens the VM's screen, in seconds: 1 to 86400
    /// (a day); default 900 (15 minutes).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 86400))]
    pub ttl_secs: Option<u64>,
}

impl CreateViewerLink {
    pub const DEFAULT_TTL_SECS: u64 = 900;
    pub const MAX_TTL_SECS: u64 = 86_400;

    /// The link's lifetime, or what is wrong with the one asked for.
    pub fn ttl(&self) -> Result<std::time::Duration, String> {
        match self.ttl_secs.unwrap_or(Self::DEFAULT_TTL_SECS) {
            secs @ 1..=Self::MAX_TTL_SECS => Ok(std::time::Duration::from_secs(secs)),
            secs => Err(format!(
                "ttl_secs {secs} is out of range: give 1 to {} seconds (a day), or leave it out for {}",
                Self::MAX_TTL_SECS,
                Self::DEFAULT_TTL_SECS
            )),
        }
    }
}

/// A viewer link: an unguessable URL that opens one VM's screen (viewing
/// and input) for whoever holds it, until it expires or is revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ViewerLink {
    /// `hvl_` and 8 hex digits: names the link for revoking; not secret.
    pub id: String,
    pub vm: VmId,
    /// The URL to open, with its secret: only in the answer that made the
    /// link (it is stored hashed and cannot be shown again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// Null while it is not revoked.
    pub revoked_at: Option<Timestamp>,
}

/// One file of a sealed credential as `GET /v1/users/{user}/credentials`
/// lists it: where it goes in the user's home and how big it is. Paths
/// and modes are not secret; the contents are, and are never listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CredentialFileInfo {
    pub path: String,
    /// Unix permission bits, e.g. 384 (0600).
    pub mode: u32,
    pub size: u64,
}

/// A user's credential for one provider (its current version), as the
/// vault keeps it sealed: metadata only, never a byte of the files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CredentialInfo {
    pub user: UserName,
    pub provider: ProviderId,
    /// Counts up from 1 with every capture or refresh.
    pub version: u64,
    pub created_at: Timestamp,
    /// The files' bytes in all.
    pub size: u64,
    pub files: Vec<CredentialFileInfo>,
    /// The key-encryption key version its data key is wrapped under.
    pub kek_version: u32,
}

/// What a viewer page may know of its VM (`GET /v1/vms/{id}/viewer`,
/// with the link's key): whether there is a screen to show, and why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ViewerState {
    pub vm: VmId,
    pub state: VmState,
    /// The VM is ready: its screen can be opened.
    pub ready: bool,
    /// Why there is no screen, in words for the person watching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub expires_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::{EnvVar, ExecSignal, TermSize};

    #[test]
    fn a_viewer_links_lifetime_is_a_second_to_a_day() {
        let ttl = |s: Option<u64>| CreateViewerLink { ttl_secs: s }.ttl();
        assert_eq!(ttl(None), Ok(std::time::Duration::from_secs(900)));
        assert_eq!(
            ttl(Some(86_400)),
            Ok(std::time::Duration::from_secs(86_400))
        );
        for bad in [0, 86_401] {
            let err = ttl(Some(bad)).unwrap_err();
            assert!(err.contains("1 to 86400"), "{err}");
        }
    }

    #[test]
    fn exec_client_messages_have_their_documented_wire_form() {
        let start: ExecClientMessage = serde_json::from_value(serde_json::json!({
            "type": "start",
            "request": {"argv": ["sh"], "env": [{"name": "TERM", "value": "xterm"}]},
            "tty": true,
            "size": {"rows": 40, "cols": 100}
        }))
        .unwrap();
        let want = ExecClientMessage::Start {
            request: ExecRequest {
                argv: vec!["sh".into()],
                timeout_secs: None,
                env: vec![EnvVar {
                    name: "TERM".into(),
                    value: "xterm".into(),
                }],
            },
            tty: true,
            size: Some(TermSize {
                rows: 40,
                cols: 100,
            }),
        };
        assert_eq!(start, want);
        let signal = serde_json::to_value(ExecClientMessage::Signal {
            signal: ExecSignal::Int,
        })
        .unwrap();
        assert_eq!(
            signal,
            serde_json::json!({"type": "signal", "signal": "INT"})
        );
        let end = serde_json::to_value(ExecClientMessage::StdinEnd).unwrap();
        assert_eq!(end, serde_json::json!({"type": "stdin_end"}));
    }

    #[test]
    fn an_exec_request_names_a_bad_variable() {
        let req = ExecRequest {
            argv: vec!["env".into()],
            timeout_secs: None,
            env: vec![EnvVar {
                name: "1X".into(),
                value: "v".into(),
            }],
        };
        let err = req.check().unwrap_err();
        assert!(err.contains("\"1X\""), "{err}");
    }

    #[test]
    fn unknown_signals_and_empty_terminals_are_refused() {
        let bad = serde_json::from_value::<ExecClientMessage>(
            serde_json::json!({"type": "signal", "signal": "STOP"}),
        );
        assert!(bad.is_err());
        assert!(TermSize { rows: 0, cols: 80 }.check().is_err());
        assert_eq!(ExecSignal::Term.number(), 15);
    }
}
