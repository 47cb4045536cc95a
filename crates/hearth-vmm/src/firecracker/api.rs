//! The Firecracker REST API requests hearth sends, as typed serde structs
//! whose field names are Firecracker's (`src/firecracker/swagger/firecracker.yaml`
//! in its source). Each request knows the path it is PUT to, so the client
//! has one generic `put`.

use std::ffi::OsString;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A request body and the API path it is PUT to.
pub trait Endpoint: Serialize {
    fn path(&self) -> String;

    /// The HTTP method: PUT but for the few PATCH endpoints.
    fn method(&self) -> &'static str {
        "PUT"
    }
}

/// How verbose Firecracker's own log is (swagger `Logger.level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
    Trace,
    Off,
}

impl LogLevel {
    fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "Error",
            LogLevel::Warning => "Warning",
            LogLevel::Info => "Info",
            LogLevel::Debug => "Debug",
            LogLevel::Trace => "Trace",
            LogLevel::Off => "Off",
        }
    }
}

/// Firecracker's own log (`PUT /logger`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    pub log_path: PathBuf,
    pub level: LogLevel,
    pub show_level: bool,
    pub show_log_origin: bool,
}

impl Logger {
    /// The same settings as command-line flags. Until a logger is set,
    /// Firecracker logs to stdout, which is the guest's console; given on
    /// the command line, its very first line already goes to the log file.
    pub fn cli_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--log-path".into(),
            self.log_path.clone().into(),
            "--level".into(),
            self.level.as_str().into(),
        ];
        if self.show_level {
            args.push("--show-level".into());
        }
        if self.show_log_origin {
            args.push("--show-log-origin".into());
        }
        args
    }
}

impl Endpoint for Logger {
    fn path(&self) -> String {
        "/logger".to_owned()
    }
}

/// Where Firecracker flushes its JSON metrics (`PUT /metrics`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub metrics_path: PathBuf,
}

impl Endpoint for Metrics {
    fn path(&self) -> String {
        "/metrics".to_owned()
    }
}

/// The kernel, initrd and command line (`PUT /boot-source`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    pub kernel_image_path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
    pub boot_args: String,
}

impl Endpoint for BootSource {
    fn path(&self) -> String {
        "/boot-source".to_owned()
    }
}

/// One virtio-blk disk (`PUT /drives/{drive_id}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: PathBuf,
    /// Always false for hearth: its initramfs mounts the root itself, so
    /// Firecracker must not add `root=` to the command line.
    pub is_root_device: bool,
    pub is_read_only: bool,
}

impl Endpoint for Drive {
    fn path(&self) -> String {
        format!("/drives/{}", self.drive_id)
    }
}

/// vCPUs and memory (`PUT /machine-config`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    pub vcpu_count: u8,
    pub mem_size_mib: u32,
}

impl Endpoint for MachineConfig {
    fn path(&self) -> String {
        "/machine-config".to_owned()
    }
}

/// The hybrid vsock device (`PUT /vsock`): the host side is the Unix
/// socket `uds_path`; guest-initiated connections to port P land on
/// `<uds_path>_P`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    /// At least 3 (0-2 are reserved).
    pub guest_cid: u32,
    pub uds_path: PathBuf,
}

impl Endpoint for Vsock {
    fn path(&self) -> String {
        "/vsock".to_owned()
    }
}

/// A virtio-net device on a TAP Firecracker opens by name in its own
/// network namespace (`PUT /network-interfaces/{iface_id}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    pub iface_id: String,
    /// `02:68:74:00:00:02`: the agent finds the NIC by it.
    pub guest_mac: String,
    pub host_dev_name: String,
}

impl Endpoint for NetworkInterface {
    fn path(&self) -> String {
        format!("/network-interfaces/{}", self.iface_id)
    }
}

/// What `PUT /actions` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    InstanceStart,
    SendCtrlAltDel,
    FlushMetrics,
}

/// `PUT /actions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceAction {
    pub action_type: ActionType,
}

impl Endpoint for InstanceAction {
    fn path(&self) -> String {
        "/actions".to_owned()
    }
}

/// What `PATCH /vm` sets the guest's vCPUs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunState {
    Paused,
    Resumed,
}

/// Pauses or resumes the guest (`PATCH /vm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRun {
    pub state: RunState,
}

impl Endpoint for VmRun {
    fn path(&self) -> String {
        "/vm".to_owned()
    }

    fn method(&self) -> &'static str {
        "PATCH"
    }
}

/// hearth takes only full snapshots (every page of guest memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    Full,
}

/// Writes a paused guest's device state and memory (`PUT /snapshot/create`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreate {
    pub snapshot_type: SnapshotType,
    pub snapshot_path: PathBuf,
    pub mem_file_path: PathBuf,
}

impl Endpoint for SnapshotCreate {
    fn path(&self) -> String {
        "/snapshot/create".to_owned()
    }
}

/// Where restored memory comes from: hearth maps the snapshot's file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemBackendType {
    File,
}

/// swagger `MemoryBackend`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemBackend {
    pub backend_type: MemBackendType,
    pub backend_path: PathBuf,
}

/// Loads a snapshot into a Firecracker that was configured with nothing
/// else (`PUT /snapshot/load`), and runs it when `resume_vm` says so.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLoad {
    pub snapshot_path: PathBuf,
    pub mem_backend: MemBackend,
    pub resume_vm: bool,
}

impl Endpoint for SnapshotLoad {
    fn path(&self) -> String {
        "/snapshot/load".to_owned()
    }
}

/// The body of every Firecracker error response (swagger `Error`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub fault_message: String,
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    /// The property names of each swagger definition, copied from
    /// Firecracker's `firecracker.yaml`.
    const SWAGGER_LOGGER: &[&str] = &[
        "level",
        "log_path",
        "show_level",
        "show_log_origin",
        "module",
    ];
    const SWAGGER_METRICS: &[&str] = &["metrics_path", "emit_id", "properties"];
    const SWAGGER_BOOT_SOURCE: &[&str] = &["boot_args", "initrd_path", "kernel_image_path"];
    const SWAGGER_DRIVE: &[&str] = &[
        "drive_id",
        "partuuid",
        "is_root_device",
        "cache_type",
        "is_read_only",
        "path_on_host",
        "rate_limiter",
        "io_engine",
        "socket",
    ];
    const SWAGGER_MACHINE: &[&str] = &[
        "cpu_template",
        "smt",
        "mem_size_mib",
        "track_dirty_pages",
        "vcpu_count",
        "huge_pages",
    ];
    const SWAGGER_VSOCK: &[&str] = &["guest_cid", "uds_path", "vsock_id"];

    /// Every key we send is a swagger property, and every required one is sent.
    fn assert_fields(body: &impl Serialize, allowed: &[&str], required: &[&str]) {
        let value = serde_json::to_value(body).unwrap();
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        for key in &keys {
            assert!(
                allowed.contains(&key.as_str()),
                "{key} is not in the swagger"
            );
        }
        for key in required {
            assert!(keys.iter().any(|k| k == key), "required {key} missing");
        }
    }

    #[test]
    fn logger_matches_swagger_and_its_flags() {
        let logger = Logger {
            log_path: "/run/vm/firecracker.log".into(),
            level: LogLevel::Info,
            show_level: true,
            show_log_origin: true,
        };
        assert_fields(&logger, SWAGGER_LOGGER, &[]);
        let expected = json!({"log_path": "/run/vm/firecracker.log", "level": "Info",
            "show_level": true, "show_log_origin": true});
        assert_eq!(serde_json::to_value(&logger).unwrap(), expected);
        let args = logger.cli_args();
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "--log-path",
                "/run/vm/firecracker.log",
                "--level",
                "Info",
                "--show-level",
                "--show-log-origin"
            ]
        );
    }

    #[test]
    fn boot_source_omits_a_missing_initrd() {
        let mut boot = BootSource {
            kernel_image_path: "/k".into(),
            initrd_path: None,
            boot_args: "console=ttyS0".into(),
        };
        assert_fields(&boot, SWAGGER_BOOT_SOURCE, &["kernel_image_path"]);
        let value = serde_json::to_value(&boot).unwrap();
        assert_eq!(
            value,
            json!({"kernel_image_path": "/k", "boot_args": "console=ttyS0"})
        );
        boot.initrd_path = Some("/i".into());
        assert_eq!(serde_json::to_value(&boot).unwrap()["initrd_path"], "/i");
    }

    #[test]
    fn drive_machine_metrics_and_vsock_match_swagger() {
        let drive = Drive {
            drive_id: "disk0".into(),
            path_on_host: "/d.ext4".into(),
            is_root_device: false,
            is_read_only: true,
        };
        assert_fields(&drive, SWAGGER_DRIVE, &["drive_id", "is_root_device"]);
        assert_eq!(drive.path(), "/drives/disk0");
        let machine = MachineConfig {
            vcpu_count: 2,
            mem_size_mib: 256,
        };
        assert_fields(&machine, SWAGGER_MACHINE, &["mem_size_mib", "vcpu_count"]);
        let metrics = Metrics {
            metrics_path: "/m".into(),
        };
        assert_fields(&metrics, SWAGGER_METRICS, &["metrics_path"]);
        let vsock = Vsock {
            guest_cid: 3,
            uds_path: "/v.sock".into(),
        };
        assert_fields(&vsock, SWAGGER_VSOCK, &["guest_cid", "uds_path"]);
    }

    const SWAGGER_VM: &[&str] = &["state"];
    const SWAGGER_SNAPSHOT_CREATE: &[&str] = &["mem_file_path", "snapshot_path", "snapshot_type"];
    const SWAGGER_SNAPSHOT_LOAD: &[&str] = &[
        "enable_diff_snapshots",
        "track_dirty_pages",
        "mem_file_path",
        "mem_backend",
        "snapshot_path",
        "resume_vm",
        "network_overrides",
        "vsock_override",
        "clock_realtime",
        "huge_pages",
    ];
    const SWAGGER_MEMORY_BACKEND: &[&str] = &["backend_type", "backend_path"];

    #[test]
    fn snapshot_requests_match_swagger() {
        let pause = VmRun {
            state: RunState::Paused,
        };
        assert_fields(&pause, SWAGGER_VM, &["state"]);
        assert_eq!((pause.method(), pause.path().as_str()), ("PATCH", "/vm"));
        assert_eq!(
            serde_json::to_value(pause).unwrap(),
            json!({"state": "Paused"})
        );
        let create = SnapshotCreate {
            snapshot_type: SnapshotType::Full,
            snapshot_path: "/s/vmstate".into(),
            mem_file_path: "/s/memory".into(),
        };
        assert_fields(
            &create,
            SWAGGER_SNAPSHOT_CREATE,
            &["mem_file_path", "snapshot_path"],
        );
        assert_eq!(
            serde_json::to_value(&create).unwrap()["snapshot_type"],
            "Full"
        );
        let load = SnapshotLoad {
            snapshot_path: "/s/vmstate".into(),
            mem_backend: MemBackend {
                backend_type: MemBackendType::File,
                backend_path: "/s/memory".into(),
            },
            resume_vm: true,
        };
        assert_fields(&load, SWAGGER_SNAPSHOT_LOAD, &["snapshot_path"]);
        assert_fields(
            &load.mem_backend,
            SWAGGER_MEMORY_BACKEND,
            &["backend_type", "backend_path"],
        );
        assert_eq!(
            (load.method(), load.path().as_str()),
            ("PUT", "/snapshot/load")
        );
    }

    #[test]
    fn actions_use_swagger_enum_names() {
        for (action, name) in [
            (ActionType::InstanceStart, "InstanceStart"),
            (ActionType::SendCtrlAltDel, "SendCtrlAltDel"),
            (ActionType::FlushMetrics, "FlushMetrics"),
        ] {
            let body = InstanceAction {
                action_type: action,
            };
            let value: Value = serde_json::to_value(body).unwrap();
            assert_eq!(value, json!({ "action_type": name }));
        }
    }

    #[test]
    fn requests_refuse_unknown_fields() {
        let err = serde_json::from_str::<MachineConfig>(
            r#"{"vcpu_count":1,"mem_size_mib":64,"smt":true}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("smt"), "{err}");
        let fault: Fault = serde_json::from_str(r#"{"fault_message":"bad"}"#).unwrap();
        assert_eq!(fault.fault_message, "bad");
    }
}
