//! `hearth vm run`: prepare a VM, boot it, stream its console, wait for it
//! to power off or time out, and say how it ended — and, from its logs, why
//! (the diagnosis). The VM's logs stay in its directory afterwards; only its
//! writable layer and sockets are removed.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hearth_guestkit::DataDir;
use hearth_types::api::Finding;
use hearth_types::{console::ConsoleEvent, Failure, FailureCode, VmDescription, VmId};
use hearth_vmm::console::LineSplitter;
use hearth_vmm::{ExitInfo, Hypervisor, RunningVm, VmmError};
use tokio::sync::broadcast::error::RecvError;

mod network;

pub use network::{RunNetwork, RUN_POOL, RUN_PREFIX};

use crate::diagnosis::{diagnose, read_logs, Evidence};
use crate::prepare::{self, Initramfs, PrepareError, VmFiles};
use crate::verdict::{decide, ConsoleFacts, FailReason, Verdict};

/// What to boot.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub kernel: Option<PathBuf>,
    pub image: String,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub timeout: Duration,
    pub command: Vec<String>,
    /// hearth's initramfs (the default), or the kernel booted straight.
    pub initramfs: Initramfs,
    /// The kernel's modules for hearth's initramfs; `None`: those stored
    /// for its release.
    pub modules: Option<hearth_guestkit::kernel::KernelModules>,
    /// A NIC with this policy (`--network nat`); `None`: no NIC.
    pub network: Option<hearth_net::NicPolicy>,
}

/// How a run went.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub id: VmId,
    pub verdict: Verdict,
    pub dir: PathBuf,
    pub console_log: PathBuf,
    /// From hypervisor start to the guest's readiness line.
    pub ready_after: Option<Duration>,
    pub elapsed: Duration,
    /// What the logs say went wrong, most likely cause first; empty for a
    /// healthy run.
    pub findings: Vec<Finding>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error("the VM could not be started")]
    Start(#[from] VmmError),
    #[error("the VM's network could not be made: {0}")]
    Network(String),
}

/// How long a guest gets to power off after its deadline before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Boots one VM in the foreground, copying its console to `echo`.
pub async fn run_foreground(
    data: &DataDir,
    hypervisor: &dyn Hypervisor,
    req: &RunRequest,
    echo: &mut (dyn Write + Send),
) -> Result<RunReport, RunError> {
    VmDescription::validate_resources(req.vcpus, req.memory_mib).map_err(PrepareError::from)?;
    let mut cmdline = prepare::cmdline(&req.command)?;
    let assets = prepare::resolve_assets_with(
        data,
        req.kernel.as_deref(),
        &req.image,
        req.initramfs,
        req.modules.as_ref(),
    )?;
    if req.initramfs == Initramfs::None {
        cmdline = format!("{cmdline} {}", prepare::NO_INITRAMFS_ROOT);
    }
    let id = VmId::generate();
    let files = VmFiles::for_run(data, &id);
    let mut description = files.describe(&id, &assets, req.vcpus, req.memory_mib, cmdline);
    description.validate().map_err(PrepareError::from)?;
    files.create(data)?;
    // From here a signal is kept for the watch, which stops the VM: what
    // was made is removed as at any other end.
    let mut signals = Signals::new();
    let mut network = match &req.network {
        Some(policy) => match RunNetwork::make(data, &id, policy).await {
            Ok(network) => Some(network),
            Err(why) => {
                files.remove_all();
                return Err(RunError::Network(why));
            }
        },
        None => None,
    };
    if let Some(net) = &network {
        description.cmdline = format!("{} {}", description.cmdline, net.guest.to_kernel_word());
    }
    let started = Instant::now();
    let nic = network.as_mut().and_then(|n| n.nic.take());
    let spawned = match nic {
        Some(nic) => {
            hypervisor
                .start_with_nic(&description, Box::new(|_| {}), nic)
                .await
        }
        None => hypervisor.start(&description).await,
    };
    let mut vm = match spawned {
        Ok(vm) => vm,
        Err(err) => {
            if let Some(network) = network {
                network.remove().await;
            }
            files.remove_all();
            return Err(err.into());
        }
    };
    let isolation = vm.isolation().map(|r| r.summary()).unwrap_or_default();
    tracing::info!(vm = %id, pid = vm.pid(), isolation, "hypervisor started");
    let watched = watch(&mut vm, req.timeout, echo, started, &mut signals).await;
    if let Some(network) = network {
        network.remove().await;
    }
    files.release_runtime();
    let console = std::fs::read_to_string(&files.console_log).unwrap_or_default();
    let hypervisor_log =
        std::fs::read_to_string(files.dir.join("hypervisor.log")).unwrap_or_default();
    let timed_out = watched.timed_out.then_some(req.timeout);
    let facts = ConsoleFacts::from_log(&console);
    let mut verdict = decide(&facts, watched.exit, timed_out, &hypervisor_log);
    if req.initramfs == Initramfs::None {
        verdict = without_initramfs(verdict, watched.exit);
    }
    if let Some(signal) = watched.interrupted {
        verdict = Verdict::Failed(FailReason::Interrupted(signal));
    }
    let evidence = Evidence {
        console,
        hypervisor_log: read_logs(&files.dir).map_or(hypervisor_log, |(_, logs)| logs),
        // At the deadline or a signal hearth kills the hypervisor itself:
        // not a crash.
        exit: (!watched.timed_out && watched.interrupted.is_none()).then_some(watched.exit),
        failure: failure_of(&verdict),
        events: Vec::new(),
        memory_mib: Some(req.memory_mib),
        isolation: crate::diagnosis::read_isolation(&files.dir),
    };
    Ok(RunReport {
        id,
        verdict,
        dir: files.dir.clone(),
        console_log: files.console_log.clone(),
        ready_after: watched.ready_after,
        elapsed: started.elapsed(),
        findings: diagnose(&evidence),
    })
}

/// A kernel booted without hearth's initramfs has no one to print `hearth:
/// power off`: a guest that reset or powered off by itself (the hypervisor
/// exited cleanly) completed.
fn without_initramfs(verdict: Verdict, exit: ExitInfo) -> Verdict {
    match verdict {
        Verdict::Failed(FailReason::GuestStopped { .. }) if exit.success() => {
            Verdict::Completed { status: None }
        }
        other => other,
    }
}

/// The failure a `hearth serve` VM would be recorded with for this verdict,
/// for the diagnosis. A command still running at the deadline of a guest
/// that got ready is no boot failure: none.
fn failure_of(verdict: &Verdict) -> Option<Failure> {
    let Verdict::Failed(reason) = verdict else {
        return None;
    };
    let code = match reason {
        FailReason::Timeout {
            reached_ready: true,
            ..
        } => return None,
        FailReason::Timeout { .. } => FailureCode::BootTimeout,
        FailReason::KernelPanic(_) => FailureCode::KernelPanic,
        FailReason::RootNotMountable(_) => FailureCode::RootNotMountable,
        FailReason::MissingModule(_) => FailureCode::MissingModule,
        FailReason::HypervisorFailed(_) | FailReason::GuestStopped { .. } => {
            FailureCode::HypervisorExited
        }
        FailReason::Interrupted(_) => return None,
    };
    Some(Failure {
        code,
        message: reason.to_string(),
    })
}

struct Watched {
    exit: ExitInfo,
    timed_out: bool,
    /// The signal that ended the run early.
    interrupted: Option<&'static str>,
    ready_after: Option<Duration>,
}

/// Streams the console until the hypervisor exits, the deadline passes or
/// hearth gets SIGINT or SIGTERM (then the VM is stopped, so its network
/// and files are removed as at any other end).
async fn watch(
    vm: &mut RunningVm,
    timeout: Duration,
    echo: &mut (dyn Write + Send),
    started: Instant,
    signals: &mut Signals,
) -> Watched {
    let mut console = vm.console();
    let mut lines = LineSplitter::default();
    let mut facts = ConsoleFacts::default();
    let mut ready_after = None;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut timed_out = false;
    let mut interrupted = None;
    loop {
        tokio::select! {
            signal = signals.next() => {
                interrupted = Some(signal);
                break;
            }
            chunk = console.recv() => match chunk {
                Ok(bytes) => {
                    let _ = echo.write_all(&bytes);
                    let _ = echo.flush();
                    for line in lines.push(&bytes) {
                        if facts.observe(&line) == Some(ConsoleEvent::Ready) && ready_after.is_none() {
                            ready_after = Some(started.elapsed());
                        }
                    }
                }
                Err(RecvError::Lagged(n)) => tracing::warn!(chunks = n, "live console fell behind; the log file has everything"),
                Err(RecvError::Closed) => break,
            },
            _ = &mut deadline, if !timed_out => {
                timed_out = true;
                break;
            }
        }
    }
    let exit = if timed_out || interrupted.is_some() {
        vm.stop(STOP_GRACE).await
    } else {
        vm.wait().await
    };
    Watched {
        exit,
        timed_out,
        interrupted,
        ready_after,
    }
}

/// SIGINT and SIGTERM, as far as they could be handled.
struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    /// The next one's name; never, when neither could be handled.
    async fn next(&mut self) -> &'static str {
        async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = one(&mut self.interrupt) => "SIGINT",
            () = one(&mut self.terminate) => "SIGTERM",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: ExitInfo = ExitInfo {
        code: Some(0),
        signal: None,
    };

    #[test]
    fn without_the_initramfs_a_clean_exit_completes_and_a_crash_still_fails() {
        let stopped = || {
            Verdict::Failed(FailReason::GuestStopped {
                last_line: "hearth-own-kernel-ok".into(),
            })
        };
        assert_eq!(
            without_initramfs(stopped(), CLEAN),
            Verdict::Completed { status: None }
        );
        let killed = ExitInfo {
            code: None,
            signal: Some(9),
        };
        assert_eq!(without_initramfs(stopped(), killed), stopped());
        let timeout = Verdict::Failed(FailReason::Timeout {
            secs: 5,
            reached_ready: false,
        });
        assert_eq!(without_initramfs(timeout.clone(), CLEAN), timeout);
    }
}
