//! One deliberately broken guest per diagnosis rule, made by the test and
//! booted for real under QEMU with `hearth vm run`: each must name its
//! rule, with the line that shows it among the evidence. (The panic, OOM,
//! SIGILL, exec-format and timeout guests are in `diagnosis.rs`.)
//!
//! The broken things are made without root tricks: an ext4 image whose
//! superblock no longer passes its checksum, a data directory whose
//! virtio_blk module is not a module, and Debian images derived with
//! `debugfs` (a unit added, a mask removed) from the suite's shared one.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::findings::{printed_findings, Printed};
use common::*;

/// The finding of `rule` in a run's output, checked: a cause, a fix, and
/// an evidence line containing `telling`.
fn finding_of(out: &Output, rule: &str, telling: &str) -> Printed {
    let mut found = printed_findings(out);
    let at = found
        .iter()
        .position(|f| f.rule == rule)
        .unwrap_or_else(|| panic!("no {rule} finding:\n{}", text(out)));
    let f = found.swap_remove(at);
    eprintln!("{f:#?}");
    assert!(!f.cause.is_empty() && !f.fix.is_empty(), "{f:?}");
    assert!(
        f.evidence.iter().any(|l| l.contains(telling)),
        "no evidence line with {telling:?}: {f:?}\n{}",
        text(out)
    );
    f
}

/// `hearth vm run --quiet ARGS...` on the shared data directory.
fn vm_run(args: &[&str]) -> Output {
    let mut full = vec!["vm", "run", "--quiet"];
    full.extend_from_slice(args);
    run(&full)
}

#[test]
fn a_root_disk_the_kernel_cannot_mount_is_root_not_mountable() {
    ensure_assets("minimal");
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sbin")).expect("tree");
    let image = dir.path().join("corrupt.ext4");
    ext4_image(&tree, &image, "8M");
    break_superblock_checksum(&image);
    let image = image.to_str().expect("utf-8");
    let out = vm_run(&["--image", image, "--timeout", "60", "--", "true"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let f = finding_of(
        &out,
        "root_not_mountable",
        "hearth: root not mountable: /dev/vda is not an ext4 image",
    );
    assert!(f.cause.contains("is not an ext4 image"), "{f:?}");
    assert!(f.fix.contains("not a usable ext4 image"), "{f:?}");
}

/// Changes the superblock's last-write time without fixing its checksum:
/// the host still sees the ext4 magic, the guest kernel refuses to mount.
fn break_superblock_checksum(image: &Path) {
    use std::os::unix::fs::FileExt;
    /// `s_wtime`, 1024 bytes (the superblock) + 0x30.
    const WTIME: u64 = 1024 + 0x30;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(image)
        .expect("open the image");
    file.write_all_at(&[0xde, 0xad, 0xbe, 0xef], WTIME)
        .expect("write the superblock");
}

#[test]
fn a_virtio_blk_that_is_not_a_module_is_a_missing_module() {
    ensure_assets("minimal");
    let data = data_dir_with_broken_virtio_blk();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("--data-dir")
        .arg(data.path())
        .args(["vm", "run", "--quiet", "--timeout", "60", "--", "true"])
        .output()
        .expect("hearth binary runs");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let f = finding_of(&out, "missing_module", "hearth: missing module virtio_blk");
    assert!(f.cause.contains("virtio_blk"), "{f:?}");
    assert!(
        f.evidence.iter().any(|l| l.contains("virtio_blk.ko")),
        "insmod's complaint is quoted: {f:?}"
    );
}

/// A data directory sharing the suite's images, with the default kernel
/// whose module index points virtio_blk at a file that is not a module
/// (as a module built for another kernel would be refused). The other
/// modules are the real ones.
fn data_dir_with_broken_virtio_blk() -> tempfile::TempDir {
    let shared = data_dir();
    let version = std::fs::read_to_string(shared.join("kernels/default")).expect("default kernel");
    let version = version.trim();
    let real = shared.join("kernels").join(version);
    let dir = tempfile::Builder::new()
        .prefix("hearth-test-")
        .tempdir()
        .expect("tempdir");
    for name in ["images", "cache", "locks"] {
        std::os::unix::fs::symlink(shared.join(name), dir.path().join(name)).expect("symlink");
    }
    let kernels = dir.path().join("kernels");
    let kernel = kernels.join(version);
    let real_modules = real.join("modules/lib/modules").join(version);
    let modules = kernel.join("modules/lib/modules").join(version);
    std::fs::create_dir_all(modules.join("broken")).expect("modules dir");
    std::fs::write(kernels.join("default"), format!("{version}\n")).expect("default");
    std::os::unix::fs::symlink(real.join("vmlinuz"), kernel.join("vmlinuz")).expect("vmlinuz");
    std::fs::copy(real.join("kernel.json"), kernel.join("kernel.json")).expect("manifest");
    std::os::unix::fs::symlink(real_modules.join("kernel"), modules.join("kernel")).expect("tree");
    for file in ["modules.builtin", "modules.order"] {
        let _ = std::fs::copy(real_modules.join(file), modules.join(file));
    }
    let dep = std::fs::read_to_string(real_modules.join("modules.dep")).expect("modules.dep");
    let dep = dep.replace(
        "kernel/drivers/block/virtio_blk.ko:",
        "broken/virtio_blk.ko:",
    );
    assert!(
        dep.contains("broken/virtio_blk.ko:"),
        "virtio_blk is a module"
    );
    std::fs::write(modules.join("modules.dep"), dep).expect("modules.dep");
    std::fs::write(
        modules.join("broken/virtio_blk.ko"),
        "not a kernel module\n",
    )
    .expect("broken module");
    dir
}

#[test]
fn a_program_whose_library_is_gone_is_a_missing_library() {
    ensure_assets("debian");
    // ip needs libmnl; it is removed in this VM's writable layer only.
    let script = "rm -f /usr/lib/x86_64-linux-gnu/libmnl.so.0*; exec ip -brief link";
    let out = vm_run(&[
        "--image",
        "debian",
        "--memory",
        "512",
        "--timeout",
        "60",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let f = finding_of(
        &out,
        "missing_library",
        "error while loading shared libraries: libmnl.so.0",
    );
    assert!(f.cause.starts_with("ip could not start"), "{f:?}");
    assert!(f.fix.contains("apt-file search libmnl.so.0"), "{f:?}");
}

#[test]
fn a_unit_that_fails_at_boot_is_named_with_its_last_output() {
    ensure_assets("debian");
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = "[Unit]\nDescription=Load the site settings\n\n[Service]\nType=oneshot\n\
                ExecStart=/bin/sh -c 'echo \"settings: cannot read /etc/site/settings.conf\" >&2; exit 3'\n\n\
                [Install]\nWantedBy=multi-user.target\n";
    let image = derived_debian(
        dir.path(),
        &[
            ("/etc/systemd/system/site-settings.service", unit),
            (
                "/etc/systemd/journald.conf.d/console.conf",
                "[Journal]\nForwardToConsole=yes\n",
            ),
        ],
        &[(
            "/etc/systemd/system/multi-user.target.wants/site-settings.service",
            "/etc/systemd/system/site-settings.service",
        )],
        &[],
    );
    let out = vm_run(&[
        "--image",
        image.to_str().expect("utf-8"),
        "--memory",
        "512",
        "--timeout",
        "60",
        "--",
        "true",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let f = finding_of(
        &out,
        "failed_unit",
        "settings: cannot read /etc/site/settings.conf",
    );
    assert!(
        f.cause
            .contains("site-settings.service (Load the site settings)"),
        "{f:?}"
    );
    assert!(f.cause.contains("status=3"), "{f:?}");
    assert!(
        f.evidence
            .iter()
            .any(|l| l.contains("Failed to start site-")),
        "{f:?}"
    );
}

#[test]
fn a_unit_after_network_online_holds_the_boot() {
    ensure_assets("debian");
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = "[Unit]\nDescription=Sync with upstream\nWants=network-online.target\n\
                After=network-online.target\n\n[Service]\nType=oneshot\nExecStart=/bin/true\n\n\
                [Install]\nWantedBy=multi-user.target\n";
    let wait_online = "systemd-networkd-wait-online.service";
    let image = derived_debian(
        dir.path(),
        &[("/etc/systemd/system/sync.service", unit)],
        &[
            (
                "/etc/systemd/system/multi-user.target.wants/sync.service",
                "/etc/systemd/system/sync.service",
            ),
            (
                &format!("/etc/systemd/system/network-online.target.wants/{wait_online}"),
                &format!("/lib/systemd/system/{wait_online}"),
            ),
        ],
        // hearth's image masks the wait; this image is one that does not.
        &[&format!("/etc/systemd/system/{wait_online}")],
    );
    let out = vm_run(&[
        "--image",
        image.to_str().expect("utf-8"),
        "--memory",
        "512",
        // Enough for a loaded host to show the wait for a few seconds.
        "--timeout",
        "40",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // systemd 252 with no getty on the console shows the waiting job as
    // `Job systemd-networkd-wait-online.se…ice/start running (22s / no limit)`.
    let f = finding_of(&out, "waiting_on_network_online", "/start running (");
    assert!(
        f.evidence
            .iter()
            .any(|l| l.contains("systemd-networkd-wait-online.se")),
        "{f:?}"
    );
    assert!(f.fix.contains("network-online.target"), "{f:?}");
    // The command never ran: hearth-ready.service waits for multi-user,
    // which waits for the unit. (Whether the run counts as "never ready"
    // depends on who prints `hearth: ready`: the agent may, before systemd
    // is done.)
}

/// A copy of the suite's Debian image with `files` written, `links` made
/// (path, target) and `removed` paths gone, by `debugfs` on the copy.
fn derived_debian(
    dir: &Path,
    files: &[(&str, &str)],
    links: &[(&str, &str)],
    removed: &[&str],
) -> PathBuf {
    let shared = data_dir().join("images/debian/rootfs.ext4");
    let image = dir.join("derived.ext4");
    let copied = Command::new("cp")
        .arg("--sparse=always")
        .arg(&shared)
        .arg(&image)
        .status()
        .is_ok_and(|s| s.success());
    assert!(copied, "copying {} failed", shared.display());
    let mut script = String::new();
    for path in removed {
        script.push_str(&format!("rm {path}\n"));
    }
    for (n, (path, content)) in files.iter().enumerate() {
        let local = dir.join(format!("file-{n}"));
        std::fs::write(&local, content).expect("write a file for debugfs");
        let parent = Path::new(path).parent().expect("absolute path");
        script.push_str(&format!("mkdir {}\n", parent.display()));
        script.push_str(&format!("write {} {path}\n", local.display()));
    }
    for (path, target) in links {
        let parent = Path::new(path).parent().expect("absolute path");
        script.push_str(&format!("mkdir {}\n", parent.display()));
        script.push_str(&format!("symlink {path} {target}\n"));
    }
    let commands = dir.join("debugfs.cmds");
    std::fs::write(&commands, script).expect("debugfs script");
    let out = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&commands)
        .arg(&image)
        .output()
        .expect("debugfs runs (e2fsprogs)");
    assert!(out.status.success(), "debugfs failed:\n{}", text(&out));
    let complaints = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.contains("already exists"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert!(complaints.is_empty(), "debugfs: {complaints:?}");
    image
}
