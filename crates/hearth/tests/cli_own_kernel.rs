//! `hearth vm run --kernel FILE` with a kernel the user brings: the tiny
//! test guest, a 64-bit ELF with no version string and no modules. With
//! hearth's initramfs it is refused before anything starts (its modules
//! cannot be found), naming `--no-initramfs`; with `--no-initramfs` it
//! passes validation on QEMU's path (QEMU itself then refuses an ELF
//! without a PVH note) and boots on Firecracker's (when `HEARTH_FIRECRACKER`
//! names a binary; else that test says so in one line).

mod common;

use std::path::{Path, PathBuf};

use common::{data_dir, ensure_assets, text};

const MARKER: &str = "hearth-own-kernel-ok";

fn toy_kernel(dir: &Path) -> PathBuf {
    let path = dir.join("toy.elf");
    std::fs::write(&path, hearth_testkit::tiny_guest_elf(MARKER)).expect("write the toy kernel");
    path
}

fn vm_run(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("--data-dir")
        .arg(data_dir())
        .args(["vm", "run", "--timeout", "30"])
        .args(args)
        .output()
        .expect("hearth runs")
}

#[test]
fn a_versionless_kernel_is_refused_with_the_initramfs_and_named_the_way_out() {
    ensure_assets("minimal");
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = toy_kernel(dir.path());
    let out = vm_run(&["--kernel".as_ref(), kernel.as_os_str()]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("has no version string"), "{all}");
    assert!(all.contains("--no-initramfs"), "{all}");
}

#[test]
fn without_the_initramfs_a_versionless_kernel_passes_validation_on_qemu() {
    ensure_assets("minimal");
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = toy_kernel(dir.path());
    let out = vm_run(&[
        "--kernel".as_ref(),
        kernel.as_os_str(),
        "--no-initramfs".as_ref(),
    ]);
    let all = text(&out);
    assert!(!all.contains("version string"), "{all}");
    assert!(!all.contains("modules"), "{all}");
    // Past validation hearth made the VM and started QEMU, which cannot
    // load this ELF (it enters kernels in 32-bit mode, through a PVH note
    // the tiny guest has not): the refusal is QEMU's own.
    assert!(
        all.contains("qemu exited before the guest started") && all.contains("PVH"),
        "{all}"
    );
}

#[test]
fn the_tiny_guest_boots_through_vm_run_on_firecracker() {
    let Some(binary) = std::env::var_os("HEARTH_FIRECRACKER").filter(|v| !v.is_empty()) else {
        println!(
            "skipped: HEARTH_FIRECRACKER is not set (path to a firecracker binary); the tiny guest boots only on Firecracker's Linux boot path"
        );
        return;
    };
    ensure_assets("minimal");
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = toy_kernel(dir.path());
    let out = vm_run(&[
        "--backend".as_ref(),
        "firecracker".as_ref(),
        "--firecracker".as_ref(),
        binary.as_os_str(),
        "--kernel".as_ref(),
        kernel.as_os_str(),
        "--no-initramfs".as_ref(),
        "--memory".as_ref(),
        "64".as_ref(),
    ]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(MARKER),
        "the guest's marker on the console: {all}"
    );
    assert!(all.contains("powered off"), "{all}");
}
