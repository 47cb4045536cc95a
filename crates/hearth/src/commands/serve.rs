//! `hearth serve`: the controller and its HTTP API in one process, over
//! the embedded store in the data directory.
//!
//! One `hearth serve` per data directory: a second one would adopt, clean
//! and kill the first one's VMs, so it is refused at once through an
//! exclusive lock on `<data>/serve.lock`. SIGTERM or SIGINT stops serving
//! and exits 0 leaving the VMs running; the next start adopts them.

use std::cell::RefCell;
use std::fs::File;
use std::io::{IsTerminal, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hearth_control::controller::{Controller, ControllerConfig};
use hearth_guestkit::DataDir;
use hearth_server::{RateLimit, ServerConfig};
use hearth_store::SqliteStore;
use hearth_types::Accel;
use tokio::signal::unix::{signal, SignalKind};
use tracing::dispatcher::DefaultGuard;

use super::serve_sessions::SessionParts;
use crate::cli::{AccelArg, LogFormat, ServeArgs};

/// What is logged unless `HEARTH_LOG` says otherwise: hearth's own
/// lifecycle lines, and only warnings from the libraries under it.
const DEFAULT_LOG: &str =
    "warn,hearth=info,hearth_control=info,hearth_server=info,hearth_store=info,hearth_vmm=info";
/// How long stopping waits for blocking work (a layer being copied) to end.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another `hearth serve`{holder} already serves the data directory {dir}: stop it first, or give this one its own --data-dir")]
    AlreadyServing { dir: PathBuf, holder: String },
    #[error("could not lock {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub fn run(data: &DataDir, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let logs = log_dispatch(args.log_format);
    // The global logger too, for threads outside the runtime (`main` left
    // it unset for `serve`); should one be set already, this thread's is.
    let _main_logs = match tracing::dispatcher::set_global_default(logs.clone()) {
        Ok(()) => None,
        Err(_) => Some(tracing::dispatcher::set_default(&logs)),
    };
    match (serve_until_stopped(data, &args, logs), args.log_format) {
        // A log shipper reads every line as JSON: the error is one too.
        (Err(err), LogFormat::Json) => {
            tracing::error!(error = format!("{err:#}"), "hearth serve failed");
            Ok(ExitCode::from(2))
        }
        (result, _) => result,
    }
}

fn serve_until_stopped(
    data: &DataDir,
    args: &ServeArgs,
    logs: tracing::Dispatch,
) -> anyhow::Result<ExitCode> {
    let _lock = ServeLock::acquire(data)?;
    let store_file = data.store_file();
    let store = SqliteStore::open(&store_file)
        .with_context(|| format!("could not open the store {}", store_file.display()))?;
    let store = Arc::new(store);
    let mut config = controller_config(data, args);
    // The names `--egress-host` fixes resolve the same for VMs with a NIC
    // (hearth's resolver and proxy in their namespace) as for sessions.
    let hosts = super::serve_sessions::static_hosts(&args.sessions.egress_hosts)?;
    config.network.resolver = Some(Arc::new(hosts));
    let server = server_config(args);
    let sessions = SessionParts::from_args(data, &args.keys, &args.sessions, store.clone())?;
    config.disk_keys = Some(sessions.disk_keys());
    let runtime = runtime(logs)?;
    let pools = args.pools.clone();
    let result = runtime.block_on(serve(store, config, server, sessions, pools));
    runtime.shutdown_timeout(SHUTDOWN_WAIT);
    result?;
    tracing::info!("stopped; running VMs were left running for the next `hearth serve` to adopt");
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    store: Arc<SqliteStore>,
    config: ControllerConfig,
    mut server: ServerConfig,
    sessions: SessionParts,
    pools: Vec<(String, u32)>,
) -> anyhow::Result<()> {
    // Before anything else: a SIGTERM during adoption must stop us cleanly.
    let shutdown = shutdown_signal()?;
    let data = config.data.root().display().to_string();
    let controller = Controller::new(store, config);
    let reconcilers = controller.start().await;
    set_pools(&controller, pools).await?;
    let sessions = sessions.sessions(Arc::clone(&controller));
    let session_reconciler = tokio::spawn(sessions.clone().run());
    server.sessions = Some(sessions);
    tracing::info!(listen = %server.listen, data = %data, "serving");
    let served = hearth_server::serve(Arc::clone(&controller), server, shutdown).await;
    session_reconciler.abort();
    reconcilers.abort();
    served.context("the HTTP API stopped")?;
    Ok(())
}

/// `--pool IMAGE=SIZE`: each pool set (its other settings kept, or the
/// defaults for a new one).
async fn set_pools(controller: &Controller, pools: Vec<(String, u32)>) -> anyhow::Result<()> {
    for (image, size) in pools {
        let spec = match controller.pool(&image).await {
            Ok(p) => hearth_types::pool::PoolSpec {
                size,
                max: Some(p.settings.max.max(size)),
                ttl_secs: Some(p.settings.ttl_secs),
                refill_per_min: Some(p.settings.refill_per_min),
                template: p.settings.template,
            },
            Err(_) => hearth_types::pool::PoolSpec {
                size,
                max: None,
                ttl_secs: None,
                refill_per_min: None,
                template: None,
            },
        };
        controller
            .set_pool(&image, &spec)
            .await
            .with_context(|| format!("--pool {image}={size}"))?;
    }
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate()).context("could not handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("could not handle SIGINT")?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "stopping");
    })
}

fn controller_config(data: &DataDir, args: &ServeArgs) -> ControllerConfig {
    let mut config = ControllerConfig::new(data.clone());
    config.grace = Duration::from_secs(args.grace);
    config.readiness_timeout = Duration::from_secs(args.readiness_timeout);
    config.orphan_grace = Duration::from_secs(args.orphan_grace);
    if let Some(age) = args.retention_age {
        config.retention_age = Duration::from_secs(age);
    }
    if let Some(bytes) = args.retention_bytes {
        config.retention_bytes = bytes;
    }
    config.tick = Duration::from_millis(args.tick_ms.max(1));
    config.accel = args.accel.map(|a| match a {
        AccelArg::Kvm => Accel::Kvm,
        AccelArg::Tcg => Accel::Tcg,
    });
    config.firecracker = args.firecracker.clone();
    if let Some(bytes) = args.max_file_bytes {
        config.max_file_bytes = bytes;
    }
    config.network.prefix = args.network_prefix.clone();
    config.network.host_namespace = args.network_namespace.clone();
    config.network.pool = args.network_pool;
    config.network.default = match args.default_network {
        crate::cli::NetworkArg::Nat => Some(hearth_types::api::NetworkMode::Nat),
        crate::cli::NetworkArg::None => None,
    };
    config.pool_boots = usize::try_from(args.pool_boots).unwrap_or(1);
    config
}

fn server_config(args: &ServeArgs) -> ServerConfig {
    let mut config = ServerConfig {
        listen: args.listen,
        novnc_dir: args.novnc_dir.clone(),
        public_url: args.public_url.clone(),
        ..ServerConfig::default()
    };
    if let (Some(requests), Some(secs)) = (args.rate_limit, args.rate_window) {
        config.rate_limit = RateLimit {
            requests,
            per: Duration::from_secs(secs),
        };
    }
    config
}

/// The runtime, each of its threads logging through `logs`.
fn runtime(logs: tracing::Dispatch) -> std::io::Result<tokio::runtime::Runtime> {
    thread_local! {
        static LOGS: RefCell<Option<DefaultGuard>> = const { RefCell::new(None) };
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hearth-serve")
        .on_thread_start(move || {
            let guard = tracing::dispatcher::set_default(&logs);
            LOGS.with(|slot| *slot.borrow_mut() = Some(guard));
        })
        .on_thread_stop(|| LOGS.with(|slot| drop(slot.borrow_mut().take())))
        .build()
}

/// One line per event on stderr, `vm=<id>` among its fields: text, or
/// with `json` one object per line whose `message` and fields sit beside
/// `timestamp`, `level` and `target` (flattened, as shippers index them).
/// `hearth`'s logger stays at warnings for the short commands; the server
/// logs its lifecycle by default.
fn log_dispatch(format: LogFormat) -> tracing::Dispatch {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HEARTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal();
            tracing::Dispatch::new(builder.with_ansi(ansi).finish())
        }
        LogFormat::Json => tracing::Dispatch::new(builder.json().flatten_event(true).finish()),
    }
}

/// Held while this process serves a data directory; the kernel releases
/// it when the process ends, however it ends.
#[derive(Debug)]
struct ServeLock {
    _file: File,
}

impl ServeLock {
    fn acquire(data: &DataDir) -> Result<ServeLock, LockError> {
        let path = data.root().join("serve.lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data.root()).map_err(io)?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        if !try_lock_unless_live(&mut file).map_err(io)? {
            return Err(LockError::AlreadyServing {
                dir: data.root().to_owned(),
                holder: holder(&mut file),
            });
        }
        // For the message a second `hearth serve` prints.
        let pid = std::process::id();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{pid}"))
            .map_err(io)?;
        Ok(ServeLock { _file: file })
    }
}

/// How long a lock whose recorded holder is dead may still be held: a
/// process the dead server was starting holds the lock from its fork
/// until its exec closes the descriptor.
const DEAD_HOLDER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Takes the lock; when it is held but the server that wrote the lock
/// file no longer runs, waits a moment for the lock to come free.
fn try_lock_unless_live(file: &mut File) -> std::io::Result<bool> {
    let deadline = std::time::Instant::now() + DEAD_HOLDER_WAIT;
    loop {
        if try_lock(file)? {
            return Ok(true);
        }
        let dead = recorded_pid(file).is_some_and(|pid| !process_exists(pid));
        if !dead || std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn recorded_pid(file: &mut File) -> Option<i32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn process_exists(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 sends nothing; it only checks.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Takes an exclusive lock without waiting; false when someone holds it.
fn try_lock(file: &File) -> std::io::Result<bool> {
    loop {
        // SAFETY: flock(2) on a descriptor owned by `file`, alive for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::WouldBlock => return Ok(false),
            std::io::ErrorKind::Interrupted => continue,
            _ => return Err(e),
        }
    }
}

/// ` (pid N)` from the lock file, when the holder wrote it.
fn holder(file: &mut File) -> String {
    match recorded_pid(file) {
        Some(pid) => format!(" (pid {pid})"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_data_dir_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let first = ServeLock::acquire(&data).unwrap();
        let err = ServeLock::acquire(&data).unwrap_err().to_string();
        let pid = std::process::id();
        assert!(err.contains("already serves"), "{err}");
        assert!(err.contains(&format!("(pid {pid})")), "{err}");
        drop(first);
        ServeLock::acquire(&data).expect("free again once the holder is gone");
    }
}
