//! What lives as long as the agent, across hosts: the outbox (records
//! waiting for acks), the configuration, the services and readiness, the
//! credential capture watches.
//!
//! The image's configuration is applied at start. The host's `config`
//! comes after each welcome; the first is applied, later ones ignored (the
//! same boot keeps its configuration). With `hearth.config=host` on the
//! kernel command line the services wait for the host's configuration, and
//! readiness with them; otherwise the image's configuration alone counts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use hearth_agent_proto::Record;
use hearth_types::console::READY;
use hearth_types::guest::{EnvVar, GuestConfig, GuestNetwork, ServiceSpec};

use crate::bootreport::{self, Settle};
use crate::capture::Captures;
use crate::config::{self, ConfigError};
use crate::journal::Limits;
use crate::outbox::Outbox;
use crate::services::Supervisor;
use crate::uptime_ms;

/// Where things are; the defaults are the guest's, tests point them at
/// temporary directories.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The image's configuration file.
    pub image_config: PathBuf,
    /// Where `ready` is written once the VM is ready.
    pub run_dir: PathBuf,
    /// Where `hearth: ready` is printed.
    pub console: PathBuf,
    /// Wait for the host's configuration before starting services.
    pub wait_for_host: bool,
    /// Set the system's clock from the host's time (in a guest; an agent
    /// run on a host for tests leaves the host's clock alone).
    pub keep_clock: bool,
    /// The network `hearth.net=` on the kernel command line names (a VM
    /// booted by `hearth vm run --network nat`, which has no link to send
    /// it), or why that word is not valid.
    pub kernel_network: Result<Option<GuestNetwork>, String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            image_config: config::IMAGE_CONFIG.into(),
            run_dir: "/run/hearth".into(),
            console: "/dev/console".into(),
            wait_for_host: host_config_wanted(),
            keep_clock: true,
            kernel_network: kernel_network(),
        }
    }
}

/// The network named by `hearth.net=` on the kernel command line.
fn kernel_network() -> Result<Option<GuestNetwork>, String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    GuestNetwork::from_kernel_cmdline(&cmdline)
}

/// True when the kernel command line says `hearth.config=host`.
fn host_config_wanted() -> bool {
    std::fs::read_to_string("/proc/cmdline")
        .is_ok_and(|c| c.split_whitespace().any(|w| w == "hearth.config=host"))
}

/// The first boot report waits this long: the boot is still under way.
const BOOT_REPORT_DELAY: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
struct State {
    image: GuestConfig,
    host_applied: bool,
    /// Configuration done: services known, readiness can be declared.
    configured: bool,
    env: Vec<EnvVar>,
    /// Each wanted service, and whether its check passed.
    ready: BTreeMap<String, bool>,
    declared: bool,
}

#[derive(Debug)]
pub struct Guest {
    pub outbox: Arc<Outbox>,
    pub settings: Settings,
    pub supervisor: Supervisor,
    pub captures: Captures,
    /// Kernel uptime when the agent started, ms.
    started_ms: u64,
    state: Mutex<State>,
    became_ready: Condvar,
}

impl Guest {
    /// A guest with nothing applied yet (see [`Guest::start`]).
    pub fn new(settings: Settings) -> Arc<Guest> {
        Arc::new_cyclic(|me: &Weak<Guest>| {
            let outbox = Outbox::start(Limits::default());
            let me = me.clone();
            let on_ready = Arc::new(move |name: &str| {
                if let Some(g) = me.upgrade() {
                    g.service_ready(name);
                }
            });
            Guest {
                supervisor: Supervisor::new(outbox.clone(), on_ready),
                outbox,
                captures: Captures::default(),
                settings,
                started_ms: uptime_ms(),
                state: Mutex::new(State::default()),
                became_ready: Condvar::new(),
            }
        })
    }

    /// Applies the image's configuration; starts its services unless the
    /// host's configuration is awaited.
    pub fn start(&self) {
        self.report_boot(BOOT_REPORT_DELAY);
        self.watch_systemd_boot();
        let mut image = match config::load(&self.settings.image_config) {
            Ok(c) => c.unwrap_or_default(),
            Err(e) => {
                self.config_failed(&e);
                GuestConfig::default()
            }
        };
        match &self.settings.kernel_network {
            Ok(Some(net)) => image.network = Some(net.clone()),
            Ok(None) => {}
            Err(why) => self.config_failed(&ConfigError::Invalid(why.clone())),
        }
        for e in config::apply_system(&image) {
            self.config_failed(&e);
        }
        let mut st = self.lock();
        st.env = image.env.clone();
        st.image = image;
        if !self.settings.wait_for_host {
            let services = st.image.services.clone();
            self.configure(st, services);
        }
    }

    /// Applies the host's configuration, the first time only.
    pub fn host_config(&self, host: GuestConfig) {
        let mut st = self.lock();
        if st.host_applied {
            return;
        }
        st.host_applied = true;
        let host = match host.check() {
            Ok(()) => host,
            Err(message) => {
                self.config_failed(&ConfigError::Invalid(message));
                GuestConfig::default()
            }
        };
        drop(st);
        for e in config::apply_system(&host) {
            self.config_failed(&e);
        }
        let mut st = self.lock();
        st.env = config::merge_env(&st.image.env, &host.env);
        let services = config::merge_services(&st.image.services, &host.services);
        if let Err(message) = hearth_types::guest::check_order(&services) {
            self.config_failed(&ConfigError::Invalid(message));
        }
        self.configure(st, services);
    }

    /// The host says this guest was restored from a snapshot: reseed,
    /// take the new identity, forget the configuration and readiness the
    /// snapshot carried (so the next `config` is applied and a fresh
    /// `ready` follows it), and send a fresh boot report. A reconnect of
    /// the same restored VM (its machine id already set) only reseeds.
    pub fn restored(&self, seed: &str, hostname: &str, machine_id: &str) {
        if !self.settings.keep_clock {
            // An agent run on a host for tests: the host is not ours.
            eprintln!("hearth-agent: restored (identity left alone outside a guest)");
        } else if let Err(e) = crate::restore::reseed(seed) {
            self.config_failed(&ConfigError::Invalid(hearth_types::error_chain(&e)));
        }
        if self.settings.keep_clock && crate::restore::has_machine_id(machine_id) {
            return;
        }
        if self.settings.keep_clock {
            if let Err(e) = crate::restore::take_identity(hostname, machine_id) {
                self.config_failed(&ConfigError::Invalid(hearth_types::error_chain(&e)));
            }
        }
        let mut st = self.lock();
        st.host_applied = false;
        st.configured = false;
        st.declared = false;
        drop(st);
        eprintln!("hearth-agent: restored from a snapshot as {hostname}");
        self.report_boot(Duration::ZERO);
    }

    /// The environment for execs and services.
    pub fn env(&self) -> Vec<(String, String)> {
        self.lock()
            .env
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect()
    }

    /// Blocks until the VM is ready.
    pub fn wait_ready(&self) {
        let mut st = self.lock();
        while !st.declared {
            st = self
                .became_ready
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Runs `services`, records `config_applied`, and lets readiness count.
    fn configure(&self, mut st: MutexGuard<'_, State>, services: Vec<ServiceSpec>) {
        let old = std::mem::take(&mut st.ready);
        st.ready = services
            .iter()
            .map(|s| (s.name.clone(), old.get(&s.name) == Some(&true)))
            .collect();
        st.configured = true;
        let env = st.env.clone();
        drop(st);
        self.outbox.record(Record::ConfigApplied {
            uptime_ms: uptime_ms(),
            services: services.clone(),
        });
        let env: Vec<(String, String)> = env.into_iter().map(|v| (v.name, v.value)).collect();
        self.supervisor.converge(&services, &env);
        self.declare_if_ready();
    }

    fn service_ready(&self, name: &str) {
        if let Some(r) = self.lock().ready.get_mut(name) {
            *r = true;
        }
        self.declare_if_ready();
    }

    /// Once configured and every service ready: `hearth: ready` on the
    /// console, `RUN_DIR/ready`, then the `ready` record. Once.
    fn declare_if_ready(&self) {
        let mut st = self.lock();
        if st.declared || !st.configured || st.ready.values().any(|r| !r) {
            return;
        }
        st.declared = true;
        drop(st);
        // The console line and the file first: whoever hears the record
        // (the host marks the VM ready) must find them already there.
        if let Ok(mut console) = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.settings.console)
        {
            let _ = writeln!(console, "{READY}");
        }
        let dir = &self.settings.run_dir;
        if let Err(e) = std::fs::create_dir_all(dir)
            .and_then(|()| config::write_atomically(&dir.join("ready"), b"", 0o644))
        {
            eprintln!("hearth-agent: writing {}/ready failed: {e}", dir.display());
        }
        self.outbox.record(Record::Ready {
            uptime_ms: uptime_ms(),
        });
        self.became_ready.notify_all();
        self.report_boot(Duration::ZERO);
    }

    /// Under systemd, a `boot_report` once its boot is over (failed units
    /// fail late, after the agent's early reports), and one when it is
    /// still under way after a while (its waiting jobs say why).
    fn watch_systemd_boot(&self) {
        let (outbox, started_ms) = (self.outbox.clone(), self.started_ms);
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let mut stuck_reported = false;
            loop {
                let state = bootreport::systemd_state();
                match bootreport::settle(state.as_deref(), start.elapsed(), stuck_reported) {
                    Settle::Stop => return,
                    Settle::Wait => {}
                    Settle::ReportStuck => {
                        stuck_reported = true;
                        record_boot_report(&outbox, started_ms);
                    }
                    Settle::ReportDone => return record_boot_report(&outbox, started_ms),
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
    }

    /// A `boot_report` record after `delay`, on a thread of its own.
    fn report_boot(&self, delay: Duration) {
        let (outbox, started_ms) = (self.outbox.clone(), self.started_ms);
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            record_boot_report(&outbox, started_ms);
        });
    }

    fn config_failed(&self, e: &ConfigError) {
        let message = hearth_types::error_chain(e);
        eprintln!("hearth-agent: configuration: {message}");
        self.outbox.record(Record::ConfigFailed {
            uptime_ms: uptime_ms(),
            message,
        });
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn record_boot_report(outbox: &Outbox, started_ms: u64) {
    let report = bootreport::collect(started_ms);
    outbox.record(Record::BootReport {
        uptime_ms: uptime_ms(),
        report,
    });
}
