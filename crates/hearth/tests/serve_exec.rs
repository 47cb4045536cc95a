//! `hearth vm exec` against a real `hearth serve`: a busybox guest with the
//! static `hearth-agent` (restarted by its init after each hang-up) runs
//! commands; the CLI passes on their output and status.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::serve::Host;
use common::text;
use hearth_types::VmState;

const STATIC_LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.a";
const TARGET: &str = "x86_64-unknown-linux-gnu";
const BUSYBOX: &str = "/bin/busybox";

const INIT: &str = r#"#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
grep -q " /proc " /proc/mounts 2>/dev/null || mount -t proc proc /proc
grep -q " /sys " /proc/mounts || mount -t sysfs sysfs /sys
grep -q " /dev " /proc/mounts || mount -t devtmpfs devtmpfs /dev
[ -c /dev/console ] && exec </dev/console >/dev/console 2>&1
echo "hearth: ready"
while :; do
  /bin/hearth-agent --port hearth.agent
  sleep 0.1
done
"#;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The static agent, built like `agent_exec` does; `None` without static
/// glibc.
fn build_agent() -> Option<PathBuf> {
    if !Path::new(STATIC_LIBC).exists() {
        println!("skipped: no static glibc ({STATIC_LIBC}) to link hearth-agent with");
        return None;
    }
    let target_dir = workspace().join("target/agent-build");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--locked", "-p", "hearth-agent"])
        .args(["--target", TARGET])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(workspace())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the static agent failed");
    Some(target_dir.join(TARGET).join("release/hearth-agent"))
}

/// Replaces the host's shared images with its own `minimal`: busybox plus
/// the agent.
fn install_agent_image(data: &Path, agent: &Path) {
    let images = data.join("images");
    std::fs::remove_file(&images).expect("the shared images link");
    let image_dir = images.join("minimal");
    std::fs::create_dir_all(&image_dir).unwrap();
    std::fs::copy(
        common::data_dir().join("images/minimal/manifest.json"),
        image_dir.join("manifest.json"),
    )
    .unwrap();
    let tree = data.join("tree");
    for sub in ["bin", "sbin", "proc", "sys", "dev", "tmp", "etc", "root"] {
        std::fs::create_dir_all(tree.join(sub)).unwrap();
    }
    std::fs::copy(BUSYBOX, tree.join("bin/busybox")).expect("the host has busybox");
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if !matches!(applet, "busybox" | "init" | "") {
            let _ = std::os::unix::fs::symlink("busybox", tree.join("bin").join(applet));
        }
    }
    std::fs::copy(agent, tree.join("bin/hearth-agent")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let init = tree.join("sbin/init");
        std::fs::write(&init, INIT).unwrap();
        std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "hearth-root", "-d"])
        .arg(&tree)
        .arg(image_dir.join("rootfs.ext4"))
        .arg("64M")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("mkfs.ext4 runs");
    assert!(status.success(), "mkfs.ext4 failed");
    std::fs::remove_dir_all(&tree).unwrap();
}

#[test]
fn vm_exec_passes_on_the_guest_command_s_output_and_status() {
    let Some(agent) = build_agent() else { return };
    let mut host = Host::new(&[]);
    install_agent_image(&host.data(), &agent);
    host.start();
    let id = host.create(&["--wait", "ready"]);
    let vm = host.vm(&id);
    assert_eq!(vm.state, VmState::Ready);

    let out = host.vm_cli(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    let out = host.vm_cli(&["exec", &id, "--", "uname", "-s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Linux\n");

    let out = host.vm_cli(&["exec", &id, "--", "/no/such/program"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/no/such/program"),
        "{}",
        text(&out)
    );

    let out = host.vm_cli(&["exec", &id, "--timeout", "1", "--", "sleep", "30"]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out));
    assert!(text(&out).contains("timeout"), "{}", text(&out));

    let bob = host.mint(&["--tenant", "bob"]);
    let out = host.vm_cli_as(&bob, &["exec", &id, "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no VM"), "{}", text(&out));

    for bad in [
        &["exec", &id][..],
        &["exec", &id, "--timeout", "0", "--", "true"],
    ] {
        let out = host.vm_cli(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out));
    }

    host.vm_ok(&["rm", &id]);
    host.wait_vm(&id, Duration::from_secs(30), |vm| {
        vm.state == VmState::Destroyed
    });
}
