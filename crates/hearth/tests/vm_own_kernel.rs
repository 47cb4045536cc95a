//! A kernel the user brings, with hearth's initramfs: its modules named
//! on `vm run --modules DIR`, or stored with `hearth kernel import` and
//! booted by release, or none (`--no-modules`) for a kernel whose drivers
//! are built in. The kernel here is Debian's, copied out of the suite's
//! data directory into a fresh one that has never seen it, so nothing the
//! fetch stored can help.

mod common;

use std::ffi::OsStr;
use std::path::PathBuf;
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

/// A data directory that has never stored a kernel, beside a copy of
/// Debian's kernel file: the fresh data directory must learn its modules
/// from the user.
struct Fresh {
    stock: Stock,
    kernel: PathBuf,
    data: PathBuf,
    dir: tempfile::TempDir,
}

fn fresh() -> Fresh {
    let stock = stock();
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = dir.path().join("my-vmlinuz");
    std::fs::copy(&stock.vmlinuz, &kernel).expect("copy the kernel");
    Fresh {
        data: dir.path().join("data"),
        stock,
        kernel,
        dir,
    }
}

impl Fresh {
    fn hearth(&self, args: &[&OsStr]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
            .arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .output()
            .expect("hearth runs")
    }

    /// `vm run` of the minimal image with these kernel arguments, echoing
    /// the marker.
    fn vm_run(&self, kernel_args: &[&OsStr]) -> Output {
        let image = self.stock.image.as_os_str();
        let run = ["vm", "run", "--timeout", "90", "--image"].map(OsStr::new);
        let echo = ["--", "echo", MARKER].map(OsStr::new);
        let args: Vec<&OsStr> = run
            .iter()
            .copied()
            .chain([image])
            .chain(kernel_args.iter().copied())
            .chain(echo)
            .collect();
        self.hearth(&args)
    }
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
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
    let f = fresh();
    let out = f.vm_run(&[
        os("--kernel"),
        f.kernel.as_os_str(),
        os("--modules"),
        f.stock.modules.as_os_str(),
    ]);
    assert_booted(&out);
    // The modules were read where they are, never copied in.
    let stored = f.data.join("kernels").join(&f.stock.release);
    assert!(!stored.join("modules").exists());
}

#[test]
fn an_imported_kernel_boots_by_its_release_and_cannot_be_imported_twice() {
    let f = fresh();
    let import = [
        os("kernel"),
        os("import"),
        f.kernel.as_os_str(),
        os("--modules"),
        f.stock.modules.as_os_str(),
    ];
    let out = f.hearth(&import);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let release = &f.stock.release;
    assert!(
        all.contains(&format!("hearth vm run --kernel {release}")),
        "{all}"
    );
    let stored = f.data.join("kernels").join(release);
    let dep = stored
        .join("modules/lib/modules")
        .join(release)
        .join("modules.dep");
    assert!(dep.is_file());

    assert_booted(&f.vm_run(&[os("--kernel"), os(release)]));

    let again = f.hearth(&import);
    let all = text(&again);
    assert_eq!(again.status.code(), Some(2), "{all}");
    assert!(all.contains("already stored"), "{all}");
}

#[test]
fn a_kernel_without_stored_modules_is_refused_naming_each_way_to_give_them() {
    let f = fresh();
    let out = f.vm_run(&[os("--kernel"), f.kernel.as_os_str()]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    for way in ["--modules DIR", "hearth kernel import", "--no-modules"] {
        assert!(all.contains(way), "the refusal names {way:?}: {all}");
    }
    let runs = f.data.join("runs");
    assert!(!runs.exists() || std::fs::read_dir(runs).unwrap().count() == 0);

    let empty = f.dir.path().join("no-modules-here");
    std::fs::create_dir_all(&empty).unwrap();
    let out = f.vm_run(&[
        os("--kernel"),
        f.kernel.as_os_str(),
        os("--modules"),
        empty.as_os_str(),
    ]);
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
    let f = fresh();
    let out = f.vm_run(&[os("--kernel"), f.kernel.as_os_str(), os("--no-modules")]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(all.contains("root not mountable"), "{all}");
    assert!(all.contains("virtio_blk"), "{all}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&format!("\n{MARKER}")));
}
