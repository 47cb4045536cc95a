//! Boot overhead of `hearth vm run` against a bare hypervisor command line.
//!
//! Both boot the same kernel, initramfs and image: the baseline is the
//! exact QEMU command line hearth builds, started directly with a
//! pre-made writable layer; the other is `hearth vm run`, which also checks
//! its input, makes the layer and watches the console. Each is timed from
//! process spawn to the guest's `hearth: ready` line; runs alternate so the
//! noise of this machine hits both alike. Prints the medians and the ratio.
//!
//! `cargo bench -p hearth --bench boot_overhead` (BOOT_RUNS, default 7).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hearth_control::prepare::{self, VmFiles};
use hearth_guestkit::DataDir;
use hearth_types::VmId;
use hearth_vmm::qemu::cmdline::{self, QemuHost};
use hearth_vmm::qemu::{QBOOT, QEMU};

fn main() {
    let data = DataDir::new(hearth_testkit::test_data_dir());
    ensure_assets(&data);
    let runs: usize = std::env::var("BOOT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let (mut bare, mut hearth) = (Vec::new(), Vec::new());
    for i in 0..runs {
        bare.push(time_bare(&data));
        hearth.push(time_hearth(&data));
        eprintln!(
            "run {}: bare {:.3} s, hearth {:.3} s",
            i + 1,
            secs(bare[i]),
            secs(hearth[i])
        );
    }
    let (b, h) = (median(&mut bare), median(&mut hearth));
    println!("boot to readiness, median of {runs}: bare QEMU {:.3} s, hearth vm run {:.3} s, ratio {:.3}", secs(b), secs(h), secs(h) / secs(b));
}

fn hearth_cmd(data: &DataDir) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.arg("--data-dir").arg(data.root());
    cmd
}

fn ensure_assets(data: &DataDir) {
    for args in [&["kernel", "fetch"][..], &["image", "build", "minimal"][..]] {
        let ok = hearth_cmd(data)
            .args(args)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "hearth {args:?} failed");
    }
}

/// The QEMU command line hearth would use, with a layer made beforehand.
fn bare_command(data: &DataDir, id: &VmId) -> (Command, VmFiles) {
    let assets = prepare::resolve_assets(data, None, "minimal").expect("assets");
    let files = VmFiles::for_run(data, id);
    files.create(data).expect("vm files");
    let vm = files.describe(
        id,
        &assets,
        1,
        256,
        prepare::cmdline(&["true".into()]).expect("cmdline"),
    );
    let host = QemuHost {
        accel: hearth_vmm::accel::HostProbe::default().detect().accel,
        bios: PathBuf::from(QBOOT),
        tsc_khz: cmdline::host_tsc_khz(),
        // Bare QEMU: no isolation, as a baseline.
        sandbox: false,
    };
    let mut cmd = Command::new(QEMU);
    cmd.args(cmdline::args(&vm, &host));
    (cmd, files)
}

fn time_bare(data: &DataDir) -> Duration {
    let id = VmId::generate();
    let (cmd, files) = bare_command(data, &id);
    let t = time_to_ready(cmd);
    files.remove_all();
    t
}

fn time_hearth(data: &DataDir) -> Duration {
    let mut cmd = hearth_cmd(data);
    cmd.args(["vm", "run", "--", "true"]);
    time_to_ready(cmd)
}

/// Spawn to the `hearth: ready` line on stdout, then waits for the exit.
fn time_to_ready(mut cmd: Command) -> Duration {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut ready = None;
    for line in stdout.lines().map_while(Result::ok) {
        if ready.is_none() && line.trim_end() == hearth_types::console::READY {
            ready = Some(start.elapsed());
        }
    }
    let _ = child.wait();
    ready.expect("the guest never printed its readiness line")
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
