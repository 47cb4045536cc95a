//! `hearth vm run` booting real Debian kernels under QEMU microvm (TCG on
//! hosts without working KVM). Each test boots one or two VMs.

mod common;

use std::thread;

use common::*;

#[test]
fn echo_hello_prints_and_exits_zero_with_the_boot_in_the_console_log() {
    ensure_assets("minimal");
    let out = run(&[
        "vm",
        "run",
        "--backend",
        "qemu",
        "--image",
        "minimal",
        "--",
        "echo",
        "hello",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.trim_end() == "hello"),
        "{}",
        text(&out)
    );
    let log = std::fs::read_to_string(console_log_of(&out)).expect("console log kept");
    assert!(
        log.contains("Linux version"),
        "kernel boot lines missing from the console log"
    );
    assert!(log.contains("hearth: ready") && log.contains("hello"));
}

#[test]
fn the_commands_exit_status_and_arguments_come_through_exactly() {
    ensure_assets("minimal");
    let script = "printf '[%s]' \"$1\"; exit 7";
    let out = run(&[
        "vm",
        "run",
        "--",
        "sh",
        "-c",
        script,
        "sh",
        "two words, one arg",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("[two words, one arg]"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_kernel_panic_fails_the_run_with_that_reason() {
    ensure_assets("minimal");
    let out = run(&[
        "vm",
        "run",
        "--",
        "sh",
        "-c",
        "echo c > /proc/sysrq-trigger",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("failed: kernel panic"), "{}", text(&out));
}

#[test]
fn a_guest_that_outlives_its_timeout_is_stopped_and_reported() {
    ensure_assets("minimal");
    let out = run(&["vm", "run", "--timeout", "20", "--", "sleep", "600"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("timeout"), "{}", text(&out));
    let dir = console_log_of(&out).parent().expect("vm dir").to_owned();
    assert!(
        processes_mentioning(&dir).is_empty(),
        "a hypervisor outlived its VM"
    );
    assert!(
        !dir.join("layer.ext4").exists(),
        "the writable layer was left behind"
    );
}

#[test]
fn two_vms_from_one_image_do_not_see_each_others_writes() {
    ensure_assets("minimal");
    let image = data_dir().join("images/minimal/rootfs.ext4");
    let before = sha256(&image);
    let writer = thread::spawn(|| {
        run(&[
            "vm",
            "run",
            "--",
            "sh",
            "-c",
            "echo mine > /root/mark && sync && cat /root/mark && sleep 3",
        ])
    });
    let reader = thread::spawn(|| run(&["vm", "run", "--", "sh", "-c", "sleep 2; cat /root/mark"]));
    let (writer, reader) = (
        writer.join().expect("writer"),
        reader.join().expect("reader"),
    );
    assert!(writer.status.success(), "{}", text(&writer));
    assert!(
        String::from_utf8_lossy(&writer.stdout).contains("mine"),
        "{}",
        text(&writer)
    );
    assert_eq!(
        reader.status.code(),
        Some(1),
        "the other VM saw the file:\n{}",
        text(&reader)
    );
    assert!(
        String::from_utf8_lossy(&reader.stdout).contains("No such file"),
        "{}",
        text(&reader)
    );
    assert_eq!(sha256(&image), before, "the shared image changed");
}

#[test]
fn the_debian_image_boots_to_multi_user_target() {
    ensure_assets("debian");
    let out = run(&[
        "vm",
        "run",
        "--image",
        "debian",
        "--memory",
        "512",
        "--timeout",
        "180",
        "--",
        "systemctl",
        "is-active",
        "multi-user.target",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim_end() == "active"),
        "{}",
        text(&out)
    );
}

fn sha256(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn an_image_without_an_init_is_reported_as_root_not_mountable() {
    ensure_assets("minimal");
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).expect("tree");
    let image = dir.path().join("noinit.ext4");
    ext4_image(&tree, &image, "8M");
    let out = run(&[
        "vm",
        "run",
        "--image",
        image.to_str().expect("utf-8"),
        "--timeout",
        "60",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("failed: root not mountable: the image has no /sbin/init"),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains("[root_not_mountable]"),
        "no diagnosis finding:\n{}",
        text(&out)
    );
}
