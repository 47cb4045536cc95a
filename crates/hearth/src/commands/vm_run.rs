//! `hearth vm run`: boot one VM in the foreground.
//!
//! Exit status: 0 when the guest powered off normally (and its command, if
//! any, succeeded); the command's own status when it failed; 2 for bad input
//! (nothing was booted); 3 when the VM failed (timeout, kernel panic, root
//! not mountable, hypervisor error), with the reason on one line. Then what
//! the diagnosis found in the logs: each finding's cause, the lines that
//! show it and the fix.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use hearth_control::prepare::Initramfs;
use hearth_control::{run_foreground, RunReport, RunRequest, Verdict};
use hearth_guestkit::kernel::KernelModules;
use hearth_guestkit::DataDir;
use hearth_types::api::Finding;
use hearth_types::Accel;
use hearth_vmm::firecracker::Firecracker;
use hearth_vmm::qemu::Qemu;
use hearth_vmm::Hypervisor;

use crate::cli::{AccelArg, Backend, NetworkArg, RunArgs};
use hearth_net::NicPolicy;
use hearth_types::api::NetworkPolicy;

/// Exit status of a VM that failed (as opposed to bad input, 2).
const VM_FAILED: u8 = 3;
/// Evidence lines printed per finding; `hearth vm why` shows them all.
const EVIDENCE_LINES: usize = 3;

pub fn run(data: &DataDir, args: RunArgs) -> anyhow::Result<ExitCode> {
    let network = network(&args)?;
    let hypervisor = hypervisor(data, &args)?;
    let (vcpus, memory_mib) = size(data, &args);
    let request = RunRequest {
        kernel: args.kernel.clone(),
        image: args.image.clone(),
        vcpus,
        memory_mib,
        timeout: Duration::from_secs(args.timeout),
        command: args.command.clone(),
        initramfs: if args.no_initramfs {
            Initramfs::None
        } else {
            Initramfs::Hearth
        },
        modules: match (&args.modules, args.no_modules) {
            (Some(dir), _) => Some(KernelModules::Dir(dir.clone())),
            (None, true) => Some(KernelModules::BuiltIn),
            (None, false) => None,
        },
        network,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(async {
        let stdout = std::io::stdout();
        let mut out: Box<dyn Write + Send> = if args.quiet {
            Box::new(std::io::sink())
        } else if stdout.is_terminal() {
            Box::new(stdout)
        } else {
            Box::new(LfLines::new(stdout))
        };
        run_foreground(data, hypervisor.as_ref(), &request, &mut out).await
    })?;
    Ok(summarize(&report))
}

/// The NIC's policy with `--network nat`; the `--net-*` flags need it.
fn network(args: &RunArgs) -> anyhow::Result<Option<NicPolicy>> {
    let policy = args.net.policy();
    if args.network != Some(NetworkArg::Nat) {
        if policy != NetworkPolicy::default() {
            anyhow::bail!("the --net-* flags give a NIC its policy: add --network nat");
        }
        return Ok(None);
    }
    let nic = NicPolicy::from_request(&policy).map_err(anyhow::Error::msg)?;
    Ok(Some(nic))
}

/// `--vcpus` and `--memory`, else the image recipe's `vm` size (a named
/// image only; an ext4 file given by path has no recipe), else the API's
/// defaults.
fn size(data: &DataDir, args: &RunArgs) -> (u8, u32) {
    let image = if args.image.contains('/') {
        None
    } else {
        hearth_guestkit::image::image_vm_size(data, &args.image)
    };
    let vcpus = args.vcpus.or(image.map(|s| s.vcpus));
    let memory = args.memory.or(image.map(|s| s.memory_mib));
    (
        vcpus.unwrap_or(hearth_types::api::DEFAULT_VCPUS),
        memory.unwrap_or(hearth_types::api::DEFAULT_MEMORY_MIB),
    )
}

/// The console for a pipe or a file: the serial console ends its lines
/// with CR LF, and `hearth vm run -- echo hi | grep -x hi` would see the CR
/// as part of the line. A terminal gets the bytes as they are.
struct LfLines<W: Write> {
    inner: W,
    /// A CR that ended the last write: dropped if the next byte is LF.
    held_cr: bool,
}

impl<W: Write> LfLines<W> {
    fn new(inner: W) -> Self {
        LfLines {
            inner,
            held_cr: false,
        }
    }
}

impl<W: Write> Write for LfLines<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let plain = strip_cr_before_lf(&mut self.held_cr, buf);
        self.inner.write_all(&plain)?;
        Ok(buf.len())
    }

    /// A held CR stays held: the next write says whether an LF follows.
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Drop for LfLines<W> {
    /// The console's last byte was a lone CR: it is output after all.
    fn drop(&mut self) {
        if self.held_cr {
            let _ = self.inner.write_all(b"\r");
        }
        let _ = self.inner.flush();
    }
}

/// `input` with each CR directly before an LF removed, other CRs kept. A CR
/// that ends `input` is held in `held_cr` for the next call, so a CR LF
/// split across two writes is still found.
fn strip_cr_before_lf(held_cr: &mut bool, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + 1);
    for &b in input {
        if std::mem::take(held_cr) && b != b'\n' {
            out.push(b'\r');
        }
        if b == b'\r' {
            *held_cr = true;
        } else {
            out.push(b);
        }
    }
    out
}

/// The backend, confining its hypervisor as this host allows (see
/// docs/isolation.md).
fn hypervisor(data: &DataDir, args: &RunArgs) -> anyhow::Result<Box<dyn Hypervisor>> {
    let isolation = hearth_control::isolation::for_host(data);
    Ok(match args.backend {
        Backend::Qemu => {
            let accel = args.accel.map(|a| match a {
                AccelArg::Kvm => Accel::Kvm,
                AccelArg::Tcg => Accel::Tcg,
            });
            Box::new(Qemu::for_host(accel).isolated(isolation))
        }
        Backend::Firecracker => {
            let cache = data.cache();
            let fc = match &args.firecracker {
                Some(binary) => Firecracker::new(binary.clone(), cache)
                    .with_jailer(Firecracker::jailer_from_env()?),
                None => Firecracker::from_env(cache)?,
            };
            Box::new(fc.isolated(isolation))
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

#[cfg(test)]
mod tests {
    use clap::Parser;
    use hearth_guestkit::image::{BuildInputs, BuildOutput, Manifest, VmSize};

    use super::*;
    use crate::cli::{Cli, Command, VmCommand};

    fn run_args(argv: &[&str]) -> RunArgs {
        let mut full = vec!["hearth", "vm", "run"];
        full.extend_from_slice(argv);
        match Cli::parse_from(full).command {
            Command::Vm(VmCommand::Run(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_size_comes_from_flags_then_the_recipe_then_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let inputs = BuildInputs {
            recipe_sha256: "r".into(),
            base: "minimal".into(),
            base_version: 1,
            scripts_sha256: "s".into(),
            busybox_sha256: None,
            agent_sha256: "none".into(),
        };
        let vm = Some(VmSize {
            vcpus: 2,
            memory_mib: 2048,
        });
        let image = data.image("big");
        std::fs::create_dir_all(&image).unwrap();
        Manifest::new("big", "test", inputs, vm, BuildOutput::default())
            .write(&image.join("manifest.json"))
            .unwrap();
        assert_eq!(size(&data, &run_args(&["--image", "big"])), (2, 2048));
        let args = run_args(&["--image", "big", "--memory", "512"]);
        assert_eq!(size(&data, &args), (2, 512));
        assert_eq!(size(&data, &run_args(&["--image", "minimal"])), (1, 256));
        assert_eq!(size(&data, &run_args(&["--image", "./x/big"])), (1, 256));
    }

    fn strip(chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut held = false;
        let out = chunks
            .iter()
            .flat_map(|c| strip_cr_before_lf(&mut held, c))
            .collect();
        (out, held)
    }

    #[test]
    fn cr_lf_becomes_lf_and_other_crs_stay() {
        assert_eq!(
            strip(&[b"hi\r\nthere\r\n"]),
            (b"hi\nthere\n".to_vec(), false)
        );
        assert_eq!(strip(&[b"a\rb\n"]), (b"a\rb\n".to_vec(), false));
        assert_eq!(strip(&[b"a\r\r\n"]), (b"a\r\n".to_vec(), false));
        assert_eq!(strip(&[b"plain\n"]), (b"plain\n".to_vec(), false));
    }

    #[test]
    fn a_cr_lf_split_across_writes_is_still_found() {
        assert_eq!(strip(&[b"hi\r", b"\nyo"]), (b"hi\nyo".to_vec(), false));
        assert_eq!(strip(&[b"hi\r", b"x"]), (b"hi\rx".to_vec(), false));
        assert_eq!(strip(&[b"end\r"]), (b"end".to_vec(), true));
    }

    #[test]
    fn the_writer_passes_lines_through_and_keeps_a_final_lone_cr() {
        let mut sink = Vec::new();
        {
            let mut w = LfLines::new(&mut sink);
            w.write_all(b"echo hi\r\nhi\r").unwrap();
            w.write_all(b"\nlast\r").unwrap();
            w.flush().unwrap();
        }
        assert_eq!(sink, b"echo hi\nhi\nlast\r");
    }
}
