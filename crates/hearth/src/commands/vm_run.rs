//! `hearth vm run`: boot one VM in the foreground.
//!
//! Exit status: 0 when the guest powered off normally (and its command, if
//! any, succeeded); the command's own status when it failed; 2 for bad input
//! (nothing was booted); 3 when the VM failed (timeout, kernel panic, root
//! not mountable, hypervisor error), with the reason on one line. Then what
//! the diagnosis found in the logs: each finding's cause, the lines that
//! show it and the fix.

use std::process::ExitCode;
use std::time::Duration;

use hearth_control::{run_foreground, RunReport, RunRequest, Verdict};
use hearth_guestkit::DataDir;
use hearth_types::api::Finding;
use hearth_types::Accel;
use hearth_vmm::firecracker::Firecracker;
use hearth_vmm::qemu::Qemu;
use hearth_vmm::Hypervisor;

use crate::cli::{AccelArg, Backend, RunArgs};

/// Exit status of a VM that failed (as opposed to bad input, 2).
const VM_FAILED: u8 = 3;
/// Evidence lines printed per finding; `hearth vm why` shows them all.
const EVIDENCE_LINES: usize = 3;

pub fn run(data: &DataDir, args: RunArgs) -> anyhow::Result<ExitCode> {
    let hypervisor = hypervisor(data, &args)?;
    let request = RunRequest {
        kernel: args.kernel.clone(),
        image: args.image.clone(),
        vcpus: args.vcpus,
        memory_mib: args.memory,
        timeout: Duration::from_secs(args.timeout),
        command: args.command.clone(),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(async {
        let mut out: Box<dyn std::io::Write + Send> = if args.quiet {
            Box::new(std::io::sink())
        } else {
            Box::new(std::io::stdout())
        };
        run_foreground(data, hypervisor.as_ref(), &request, &mut out).await
    })?;
    Ok(summarize(&report))
}

fn hypervisor(data: &DataDir, args: &RunArgs) -> anyhow::Result<Box<dyn Hypervisor>> {
    Ok(match args.backend {
        Backend::Qemu => {
            let accel = args.accel.map(|a| match a {
                AccelArg::Kvm => Accel::Kvm,
                AccelArg::Tcg => Accel::Tcg,
            });
            Box::new(Qemu::for_host(accel))
        }
        Backend::Firecracker => {
            let cache = data.cache();
            match &args.firecracker {
                Some(binary) => Box::new(Firecracker::new(binary.clone(), cache)),
                None => Box::new(Firecracker::from_env(cache)?),
            }
        }
    })
}

/// One line on stderr saying how the VM ended, then the findings, and the
/// exit status.
fn summarize(report: &RunReport) -> ExitCode {
    let code = verdict_lines(report);
    for finding in &report.findings {
        print_finding(finding);
    }
    code
}

fn verdict_lines(report: &RunReport) -> ExitCode {
    let ready = report
        .ready_after
        .map(|d| format!(", ready after {:.2} s", d.as_secs_f64()))
        .unwrap_or_default();
    match &report.verdict {
        Verdict::Completed { status } => {
            eprintln!(
                "hearth: {} powered off after {:.2} s{ready}; console log: {}",
                report.id,
                report.elapsed.as_secs_f64(),
                report.console_log.display()
            );
            let code = status.unwrap_or(0);
            if code != 0 {
                eprintln!("hearth: the command exited with status {code}");
            }
            ExitCode::from(code.clamp(0, 255) as u8)
        }
        Verdict::Failed(reason) => {
            eprintln!("hearth: {} failed: {reason}", report.id);
            eprintln!("hearth: console log: {}", report.console_log.display());
            ExitCode::from(VM_FAILED)
        }
    }
}

/// `hearth: cause: ...`, up to three `hearth: evidence: ...` (the last
/// ones: rules put the telling line last), `hearth: fix: ...`.
fn print_finding(f: &Finding) {
    eprintln!("hearth: cause: {} [{}]", f.cause, f.rule);
    let skip = f.evidence.len().saturating_sub(EVIDENCE_LINES);
    for line in &f.evidence[skip..] {
        eprintln!("hearth: evidence: {line}");
    }
    eprintln!("hearth: fix: {}", f.fix);
}
