//! A kernel the user brings, with hearth's initramfs: its modules named
//! on `vm run --modules DIR`, or stored with `hearth kernel import` and
//! booted by release, or none (`--no-modules`) for a kernel whose drivers
//! are built in. The kernel here is Debian's, copied out of the suite's
//! data directory into a fresh one that has never seen it, so nothing the
//! fetch stored can help.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{data_dir, ensure_assets, text};

const MARKER: &str = "hearth-own-modules-ok";

/// Debian's kernel in the suite's data directory: its release, vmlinuz
/// and modules install root, and the minimal image's file.
struct Stock {
    release: String,
    vmlinuz: PathBuf,
    modules: PathBuf,
    image: PathBuf,
}

fn stock() -> Stock {
    ensure_assets("minimal");
    let data = data_dir();
    let release = std::fs::read_to_string(data.join("kernels/default"))
        .expect("the default kernel's release")
        .trim()
        .to_owned();
    let dir = data.join("kernels").join(&release);
    Stock {
        vmlinuz: dir.join("vmlinuz"),
        modules: dir.join("modules"),
        image: data.join("images/minimal/rootfs.ext4"),
        release,
    }
}

/// The kernel file copied where no stored kernel is: the fresh data
/// directory must learn its modules from the user.
fn own_copy(stock: &Stock, dir: &Path) -> PathBuf {
    let path = dir.join("my-vmlinuz");
    std::fs::copy(&stock.vmlinuz, &path).expect("copy the kernel");
    path
}

fn hearth_in(data: &Path, args: &[&std::ffi::OsStr]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .expect("hearth runs")
}

fn vm_run_in(data: &Path, image: &Path, kernel_args: &[&std::ffi::OsStr]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("--data-dir")
        .arg(data)
        .args(["vm", "run", "--timeout", "90", "--image"])
        .arg(image)
        .args(kernel_args)
        .args(["--", "echo", MARKER])
        .output()
        .expect("hearth runs")
}

fn assert_booted(out: &Output) {
    let all = text(out);
    assert!(out.status.success(), "{all}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(MARKER),
        "the guest's echo on the console: {all}"
    );
}

#[test]
fn a_kernel_file_boots_with_the_modules_named_on_the_command_line() {
    let stock = stock();
    let fresh = tempfile::tempdir().expect("tempdir");
    let kernel = own_copy(&stock, fresh.path());
    let data = fresh.path().join("data");
    let out = vm_run_in(
        &data,
        &stock.image,
        &[
            "--kernel".as_ref(),
            kernel.as_os_str(),
            "--modules".as_ref(),
            stock.modules.as_os_str(),
        ],
    );
    assert_booted(&out);
    // The modules were read where they are, never copied in.
    assert!(!data
        .join("kernels")
        .join(&stock.release)
        .join("modules")
        .exists());
}

#[test]
fn an_imported_kernel_boots_by_its_release_and_cannot_be_imported_twice() {
    let stock = stock();
    let fresh = tempfile::tempdir().expect("tempdir");
    let kernel = own_copy(&stock, fresh.path());
    let data = fresh.path().join("data");
    let import = [
        "kernel".as_ref(),
        "import".as_ref(),
        kernel.as_os_str(),
        "--modules".as_ref(),
        stock.modules.as_os_str(),
    ];
    let out = hearth_in(&data, &import);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains(&format!("hearth vm run --kernel {}", stock.release)),
        "{all}"
    );
    let stored = data.join("kernels").join(&stock.release);
    assert!(stored
        .join("modules/lib/modules")
        .join(&stock.release)
        .join("modules.dep")
        .is_file());

    let out = vm_run_in(
        &data,
        &stock.image,
        &["--kernel".as_ref(), stock.release.as_ref()],
    );
    assert_booted(&out);

    let again = hearth_in(&data, &import);
    let all = text(&again);
    assert_eq!(again.status.code(), Some(2), "{all}");
    assert!(all.contains("already stored"), "{all}");
}

#[test]
fn a_kernel_without_stored_modules_is_refused_naming_each_way_to_give_them() {
    let stock = stock();
    let fresh = tempfile::tempdir().expect("tempdir");
    let kernel = own_copy(&stock, fresh.path());
    let data = fresh.path().join("data");
    let out = vm_run_in(
        &data,
        &stock.image,
        &["--kernel".as_ref(), kernel.as_os_str()],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    for way in ["--modules DIR", "hearth kernel import", "--no-modules"] {
        assert!(all.contains(way), "the refusal names {way:?}: {all}");
    }
    assert!(
        !data.join("runs").exists() || std::fs::read_dir(data.join("runs")).unwrap().count() == 0
    );

    let empty = fresh.path().join("no-modules-here");
    std::fs::create_dir_all(&empty).unwrap();
    let out = vm_run_in(
        &data,
        &stock.image,
        &[
            "--kernel".as_ref(),
            kernel.as_os_str(),
            "--modules".as_ref(),
            empty.as_os_str(),
        ],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("modules.dep") && all.contains("depmod"),
        "{all}"
    );
}

/// Debian's kernel builds virtio as modules, so with none loaded the guest
/// finds no disk: the initramfs was built without modules and the failure
/// says what is missing instead of hanging.
#[test]
fn no_modules_for_a_modular_kernel_fails_saying_the_disk_never_appeared() {
    let stock = stock();
    let fresh = tempfile::tempdir().expect("tempdir");
    let kernel = own_copy(&stock, fresh.path());
    let data = fresh.path().join("data");
    let out = vm_run_in(
        &data,
        &stock.image,
        &[
            "--kernel".as_ref(),
            kernel.as_os_str(),
            "--no-modules".as_ref(),
        ],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(all.contains("root not mountable"), "{all}");
    assert!(all.contains("virtio_blk"), "{all}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&format!("\n{MARKER}")));
}
