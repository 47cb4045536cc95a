//! Kernel formats against the real Debian cloud kernel (fetched once into
//! the shared test data directory) and against bzImages rebuilt from its
//! vmlinux with each of the kernel build's six compressions.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use hearth_guestkit::kernel::{
    self, build_bzimage, compress, ensure_elf, extract_to, extract_vmlinux, extract_vmlinux_bytes,
    inspect, inspect_bytes, Compression, KernelAssets, KernelFormat,
};
use hearth_guestkit::DataDir;

fn real_kernel() -> &'static KernelAssets {
    static ASSETS: OnceLock<KernelAssets> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let data = DataDir::new(hearth_testkit::test_data_dir());
        kernel::fetch_debian_cloud_kernel(&data, &mut |line| eprintln!("fetch: {line}"))
            .unwrap_or_else(|e| panic!("fetching the test kernel: {}", chain(&e)))
    })
}

/// The real kernel's vmlinux, extracted once per test process.
fn real_vmlinux() -> &'static [u8] {
    static ELF: OnceLock<Vec<u8>> = OnceLock::new();
    ELF.get_or_init(|| {
        let started = Instant::now();
        let elf = extract_vmlinux(&real_kernel().vmlinuz).unwrap();
        eprintln!("extracted {} bytes in {:?}", elf.len(), started.elapsed());
        elf
    })
}

/// The error and all its sources, as `hearth` prints them.
fn chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

fn write_temp(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

/// Asserts that inspecting and extracting `data` (written as `name`) both
/// fail with a message naming the file and containing `problem`, and that
/// extraction leaves no output behind.
fn assert_refused(name: &str, data: &[u8], problem: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(dir.path(), name, data);
    let out = dir.path().join("vmlinux");
    let inspected = chain(&inspect(&path).unwrap_err());
    let extracted = chain(&extract_to(&path, &out).unwrap_err());
    for message in [inspected, extracted] {
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(problem), "{message}");
    }
    assert!(!out.exists(), "a failed extract left {}", out.display());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temporary files were left behind");
}

#[test]
fn the_real_kernel_is_an_lz4_bzimage_with_its_release() {
    let assets = real_kernel();
    let info = inspect(&assets.vmlinuz).unwrap();
    assert_eq!(
        info.format,
        KernelFormat::BzImage {
            compression: Compression::Lz4
        }
    );
    assert_eq!(info.release(), Some(assets.version.as_str()));
    assert!(info.to_string().contains("lz4"), "{info}");
}

#[test]
fn the_real_kernel_extracts_to_an_x86_64_elf() {
    let elf = real_vmlinux();
    let info = inspect_bytes(elf).unwrap();
    assert_eq!(info.format, KernelFormat::Elf);
    assert_eq!(info.release(), Some(real_kernel().version.as_str()));
}

#[test]
fn extract_to_writes_the_elf_and_describes_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vmlinux");
    let info = extract_to(&real_kernel().vmlinuz, &out).unwrap();
    assert_eq!(info.format, KernelFormat::Elf);
    assert_eq!(info.size, std::fs::metadata(&out).unwrap().len());
    assert_eq!(inspect(&out).unwrap().format, KernelFormat::Elf);
}

#[test]
fn ensure_elf_extracts_a_bzimage_once_and_passes_an_elf_through() {
    let cache = tempfile::tempdir().unwrap();
    let elf = ensure_elf(&real_kernel().vmlinuz, cache.path()).unwrap();
    let name = elf.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(name.starts_with("vmlinux-") && name.ends_with(".elf") && name.len() == 28);
    let modified = std::fs::metadata(&elf).unwrap().modified().unwrap();
    let started = Instant::now();
    assert_eq!(
        ensure_elf(&real_kernel().vmlinuz, cache.path()).unwrap(),
        elf
    );
    eprintln!("cached ensure_elf took {:?}", started.elapsed());
    assert_eq!(
        std::fs::metadata(&elf).unwrap().modified().unwrap(),
        modified
    );
    assert_eq!(ensure_elf(&elf, cache.path()).unwrap(), elf);
}

/// Rebuilds the real vmlinux as a bzImage compressed with `compression`
/// and checks inspect and extract see through it.
fn assert_round_trip(compression: Compression) {
    let elf = real_vmlinux();
    let started = Instant::now();
    let image = kernel::wrap_elf_as_bzimage(elf, compression);
    let compressed = started.elapsed();
    let info = inspect_bytes(&image).unwrap();
    assert_eq!(info.format, KernelFormat::BzImage { compression });
    assert_eq!(info.release(), Some(real_kernel().version.as_str()));
    let started = Instant::now();
    let extracted = extract_vmlinux_bytes(&image).unwrap();
    eprintln!(
        "{compression}: compressed in {compressed:?}, extracted in {:?}",
        started.elapsed()
    );
    assert!(
        extracted == elf,
        "{compression}: the extracted ELF differs from the original"
    );
}

#[test]
fn recompressed_gzip() {
    assert_round_trip(Compression::Gzip);
}

#[test]
fn recompressed_xz() {
    assert_round_trip(Compression::Xz);
}

#[test]
fn recompressed_zstd() {
    assert_round_trip(Compression::Zstd);
}

#[test]
fn recompressed_lz4() {
    assert_round_trip(Compression::Lz4);
}

#[test]
fn recompressed_lzma() {
    assert_round_trip(Compression::Lzma);
}

#[test]
fn recompressed_bzip2() {
    assert_round_trip(Compression::Bzip2);
}

#[test]
fn a_truncated_bzimage_is_refused() {
    let image = std::fs::read(&real_kernel().vmlinuz).unwrap();
    assert_refused("cut.bzImage", &image[..image.len() / 2], "truncated");
}

#[test]
fn a_bzimage_cut_inside_its_header_is_refused() {
    let image = build_bzimage(b"\x1f\x8b", "v");
    assert_refused(
        "header.bzImage",
        &image[..0x220],
        "setup header ends at byte 592",
    );
}

#[test]
fn a_garbage_file_is_refused() {
    assert_refused("garbage", &[0x5a; 4096], "not a kernel");
}

#[test]
fn an_empty_file_is_refused() {
    assert_refused("empty", b"", "the file is empty");
}

#[test]
fn a_payload_that_is_not_an_elf_is_refused() {
    let text = b"this is not a kernel, just some text";
    let mut payload = compress(text, Compression::Gzip);
    payload.extend_from_slice(&(text.len() as u32).to_le_bytes());
    let image = build_bzimage(&payload, "6.1.0-fake");
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(dir.path(), "text.bzImage", &image);
    assert_eq!(
        inspect(&path).unwrap().format,
        KernelFormat::BzImage {
            compression: Compression::Gzip
        }
    );
    let out = dir.path().join("vmlinux");
    let message = chain(&extract_to(&path, &out).unwrap_err());
    assert!(message.contains("not an ELF vmlinux"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(!out.exists());
}

#[test]
fn a_corrupt_payload_is_refused() {
    let elf = &real_vmlinux()[..1 << 20];
    let mut image = kernel::wrap_elf_as_bzimage(elf, Compression::Gzip);
    let middle = image.len() / 2;
    image[middle..middle + 64].fill(0);
    let message = chain(&extract_vmlinux_bytes(&image).unwrap_err());
    assert!(message.contains("gzip payload is corrupt"), "{message}");
}

#[test]
fn extracting_an_elf_says_there_is_nothing_to_do() {
    let message = chain(&extract_vmlinux_bytes(real_vmlinux()).unwrap_err());
    assert!(message.contains("already an ELF vmlinux"), "{message}");
}
