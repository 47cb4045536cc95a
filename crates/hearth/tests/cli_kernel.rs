//! `hearth kernel fetch|inspect|extract` as a user runs them: output on
//! success, and on a bad file a `hearth: error:` line on stderr that names
//! the file and the problem, a non-zero exit, and no output file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use hearth_guestkit::kernel::{build_bzimage, compress, Compression};

fn hearth(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .env("HEARTH_DATA_DIR", hearth_testkit::test_data_dir())
        .output()
        .expect("running hearth")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The real kernel, fetched through the CLI once per test process.
fn real_vmlinuz() -> &'static Path {
    static VMLINUZ: OnceLock<PathBuf> = OnceLock::new();
    VMLINUZ.get_or_init(|| {
        let out = hearth(&["kernel".as_ref(), "fetch".as_ref()]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("kernel:"))
            .unwrap_or_else(|| panic!("fetch did not say where the kernel is: {stdout}"));
        PathBuf::from(line.trim())
    })
}

/// Runs inspect and extract on `data` (written as `name`) and checks both
/// fail cleanly with `problem` in the message.
fn assert_refused(name: &str, data: &[u8], problem: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, data).unwrap();
    let out_file = dir.path().join("vmlinux");
    let inspect = hearth(&["kernel".as_ref(), "inspect".as_ref(), path.as_os_str()]);
    let extract = hearth(&[
        "kernel".as_ref(),
        "extract".as_ref(),
        path.as_os_str(),
        "-o".as_ref(),
        out_file.as_os_str(),
    ]);
    for out in [inspect, extract] {
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.starts_with("hearth: error: "), "{stderr}");
        assert!(stderr.contains(&path.display().to_string()), "{stderr}");
        assert!(stderr.contains(problem), "{stderr}");
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    }
    assert!(!out_file.exists(), "a failed extract left its output");
}

#[test]
fn fetch_prints_where_the_kernel_is_stored() {
    let out = hearth(&["kernel".as_ref(), "fetch".as_ref()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let data = hearth_testkit::test_data_dir();
    assert!(stdout.contains(&data.display().to_string()), "{stdout}");
    assert!(stdout.contains("modules:"), "{stdout}");
}

#[test]
fn inspect_describes_the_real_kernel() {
    let out = hearth(&[
        "kernel".as_ref(),
        "inspect".as_ref(),
        real_vmlinuz().as_os_str(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("bzImage (lz4-compressed payload)"),
        "{stdout}"
    );
    assert!(stdout.contains("version: 6."), "{stdout}");
    assert!(stdout.contains("size:"), "{stdout}");
}

#[test]
fn extract_writes_the_elf_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("vmlinux");
    let out = hearth(&[
        "kernel".as_ref(),
        "extract".as_ref(),
        real_vmlinuz().as_os_str(),
        "-o".as_ref(),
        out_file.as_os_str(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.starts_with("wrote "), "{stdout}");
    assert!(stdout.contains("ELF vmlinux 6."), "{stdout}");
    let elf = std::fs::read(&out_file).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    let inspect = hearth(&["kernel".as_ref(), "inspect".as_ref(), out_file.as_os_str()]);
    assert!(text(&inspect.stdout).contains("ELF vmlinux (x86-64)"));
}

#[test]
fn a_truncated_bzimage_is_an_error() {
    let image = std::fs::read(real_vmlinuz()).unwrap();
    assert_refused("cut.bzImage", &image[..image.len() / 2], "truncated");
}

#[test]
fn a_garbage_file_is_an_error() {
    assert_refused("garbage", &[0x5a; 4096], "not a kernel");
}

#[test]
fn an_empty_file_is_an_error() {
    assert_refused("empty", b"", "the file is empty");
}

#[test]
fn a_bzimage_whose_payload_is_not_an_elf_is_an_error() {
    let mut payload = compress(b"plain text, not a kernel", Compression::Xz);
    payload.extend_from_slice(&24u32.to_le_bytes());
    let image = build_bzimage(&payload, "6.1.0-fake");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("text.bzImage");
    std::fs::write(&path, image).unwrap();
    let out_file = dir.path().join("vmlinux");
    let out = hearth(&[
        "kernel".as_ref(),
        "extract".as_ref(),
        path.as_os_str(),
        "-o".as_ref(),
        out_file.as_os_str(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not an ELF vmlinux"), "{stderr}");
    assert!(!out_file.exists());
}

#[test]
fn a_missing_file_is_an_error() {
    let out = hearth(&[
        "kernel".as_ref(),
        "inspect".as_ref(),
        "/nonexistent/vmlinuz".as_ref(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("could not read /nonexistent/vmlinuz"),
        "{stderr}"
    );
}
