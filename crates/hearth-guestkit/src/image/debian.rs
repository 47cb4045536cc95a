//! The `debian` base: a Debian suite with systemd and the recipe's
//! packages, made by mmdebstrap in an unprivileged user namespace (no host
//! mounts), unpacked with owners kept, and adjusted for a short-lived,
//! console-only VM. The recipe's own steps and the ext4 come after.
//!
//! The adjustments: no login prompts (a serial getty also silences
//! systemd's status output), no periodic timers, a real fstab, and
//! `hearth-ready.service`, which reports readiness on the console and runs
//! the host's command once multi-user.target is reached.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use super::apt_sources::{host_sources, mirror_lines};
use super::build_log::BuildLog;
use super::manifest::sha256_of_texts;
use super::tool::{MMDEBSTRAP, TAR};
use super::{io_error, ImageError, RUN_COMMAND_PATH, RUN_COMMAND_SCRIPT};

/// Bump when this base changes what it produces outside the scripts.
/// 3: the packages beyond systemd come from the recipe.
pub const BASE_VERSION: u32 = 3;

/// On top of the `minbase` variant (apt, dpkg, coreutils, ...): what the
/// base's own units need. Recipes add the rest.
pub const BASE_PACKAGES: [&str; 3] = ["systemd", "systemd-sysv", "udev"];
/// Documentation a VM never reads, except the copyright notices. dpkg's
/// globs have no `{a,b}` alternatives, so one option per folder.
const DPKG_OPTIONS: [&str; 5] = [
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
    "path-include=/usr/share/doc/*/copyright",
];

pub const READY_SERVICE: &str = include_str!("hearth-ready.service");
const READY_UNIT: &str = "hearth-ready.service";
/// The agent's unit, installed with the agent when the build has one.
pub const AGENT_SERVICE: &str = include_str!("hearth-agent.service");
const AGENT_UNIT: &str = "hearth-agent.service";
/// Where the image carries the agent.
pub const AGENT_PATH: &str = "/usr/local/bin/hearth-agent";
const FSTAB: &str = "\
# hearth: the root filesystem is an overlay of the shared read-only image
# and this VM's writable layer, assembled by hearth's initramfs before
# systemd starts. Nothing else is mounted from here.
";
const HOSTNAME: &str = "hearth\n";
const HOSTS: &str = "\
127.0.0.1\tlocalhost
127.0.1.1\thearth
::1\t\tlocalhost ip6-localhost ip6-loopback
";

/// Units masked: login prompts on the serial console (it would silence
/// systemd) and the virtual terminals; waiting for a network that a VM
/// without a NIC never gets (120 s); and work that is useless here but
/// costs a second each under emulation: modprobe (the image holds no
/// kernel modules; the initramfs loads what a VM needs) and e2scrub's
/// reaper (there are no LVM snapshots).
const MASKED_UNITS: [&str; 6] = [
    "getty-static.service",
    "serial-getty@ttyS0.service",
    "getty@tty1.service",
    "systemd-networkd-wait-online.service",
    "modprobe@.service",
    "e2scrub_reap.service",
];
/// Where units are enabled; a masked unit's links there are removed.
const WANTS_DIRS: [&str; 2] = ["getty.target.wants", "multi-user.target.wants"];

/// The base's embedded files, hashed for the manifest's inputs (the
/// dpkg options are part of it: changing them rebuilds).
pub fn scripts_sha256() -> String {
    let mut texts = vec![
        RUN_COMMAND_SCRIPT,
        READY_SERVICE,
        AGENT_SERVICE,
        FSTAB,
        HOSTNAME,
        HOSTS,
    ];
    texts.extend(DPKG_OPTIONS);
    sha256_of_texts(&texts)
}

/// The base's packages then the recipe's, each once.
pub fn packages(recipe: &[String]) -> Vec<String> {
    let mut out: Vec<String> = BASE_PACKAGES.map(str::to_owned).to_vec();
    for p in recipe {
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

/// mmdebstrap into `work/rootfs.tar`, unpacked into `tree` and adjusted;
/// returns the apt sources used.
pub fn bootstrap(
    work: &Path,
    tree: &Path,
    suite: &str,
    packages: &[String],
    agent: Option<&[u8]>,
    log: &mut BuildLog,
) -> Result<Vec<String>, ImageError> {
    require_root()?;
    let sources = mirror_lines(&host_sources(), suite);
    let tarball = work.join("rootfs.tar");
    log.say(&format!(
        "debian: running mmdebstrap for {suite} with {} packages (takes 20-60 s)",
        packages.len()
    ));
    let mut cmd = MMDEBSTRAP.command();
    cmd.args(mmdebstrap_args(&tarball, suite, packages, &sources));
    let show = &mut |line: &str| {
        line.starts_with("I: ") || line.starts_with("W: ") || line.starts_with("E: ")
    };
    if let Err(e) = log.run_streaming(MMDEBSTRAP, &mut cmd, show) {
        let what = missing_packages(&e.to_string(), packages);
        return Err(log.failed("packages", &what, e.into()));
    }
    log.say("debian: unpacking");
    unpack(&tarball, tree)?;
    fs::remove_file(&tarball).map_err(io_error("remove", &tarball))?;
    customize(tree, agent)?;
    Ok(sources)
}

/// The packages apt said it could not find, from mmdebstrap's output
/// (`E: Unable to locate package X`, `Package 'X' has no installation
/// candidate`); all of them when none is named.
fn missing_packages(output: &str, packages: &[String]) -> String {
    let mut named: Vec<&str> = Vec::new();
    for line in output.lines() {
        let found = line
            .split_once("Unable to locate package ")
            .map(|(_, p)| p)
            .or_else(|| {
                let (_, rest) = line.split_once("Package '")?;
                let (p, tail) = rest.split_once('\'')?;
                tail.contains("no installation candidate").then_some(p)
            });
        if let Some(p) = found.map(str::trim) {
            if !named.contains(&p) {
                named.push(p);
            }
        }
    }
    if named.is_empty() {
        return format!("the packages {}", packages.join(", "));
    }
    let list = named.join(", ");
    if named.len() == 1 {
        format!("package {list} (not found in the Debian archive)")
    } else {
        format!("packages {list} (not found in the Debian archive)")
    }
}

/// Only root can give files other owners; `tar` as anyone else would make
/// every file in the image belong to the builder.
fn require_root() -> Result<(), ImageError> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(ImageError::NeedsRoot);
    }
    Ok(())
}

/// The mmdebstrap command line: fixed options, then the packages (checked
/// against Debian's name grammar) in one `--include`; no shell sees it.
pub fn mmdebstrap_args(
    tarball: &Path,
    suite: &str,
    packages: &[String],
    sources: &[String],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "--mode=unshare",
        "--variant=minbase",
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    ]
    .map(OsString::from)
    .to_vec();
    args.push(format!("--include={}", packages.join(",")).into());
    args.extend(DPKG_OPTIONS.map(|o| OsString::from(format!("--dpkgopt={o}"))));
    args.push("--".into());
    args.push(suite.into());
    args.push(tarball.into());
    args.extend(sources.iter().map(OsString::from));
    args
}

fn unpack(tarball: &Path, tree: &Path) -> Result<(), ImageError> {
    fs::create_dir(tree).map_err(io_error("create", tree))?;
    let mut cmd = TAR.command();
    cmd.args(["--numeric-owner", "-xpf"])
        .arg(tarball)
        .arg("-C")
        .arg(tree);
    TAR.run(&mut cmd)?;
    Ok(())
}

/// Adjusts an unpacked tree for hearth's VMs (see the module docs).
/// With an agent, also installs it and its unit, enabled early.
pub fn customize(root: &Path, agent: Option<&[u8]>) -> Result<(), ImageError> {
    write(root, "etc/fstab", FSTAB, 0o644)?;
    write(root, "etc/hostname", HOSTNAME, 0o644)?;
    write(root, "etc/hosts", HOSTS, 0o644)?;
    mask_units(root)?;
    remove_timers(root)?;
    install_ready_service(root)?;
    if let Some(agent) = agent {
        install_agent(root, agent)?;
    }
    Ok(())
}

/// The static agent, its unit and its `sysinit.target.wants` link.
fn install_agent(root: &Path, agent: &[u8]) -> Result<(), ImageError> {
    let path = root.join(AGENT_PATH.trim_start_matches('/'));
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_error("create", parent))?;
    }
    fs::write(&path, agent).map_err(io_error("write", &path))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
        .map_err(io_error("chmod", &path))?;
    let unit = format!("/usr/lib/systemd/system/{AGENT_UNIT}");
    write(root, &unit, AGENT_SERVICE, 0o644)?;
    replace_link(
        root,
        &format!("etc/systemd/system/sysinit.target.wants/{AGENT_UNIT}"),
        &unit,
    )
}

fn mask_units(root: &Path) -> Result<(), ImageError> {
    let system = root.join("etc/systemd/system");
    for unit in MASKED_UNITS {
        for wants in WANTS_DIRS {
            remove_if_present(&system.join(wants).join(unit))?;
        }
        replace_link(root, &format!("etc/systemd/system/{unit}"), "/dev/null")?;
    }
    Ok(())
}

/// The runner script, the unit, and its `multi-user.target.wants` link.
fn install_ready_service(root: &Path) -> Result<(), ImageError> {
    write(root, RUN_COMMAND_PATH, RUN_COMMAND_SCRIPT, 0o755)?;
    let unit = format!("/usr/lib/systemd/system/{READY_UNIT}");
    write(root, &unit, READY_SERVICE, 0o644)?;
    replace_link(
        root,
        &format!("etc/systemd/system/multi-user.target.wants/{READY_UNIT}"),
        &unit,
    )
}

/// A VM lives minutes: apt updates, fstrim, e2scrub and dpkg backups would
/// only cost boot time and disk writes.
fn remove_timers(root: &Path) -> Result<(), ImageError> {
    let wants = root.join("etc/systemd/system/timers.target.wants");
    let Ok(entries) = fs::read_dir(&wants) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(io_error("list", &wants))?;
        remove_if_present(&entry.path())?;
    }
    Ok(())
}

fn write(root: &Path, rel: &str, content: &str, mode: u32) -> Result<(), ImageError> {
    let path = root.join(rel.trim_start_matches('/'));
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_error("create", parent))?;
    }
    remove_if_present(&path)?;
    fs::write(&path, content).map_err(io_error("write", &path))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io_error("chmod", &path))
}

fn replace_link(root: &Path, rel: &str, target: &str) -> Result<(), ImageError> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_error("create", parent))?;
    }
    remove_if_present(&path)?;
    symlink(target, &path).map_err(io_error("link", &path))
}

/// Removes a file or symlink (never following it) if it exists.
fn remove_if_present(path: &Path) -> Result<(), ImageError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error("remove", path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmdebstrap_gets_fixed_options_then_suite_target_and_mirrors() {
        let sources = vec!["deb http://mirror.example/debian bookworm main".to_owned()];
        let pkgs = packages(&["iproute2".into(), "busybox".into(), "udev".into()]);
        let args = mmdebstrap_args(Path::new("/w/rootfs.tar"), "bookworm", &pkgs, &sources);
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert!(args.contains(&"--mode=unshare"));
        assert!(args.contains(&"--include=systemd,systemd-sysv,udev,iproute2,busybox"));
        assert!(args.contains(&"--dpkgopt=path-exclude=/usr/share/doc/*"));
        let tail = &args[args.len() - 4..];
        assert_eq!(
            tail,
            ["--", "bookworm", "/w/rootfs.tar", sources[0].as_str()]
        );
    }

    #[test]
    fn no_host_mirror_leaves_mmdebstraps_default() {
        let args = mmdebstrap_args(Path::new("/w/rootfs.tar"), "bookworm", &packages(&[]), &[]);
        assert_eq!(args.last().unwrap(), "/w/rootfs.tar");
    }

    #[test]
    fn a_missing_package_is_named_from_apts_words() {
        let out = "I: x\nE: Unable to locate package hearth-nope\nE: apt-get failed";
        let what = missing_packages(out, &["a".into()]);
        assert_eq!(
            what,
            "package hearth-nope (not found in the Debian archive)"
        );
        let out = "E: Package 'ghost' has no installation candidate";
        assert!(missing_packages(out, &[]).contains("ghost"));
        assert!(missing_packages("E: other", &["a".into()]).contains("the packages a"));
    }

    fn fake_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("etc/systemd/system");
        for d in ["getty.target.wants", "timers.target.wants"] {
            fs::create_dir_all(sys.join(d)).unwrap();
        }
        let unit = "/lib/systemd/system/getty@.service";
        symlink(unit, sys.join("getty.target.wants/getty@tty1.service")).unwrap();
        symlink("/x", sys.join("timers.target.wants/apt-daily.timer")).unwrap();
        symlink("/x", sys.join("timers.target.wants/fstrim.timer")).unwrap();
        fs::create_dir_all(sys.join("multi-user.target.wants")).unwrap();
        let reap = "multi-user.target.wants/e2scrub_reap.service";
        symlink("/x", sys.join(reap)).unwrap();
        fs::write(dir.path().join("etc/fstab"), "# UNCONFIGURED FSTAB\n").unwrap();
        dir
    }

    #[test]
    fn customize_masks_gettys_drops_timers_and_enables_ready() {
        let dir = fake_tree();
        let root = dir.path();
        customize(root, None).unwrap();
        assert!(!root.join(AGENT_PATH.trim_start_matches('/')).exists());
        let sys = root.join("etc/systemd/system");
        for unit in MASKED_UNITS {
            assert_eq!(
                fs::read_link(sys.join(unit)).unwrap(),
                Path::new("/dev/null")
            );
        }
        assert!(!sys.join("getty.target.wants/getty@tty1.service").exists());
        let reap = sys.join("multi-user.target.wants/e2scrub_reap.service");
        assert!(fs::symlink_metadata(reap).is_err());
        assert_eq!(
            fs::read_dir(sys.join("timers.target.wants"))
                .unwrap()
                .count(),
            0
        );
        let wanted = fs::read_link(sys.join("multi-user.target.wants").join(READY_UNIT)).unwrap();
        assert_eq!(
            wanted,
            Path::new("/usr/lib/systemd/system/hearth-ready.service")
        );
        let fstab = fs::read_to_string(root.join("etc/fstab")).unwrap();
        assert!(!fstab.contains("UNCONFIGURED"));
        let runner = root.join(RUN_COMMAND_PATH.trim_start_matches('/'));
        assert_eq!(
            fs::metadata(runner).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }

    #[test]
    fn customize_is_idempotent() {
        let dir = fake_tree();
        customize(dir.path(), Some(b"agent")).unwrap();
        customize(dir.path(), Some(b"agent")).unwrap();
    }

    #[test]
    fn customize_with_an_agent_installs_and_enables_it_early() {
        let dir = fake_tree();
        let root = dir.path();
        customize(root, Some(b"agent bytes")).unwrap();
        let agent = root.join(AGENT_PATH.trim_start_matches('/'));
        assert_eq!(fs::read(&agent).unwrap(), b"agent bytes");
        assert_eq!(
            fs::metadata(&agent).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let link = root.join("etc/systemd/system/sysinit.target.wants/hearth-agent.service");
        assert_eq!(
            fs::read_link(link).unwrap(),
            Path::new("/usr/lib/systemd/system/hearth-agent.service")
        );
        let unit = root.join("usr/lib/systemd/system/hearth-agent.service");
        assert_eq!(fs::read_to_string(unit).unwrap(), AGENT_SERVICE);
    }

    #[test]
    fn agent_service_starts_early_restarts_and_never_waits_for_network() {
        let lines: Vec<&str> = AGENT_SERVICE
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect();
        for want in [
            "DefaultDependencies=no",
            "Restart=always",
            "WantedBy=sysinit.target",
            "ExecStart=/usr/local/bin/hearth-agent",
        ] {
            assert!(lines.contains(&want), "{want} missing");
        }
        assert!(lines
            .iter()
            .any(|l| l.starts_with("After=systemd-udevd.service")));
        for line in &lines {
            assert!(!line.contains("network"), "{line}");
            assert!(!line.contains("multi-user"), "{line}");
        }
    }

    #[test]
    fn ready_service_runs_after_multi_user_and_never_waits_for_network() {
        assert!(READY_SERVICE.contains("After=multi-user.target"));
        assert!(READY_SERVICE.contains("WantedBy=multi-user.target"));
        assert!(READY_SERVICE.contains(&format!("ExecStart={RUN_COMMAND_PATH}")));
        assert!(READY_SERVICE.contains("TTYPath=/dev/console"));
        for line in READY_SERVICE.lines().filter(|l| !l.starts_with('#')) {
            assert!(!line.contains("network-online"), "{line}");
        }
    }
}
