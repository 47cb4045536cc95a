//! `hearth doctor`: checks the host and says, in plain words, what is wrong
//! and how to fix it. Exits 0 only when hearth can boot a VM here; what
//! isolation the host gives hypervisors is in [`isolation`] (warnings: VMs
//! run without it).

mod isolation;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use hearth_guestkit::{image, kernel, DataDir};
use hearth_vmm::accel::HostProbe;
use hearth_vmm::qemu::{QBOOT, QEMU};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug)]
struct Check {
    level: Level,
    what: String,
    fix: Option<String>,
}

fn ok(what: impl Into<String>) -> Check {
    Check {
        level: Level::Ok,
        what: what.into(),
        fix: None,
    }
}

fn warn(what: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        level: Level::Warn,
        what: what.into(),
        fix: Some(fix.into()),
    }
}

fn fail(what: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        level: Level::Fail,
        what: what.into(),
        fix: Some(fix.into()),
    }
}

pub fn run(data: &DataDir) -> anyhow::Result<ExitCode> {
    let mut checks = vec![
        acceleration(),
        qemu(),
        firecracker(),
        guest_tools(),
        default_kernel(data),
        images(data),
        guest_agent(),
        tun(),
        free_disk(data.root()),
        isolation::users(data),
        isolation::cgroups(),
        isolation::seccomp(),
        isolation::jailer(),
    ];
    checks.extend(networking());
    for c in &checks {
        let tag = match c.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        println!("{tag} {}", c.what);
        if let Some(fix) = &c.fix {
            println!("     fix: {fix}");
        }
    }
    let failed = checks.iter().filter(|c| c.level == Level::Fail).count();
    if failed == 0 {
        println!(
            "hearth can boot VMs on this host (data directory {})",
            data.root().display()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("hearth cannot boot VMs here yet: {failed} problem(s) above");
        Ok(ExitCode::from(1))
    }
}

fn acceleration() -> Check {
    let choice = HostProbe::default().detect();
    let what = format!("acceleration: {} ({})", choice.accel, choice.reason);
    match choice.accel {
        hearth_types::Accel::Kvm => ok(what),
        hearth_types::Accel::Tcg => warn(
            what,
            "guests run under QEMU's emulator (TCG), several times slower; Firecracker needs working KVM",
        ),
    }
}

/// The first line `program --version` prints, if it runs.
fn version_of(program: &Path) -> Option<String> {
    let out = Command::new(program).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .next()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
}

fn qemu() -> Check {
    let Some(version) = version_of(Path::new(QEMU)) else {
        return fail(
            format!("{QEMU} not found"),
            "run scripts/setup-host (installs qemu-system-x86 from bookworm-backports)",
        );
    };
    if !Path::new(QBOOT).exists() {
        return fail(
            format!("{version}, but {QBOOT} is missing"),
            "install qemu-system-x86 (it ships qboot)",
        );
    }
    ok(version)
}

fn firecracker() -> Check {
    let binary = std::env::var_os("HEARTH_FIRECRACKER")
        .map(PathBuf::from)
        .unwrap_or_else(|| "firecracker".into());
    match version_of(&binary) {
        Some(v) => ok(format!("firecracker: {v} ({})", binary.display())),
        None => warn(
            "firecracker not found (optional: QEMU is used otherwise)",
            "set HEARTH_FIRECRACKER to a firecracker binary, or put one on PATH",
        ),
    }
}

fn guest_tools() -> Check {
    let tools = [
        "/bin/busybox",
        "/sbin/mkfs.ext4",
        "/sbin/depmod",
        "/usr/bin/dpkg-deb",
        "/usr/bin/apt-get",
    ];
    let missing: Vec<_> = tools.iter().filter(|t| !Path::new(t).exists()).collect();
    if missing.is_empty() {
        ok("guest build tools: busybox, mkfs.ext4, depmod, dpkg-deb, apt-get")
    } else {
        fail(
            format!("guest build tools missing: {missing:?}"),
            "run scripts/setup-host",
        )
    }
}

fn default_kernel(data: &DataDir) -> Check {
    match kernel::default_kernel(data) {
        Ok(k) => ok(format!("kernel {} ({})", k.version, k.vmlinuz.display())),
        Err(_) => fail(
            "no guest kernel in the data directory",
            "run `hearth kernel fetch`",
        ),
    }
}

fn images(data: &DataDir) -> Check {
    let built: Vec<String> = image::list_images(data)
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.name)
        .collect();
    if built.is_empty() {
        fail("no images built", "run `hearth image build minimal`")
    } else {
        ok(format!("images: {}", built.join(", ")))
    }
}

/// The static agent `hearth image build` would put in images; a warning,
/// not a failure: `--no-agent` builds images without it.
fn guest_agent() -> Check {
    match hearth_guestkit::agent::find_static_agent() {
        Ok(path) => ok(format!("guest agent: {} (static)", path.display())),
        Err(e) => warn(
            format!("image builds will fail: {e}"),
            "run scripts/build-agent, or build images with --no-agent",
        ),
    }
}

fn tun() -> Check {
    if Path::new("/dev/net/tun").exists() {
        ok("/dev/net/tun present (VM networking)")
    } else {
        warn(
            "/dev/net/tun missing: VMs cannot get network interfaces",
            "modprobe tun",
        )
    }
}

fn free_disk(root: &Path) -> Check {
    let probe = root
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    match free_bytes(probe) {
        Some(free) if free < 2 << 30 => warn(
            format!("only {} MiB free under {}", free >> 20, probe.display()),
            "free disk space: images take up to 1 GiB and each VM's layer grows with its writes",
        ),
        Some(free) => ok(format!("{} GiB free under {}", free >> 30, probe.display())),
        None => warn(
            format!("could not read free space of {}", probe.display()),
            "check the path exists",
        ),
    }
}

fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) writes into a zeroed struct we own; `c` is a valid C string.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c.as_ptr(), &mut s) == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
    }
}

/// Whether the pool of `hearth vm run --network nat` overlaps a host
/// route.
fn run_pool() -> hearth_net::preflight::Finding {
    let (net, len) = hearth_control::foreground::RUN_POOL;
    let prefix: hearth_net::Prefix = hearth_control::foreground::RUN_PREFIX
        .parse()
        .expect("the runs' prefix is valid");
    let pool = hearth_net::TransitPool::new(net, len).expect("the runs' pool is valid");
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let clashes = hearth_net::preflight::overlapping_routes(&routes, &pool, &prefix);
    let what = format!("`hearth vm run --network nat` pool {net}/{len}");
    if clashes.is_empty() {
        hearth_net::preflight::Finding {
            what: format!("{what} overlaps no host route"),
            fix: None,
        }
    } else {
        hearth_net::preflight::Finding {
            what: format!("{what} overlaps host routes: {}", clashes.join(", ")),
            fix: Some("move those routes off 10.232.0.0/16: foreground runs' transit links would shadow them".to_owned()),
        }
    }
}

/// What VM networks need (hearth-net's checks); warnings, since a VM
/// without a NIC needs none of it.
fn networking() -> Vec<Check> {
    let prefix = hearth_net::Prefix::default();
    let pool = hearth_net::TransitPool::default();
    let mut found = hearth_net::preflight::checks(&prefix, &pool);
    found.push(run_pool());
    found
        .into_iter()
        .map(|f| match f.fix {
            None => ok(f.what),
            Some(fix) => warn(f.what, fix),
        })
        .collect()
}
