//! What the host tells a guest's agent at boot (hostname, environment,
//! files, services) and what the agent reports back (service states, the
//! boot report). Shared by the API, the store, the controller and the
//! in-guest agent, so one set of words crosses every boundary.

use serde::{Deserialize, Serialize};

mod capture;
mod network_word;

pub use capture::{CaptureFile, CaptureSpec};
pub use network_word::NETWORK_PARAM;

/// Per-VM configuration the host sends the agent after the handshake. The
/// image may declare services of its own (`/etc/hearth/agent.json`, the
/// same shape); a VM's service with the same name replaces the image's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    /// The guest's hostname: 1 to 63 letters, digits and `-`, not starting
    /// with `-`; default: the image's.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
    )]
    pub hostname: Option<String>,
    /// Environment for every service and exec (session id, proxy, ...).
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Files written before any service starts.
    #[serde(default)]
    pub files: Vec<GuestFile>,
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// The guest's NIC as the host made it (`hearth-net`), applied before
    /// any service starts. Set by the controller, never by the caller, so it
    /// is not part of the API's schema; absent when the VM has no NIC (and
    /// then not serialized, so agents that predate it still parse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub network: Option<GuestNetwork>,
}

/// What the agent configures on the guest's NIC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestNetwork {
    /// The NIC is the interface with this MAC (`02:68:74:00:00:02`), so no
    /// guess about interface names is needed.
    pub mac: String,
    pub address: std::net::Ipv4Addr,
    /// 1 to 30.
    pub prefix_len: u8,
    /// On the interface's network; the default route goes through it.
    pub gateway: std::net::Ipv4Addr,
    /// Written to `/etc/resolv.conf` as `nameserver` lines; none: left alone.
    #[serde(default)]
    pub dns: Vec<std::net::Ipv4Addr>,
}

impl GuestNetwork {
    /// What is wrong with it, naming the field.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=30).contains(&self.prefix_len) {
            return Err(format!(
                "network prefix_len {} is not valid: give 1 to 30",
                self.prefix_len
            ));
        }
        let mask = u32::MAX << (32 - self.prefix_len);
        let (addr, gw) = (u32::from(self.address), u32::from(self.gateway));
        if addr & mask != gw & mask || addr == gw {
            return Err(format!(
                "network gateway {} is not another address on {}/{}",
                self.gateway, self.address, self.prefix_len
            ));
        }
        let mac_ok = self.mac.len() == 17
            && self.mac.split(':').count() == 6
            && self
                .mac
                .split(':')
                .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
        if !mac_ok {
            return Err(format!(
                "network mac {:?} is not valid: give six hex pairs joined by ':'",
                self.mac
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    /// Letters, digits and `_`, not starting with a digit.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// No NUL.
    pub value: String,
}

impl EnvVar {
    /// What is wrong with the name or value, naming the fix.
    pub fn check(&self) -> Result<(), String> {
        let ok = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !self.name.as_bytes()[0].is_ascii_digit();
        if !ok {
            return Err(format!(
                "environment variable name {:?} is not valid: use letters, digits and '_', not starting with a digit",
                self.name
            ));
        }
        if self.value.contains('\0') {
            return Err(format!("the value of {} contains a NUL byte", self.name));
        }
        Ok(())
    }
}

/// A file the agent writes at boot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GuestFile {
    /// Absolute path in the guest, without a `..` component; parent
    /// directories are created.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^(/([^/.][^/]*|\\.[^/.][^/]*|\\.\\.[^/]+|\\.)?)+$")
    )]
    pub path: String,
    /// The content, UTF-8.
    pub content: String,
    /// Permission bits, e.g. 0o644 (420), at most 0o7777 (4095); default
    /// 0o644.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 4095))]
    pub mode: Option<u32>,
    /// The user (a name the image has, or a numeric uid) who owns the file
    /// and the directories made for it, e.g. a tool's settings in a user's
    /// home; default: root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl GuestFile {
    /// The highest `mode`: permission bits with setuid, setgid and sticky.
    pub const MAX_MODE: u32 = 0o7777;
}

/// A supervised service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Letters, digits, `-`, `_` and `.`; at most 64 characters; not `.`
    /// or `..`.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^([A-Za-z0-9_-][A-Za-z0-9._-]{0,63}|\\.[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}|\\.\\.[A-Za-z0-9._-]{1,62})$"
        )
    )]
    pub name: String,
    /// Program and arguments, run directly (no shell); not empty.
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// User name or numeric uid to run as; default root.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// What must pass before the VM counts as ready; none: started is enough.
    #[serde(default)]
    pub readiness: Option<Readiness>,
    /// When restarts count as a crash loop; default 5 restarts in 30 s.
    #[serde(default)]
    pub crash_loop: CrashLoopRule,
    /// Services whose readiness must pass before this one starts (a VNC
    /// server after its display, a browser after both): services of the
    /// same VM, image or host configuration alike.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Restart whenever it ends.
    #[default]
    Always,
    /// Restart when it exits non-zero or is killed.
    OnFailure,
    /// Run once.
    Never,
}

/// A readiness check, polled until it passes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Readiness {
    /// A TCP connect to 127.0.0.1:`port` succeeds.
    Tcp { port: u16 },
    /// `GET http://127.0.0.1:port/path` answers 2xx or 3xx.
    Http {
        port: u16,
        /// Starts with `/`.
        #[cfg_attr(feature = "openapi", schema(pattern = "^/"))]
        path: String,
    },
    /// The command exits 0.
    Command {
        /// Not empty.
        #[cfg_attr(feature = "openapi", schema(min_items = 1))]
        argv: Vec<String>,
    },
}

impl Readiness {
    /// The check in a few words, for findings and health.
    pub fn describe(&self) -> String {
        match self {
            Readiness::Tcp { port } => format!("TCP port {port}"),
            Readiness::Http { port, path } => format!("HTTP GET :{port}{path}"),
            Readiness::Command { argv } => format!("command {}", argv.join(" ")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CrashLoopRule {
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub restarts: u32,
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub window_secs: u32,
}

impl Default for CrashLoopRule {
    fn default() -> Self {
        CrashLoopRule {
            restarts: 5,
            window_secs: 30,
        }
    }
}

/// How a process ended: exactly one of the two is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exited with status {c}"),
            (None, Some(s)) => write!(f, "killed by signal {s}"),
            (None, None) => f.write_str("ended"),
        }
    }
}

/// What the agent found at its start (and refreshes once the VM is ready).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BootReport {
    /// Kernel uptime when the agent started, ms.
    pub agent_started_ms: u64,
    /// `uname -r`.
    pub kernel: String,
    /// systemd's failed units, each with its last lines of output; empty
    /// without systemd.
    pub failed_units: Vec<FailedUnit>,
    /// systemd jobs still waiting (`systemctl list-jobs`).
    pub waiting_jobs: Vec<String>,
    /// Listening TCP sockets, `addr:port`.
    pub listening: Vec<String>,
    pub interfaces: Vec<Interface>,
    pub memory_total_kib: u64,
    pub memory_available_kib: u64,
    pub disks: Vec<DiskUsage>,
    /// How the guest's clock was set from the host's; `None` until the
    /// host's time arrived (or with an agent that does not keep it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockReport>,
}

/// The guest clock's corrections from the host's time. An offset is the
/// host's time minus the guest's when the correction was made, in ms: the
/// first says how wrong the guest started (a guest without a clock device
/// starts in 1970, or where the initramfs set it from the kernel command
/// line), the last how far it drifted since.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClockReport {
    /// The host's time was taken this many times.
    pub syncs: u64,
    pub first_offset_ms: i64,
    pub last_offset_ms: i64,
    /// Kernel uptime at the last sync, ms.
    pub last_sync_uptime_ms: u64,
    /// Why the clock could not be set, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FailedUnit {
    pub unit: String,
    pub last_lines: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Interface {
    pub name: String,
    pub up: bool,
    /// `addr/prefix`.
    pub addresses: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiskUsage {
    pub mount: String,
    pub total_kib: u64,
    pub available_kib: u64,
}

/// Where a service stands, as the host last heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Started; its readiness check has not passed yet.
    Starting,
    /// Running, and its readiness check (if any) passed.
    Running,
    /// Ended; waiting out the backoff before the next start.
    Backoff,
    /// Ended for good (policy `never`/`on_failure`, or it could not start).
    Stopped,
    /// Restarted too often: see the crash-loop rule.
    CrashLooping,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::Backoff => "backoff",
            ServiceState::Stopped => "stopped",
            ServiceState::CrashLooping => "crash_looping",
        }
    }
}

/// A terminal's size in character cells, for a command on a TTY.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TermSize {
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub rows: u16,
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub cols: u16,
}

impl TermSize {
    /// What is wrong with the size, in words for the caller.
    pub fn check(&self) -> Result<(), String> {
        if self.rows == 0 || self.cols == 0 {
            return Err(format!(
                "terminal size {}x{} has a zero side: give rows and cols of at least 1",
                self.rows, self.cols
            ));
        }
        Ok(())
    }
}

/// The signals a client may send to a running exec (to its whole process
/// group), by their usual names without `SIG`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ExecSignal {
    #[serde(rename = "HUP")]
    Hup,
    #[serde(rename = "INT")]
    Int,
    #[serde(rename = "QUIT")]
    Quit,
    #[serde(rename = "KILL")]
    Kill,
    #[serde(rename = "TERM")]
    Term,
    #[serde(rename = "USR1")]
    Usr1,
    #[serde(rename = "USR2")]
    Usr2,
}

impl ExecSignal {
    /// The Linux signal number (x86-64 and every other Linux architecture
    /// agree on these).
    pub fn number(self) -> i32 {
        match self {
            ExecSignal::Hup => 1,
            ExecSignal::Int => 2,
            ExecSignal::Quit => 3,
            ExecSignal::Kill => 9,
            ExecSignal::Usr1 => 10,
            ExecSignal::Usr2 => 12,
            ExecSignal::Term => 15,
        }
    }
}

/// Which output stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Longest service name.
pub const MAX_SERVICE_NAME: usize = 64;

impl GuestConfig {
    /// Checks what the agent could not apply, naming the field and the fix.
    pub fn check(&self) -> Result<(), String> {
        if let Some(h) = &self.hostname {
            let ok = !h.is_empty()
                && h.len() <= 63
                && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !h.starts_with('-');
            if !ok {
                return Err(format!(
                    "hostname {h:?} is not valid: use 1-63 letters, digits and '-', not starting with '-'"
                ));
            }
        }
        for v in &self.env {
            v.check()?;
        }
        for f in &self.files {
            if !f.path.starts_with('/') || f.path.split('/').any(|c| c == "..") {
                return Err(format!(
                    "file path {:?} is not valid: give an absolute path without '..'",
                    f.path
                ));
            }
            if f.mode.is_some_and(|m| m > GuestFile::MAX_MODE) {
                return Err(format!("the mode of {} is over 0o7777", f.path));
            }
            let owner_ok = |o: &str| {
                (1..=32).contains(&o.len())
                    && o.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            };
            if let Some(owner) = f.owner.as_deref().filter(|o| !owner_ok(o)) {
                return Err(format!(
                    "the owner {owner:?} of {} is not valid: give a user name of 1 to 32 letters, digits, '_', '-' and '.', or a numeric uid",
                    f.path
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.services {
            s.check()?;
            if !names.insert(s.name.as_str()) {
                return Err(format!("service {:?} is declared twice", s.name));
            }
        }
        if let Some(network) = &self.network {
            network.check()?;
        }
        check_order(&self.services)
    }
}

/// No service waits, through `after`, for itself.
pub fn check_order(services: &[ServiceSpec]) -> Result<(), String> {
    let by_name: std::collections::HashMap<&str, &ServiceSpec> =
        services.iter().map(|s| (s.name.as_str(), s)).collect();
    for start in services {
        let mut path = vec![start.name.as_str()];
        if let Some(cycle) = find_cycle(&by_name, start, &mut path) {
            return Err(format!(
                "services wait for each other in a circle ({}): drop one of these `after` entries",
                cycle.join(" -> ")
            ));
        }
    }
    Ok(())
}

/// A path from `at` back to `path[0]` through `after`, if there is one.
fn find_cycle<'a>(
    by_name: &std::collections::HashMap<&'a str, &'a ServiceSpec>,
    at: &'a ServiceSpec,
    path: &mut Vec<&'a str>,
) -> Option<Vec<&'a str>> {
    for next in &at.after {
        if next == path[0] {
            let mut cycle = path.clone();
            cycle.push(next);
            return Some(cycle);
        }
        let Some(spec) = by_name.get(next.as_str()) else {
            continue;
        };
        if path.len() > by_name.len() || path.contains(&next.as_str()) {
            continue;
        }
        path.push(next);
        if let Some(cycle) = find_cycle(by_name, spec, path) {
            return Some(cycle);
        }
        path.pop();
    }
    None
}

/// Whether `name` may name a service: 1 to [`MAX_SERVICE_NAME`] ASCII
/// letters, digits, `-`, `_` and `.`, and not `.` or `..`. The one rule for
/// a service's name at VM create and in a URL (`/services/{name}/logs`), so
/// a name is never a path, a control character or unbounded.
pub fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SERVICE_NAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// [`is_service_name`] in words, for messages: what to write instead.
pub fn service_name_rule() -> String {
    format!("use 1-{MAX_SERVICE_NAME} letters, digits, '-', '_' and '.' (not '.' or '..')")
}

impl ServiceSpec {
    pub fn check(&self) -> Result<(), String> {
        if !is_service_name(&self.name) {
            return Err(format!(
                "service name {:?} is not valid: {}",
                self.name,
                service_name_rule()
            ));
        }
        if self.argv.first().is_none_or(|a| a.is_empty()) {
            return Err(format!(
                "service {}: argv is empty: name the program to run",
                self.name
            ));
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return Err(format!(
                "service {}: an argument contains a NUL byte",
                self.name
            ));
        }
        for a in &self.after {
            if !is_service_name(a) || a == &self.name {
                return Err(format!(
                    "service {}: `after` names {a:?}, which is not another service's name",
                    self.name
                ));
            }
        }
        if let Some(Readiness::Command { argv }) = &self.readiness {
            if argv.first().is_none_or(|a| a.is_empty()) {
                return Err(format!(
                    "service {}: the readiness command is empty",
                    self.name
                ));
            }
        }
        if let Some(Readiness::Http { path, .. }) = &self.readiness {
            if !path.starts_with('/') {
                return Err(format!(
                    "service {}: the readiness path {path:?} must start with '/'",
                    self.name
                ));
            }
        }
        if self.crash_loop.restarts == 0 || self.crash_loop.window_secs == 0 {
            return Err(format!(
                "service {}: crash_loop needs restarts and window_secs above 0",
                self.name
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            argv: vec!["/bin/web".into()],
            env: vec![],
            user: None,
            restart: RestartPolicy::Always,
            readiness: Some(Readiness::Tcp { port: 8080 }),
            crash_loop: CrashLoopRule::default(),
            after: vec![],
        }
    }

    #[test]
    fn services_may_wait_for_others_but_not_in_a_circle() {
        let with_after = |name: &str, after: &[&str]| ServiceSpec {
            after: after.iter().map(|a| a.to_string()).collect(),
            ..service(name)
        };
        let config = |services| GuestConfig {
            services,
            ..GuestConfig::default()
        };
        let ok = config(vec![
            with_after("display", &[]),
            with_after("vnc", &["display"]),
            with_after("browser", &["display", "vnc"]),
        ]);
        assert_eq!(ok.check(), Ok(()));
        let circle = config(vec![
            with_after("a", &["b"]),
            with_after("b", &["c"]),
            with_after("c", &["a"]),
        ]);
        let err = circle.check().unwrap_err();
        assert!(err.contains("a -> b -> c -> a"), "{err}");
        let own = config(vec![with_after("a", &["a"])]);
        assert!(own.check().unwrap_err().contains("not another service"));
        let bad = config(vec![with_after("a", &["../x"])]);
        assert!(bad.check().is_err());
        // Waiting for a service of the image (not in this config) is fine.
        assert_eq!(
            config(vec![with_after("a", &["elsewhere"])]).check(),
            Ok(())
        );
    }

    #[test]
    fn a_config_from_json_takes_defaults() {
        let c: GuestConfig = serde_json::from_str(
            r#"{"services":[{"name":"web","argv":["/bin/web"],"readiness":{"kind":"tcp","port":8080}}]}"#,
        )
        .unwrap();
        assert_eq!(c.services, vec![service("web")]);
        assert!(c.check().is_ok());
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let mut c = GuestConfig {
            services: vec![service("web"), service("web")],
            ..Default::default()
        };
        assert!(c.check().unwrap_err().contains("twice"));
        c.services = vec![service("a b")];
        assert!(c.check().unwrap_err().contains("a b"));
        c.services = vec![];
        c.hostname = Some("-x".into());
        assert!(c.check().unwrap_err().contains("hostname"));
        c.hostname = None;
        c.files = vec![GuestFile {
            path: "/etc/../shadow".into(),
            content: String::new(),
            mode: None,
            owner: None,
        }];
        assert!(c.check().unwrap_err().contains(".."));
        c.files = vec![];
        c.env = vec![EnvVar {
            name: "1X".into(),
            value: "v".into(),
        }];
        assert!(c.check().unwrap_err().contains("1X"));
    }

    #[test]
    fn service_names_are_short_plain_words() {
        for good in ["web", "a", "api-v2.worker_1", &"x".repeat(MAX_SERVICE_NAME)] {
            assert!(is_service_name(good), "{good:?}");
        }
        let long = "x".repeat(MAX_SERVICE_NAME + 1);
        for bad in [
            "",
            ".",
            "..",
            "../../etc/passwd",
            "a/b",
            "a\0b",
            "a\nb",
            "a b",
            "é",
            &long,
        ] {
            assert!(!is_service_name(bad), "{bad:?}");
        }
        assert!(service_name_rule().contains("1-64 letters"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<GuestConfig>(r#"{"servics":[]}"#).unwrap_err();
        assert!(err.to_string().contains("servics"), "{err}");
    }

    #[test]
    fn exit_status_reads_as_words() {
        let code = ExitStatus {
            code: Some(3),
            signal: None,
        };
        let sig = ExitStatus {
            code: None,
            signal: Some(4),
        };
        assert_eq!(code.to_string(), "exited with status 3");
        assert_eq!(sig.to_string(), "killed by signal 4");
    }
}

#[cfg(test)]
mod network_tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn net() -> GuestNetwork {
        GuestNetwork {
            mac: "02:68:74:00:00:02".into(),
            address: Ipv4Addr::new(172, 31, 0, 2),
            prefix_len: 30,
            gateway: Ipv4Addr::new(172, 31, 0, 1),
            dns: vec![],
        }
    }

    #[test]
    fn a_gateway_off_the_network_or_a_bad_mac_is_refused() {
        assert_eq!(net().check(), Ok(()));
        let far = GuestNetwork {
            gateway: Ipv4Addr::new(10, 0, 0, 1),
            ..net()
        };
        assert!(far.check().unwrap_err().contains("gateway"));
        let bad_mac = GuestNetwork {
            mac: "02:68:74".into(),
            ..net()
        };
        assert!(bad_mac.check().unwrap_err().contains("mac"));
    }

    #[test]
    fn a_config_without_a_network_serializes_without_the_field() {
        let text = serde_json::to_string(&GuestConfig::default()).unwrap();
        assert!(!text.contains("network"), "{text}");
    }
}
