//! Guest kernels: what a file is (ELF vmlinux or bzImage and its payload
//! compression), the ELF out of a bzImage, and fetching Debian's kernel.
//!
//! QEMU boots a bzImage directly but Firecracker only loads an ELF vmlinux,
//! and distributions ship only the bzImage (`vmlinuz`). This module turns
//! one into the other in-process, for every compression the kernel build
//! can use, and says plainly what is wrong with a file it cannot use.

mod bzimage;
mod compress;
mod decompress;
mod extract;
mod fetch;
mod import;
mod inspect;
mod lz4_legacy;

use std::fmt;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use bzimage::{build_bzimage, wrap_elf_as_bzimage, SetupHeader};
pub use compress::compress;
pub use decompress::MAX_DECOMPRESSED;
pub use extract::{ensure_elf, extract_to, extract_vmlinux, extract_vmlinux_bytes};
pub use fetch::{default_kernel, fetch_debian_cloud_kernel, FetchError, KernelAssets};
pub use import::{
    import, modules_release_dir, release_of, stored_kernel, stored_modules, ImportError,
    ImportedKernel, KernelModules, BUILT_IN_MARKER,
};
pub use inspect::{inspect, inspect_bytes, KernelFormat, KernelInfo};

/// How a bzImage's payload (the compressed vmlinux) is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    Gzip,
    Xz,
    Zstd,
    /// The LZ4 "legacy" frame (`lz4 -l`), the only LZ4 framing the kernel uses.
    Lz4,
    /// The "lzma alone" format (`.lzma`), not xz.
    Lzma,
    Bzip2,
}

impl Compression {
    /// Every compression the kernel build offers.
    pub const ALL: [Compression; 6] = [
        Compression::Gzip,
        Compression::Xz,
        Compression::Zstd,
        Compression::Lz4,
        Compression::Lzma,
        Compression::Bzip2,
    ];

    /// Recognises a compressed stream by its first bytes.
    pub fn detect(data: &[u8]) -> Option<Compression> {
        const MAGICS: [(&[u8], Compression); 6] = [
            (&[0x1f, 0x8b], Compression::Gzip),
            (&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], Compression::Xz),
            (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
            (&[0x02, 0x21, 0x4c, 0x18], Compression::Lz4),
            (&[0x5d, 0x00, 0x00], Compression::Lzma),
            (&[0x42, 0x5a, 0x68], Compression::Bzip2),
        ];
        MAGICS
            .iter()
            .find(|(magic, _)| data.starts_with(magic))
            .map(|&(_, c)| c)
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
            Compression::Lzma => "lzma",
            Compression::Bzip2 => "bzip2",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a kernel file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("could not read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} cannot be used as a kernel")]
    Format {
        path: PathBuf,
        #[source]
        source: FormatError,
    },
    #[error("no kernel has been fetched ({file} does not exist); run `hearth kernel fetch`")]
    NoDefaultKernel { file: PathBuf },
    #[error(
        "the default kernel {version} is incomplete ({missing} is missing); \
         run `hearth kernel fetch` again"
    )]
    IncompleteKernel { version: String, missing: PathBuf },
    #[error("{file} names no usable kernel version; run `hearth kernel fetch` again")]
    BadDefaultFile { file: PathBuf },
}

/// What is wrong with the bytes of a kernel file, independent of where
/// they came from. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("the file is empty; pass a vmlinuz (bzImage) or vmlinux (ELF) file")]
    Empty,
    #[error(
        "not a kernel: no ELF magic at offset 0 and no bzImage \"HdrS\" magic at 0x202 \
         (the file starts with {start}); pass a vmlinuz (bzImage) or vmlinux (ELF) file"
    )]
    NotAKernel { start: String },
    #[error(
        "truncated: the {what} ends at byte {needed} but the file has only {actual} bytes; \
         the file was cut short, download the kernel again"
    )]
    Truncated {
        what: &'static str,
        needed: u64,
        actual: u64,
    },
    #[error(
        "bzImage boot protocol {major}.{minor:02} predates 2.08 and does not say where its \
         payload is; use a kernel built after 2008",
        major = version >> 8,
        minor = version & 0xff
    )]
    OldBootProtocol { version: u16 },
    #[error(
        "the bzImage payload's compression is not recognised (it starts with {start}); \
         supported: gzip, xz, zstd, lz4, lzma, bzip2"
    )]
    UnknownCompression { start: String },
    #[error(
        "the {compression} payload is corrupt or cut short; the bzImage is damaged, \
         download the kernel again"
    )]
    Decompress {
        compression: Compression,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the {compression} payload decompresses to more than {limit} bytes; \
         refusing it as a likely decompression bomb"
    )]
    TooLarge {
        compression: Compression,
        limit: usize,
    },
    #[error(
        "the payload, once {compression}-decompressed, is not an ELF vmlinux (it starts \
         with {start}); the bzImage is damaged or was not built by the kernel build"
    )]
    PayloadNotElf {
        compression: Compression,
        start: String,
    },
    #[error(
        "an ELF file but not a 64-bit little-endian x86-64 kernel (class {class}, \
         data {data}, machine {machine}); hearth boots x86-64 guests only"
    )]
    WrongElf { class: u8, data: u8, machine: u16 },
    #[error("already an ELF vmlinux: there is nothing to extract, use the file as it is")]
    AlreadyElf,
}

/// Writes `data` to `path` through a temporary file in the same directory
/// and a rename, so that `path` never holds a partial file. Creates the
/// directory if needed.
fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(data)?;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The first bytes of `data` in hex, for messages about unrecognised files.
fn hex_start(data: &[u8]) -> String {
    let shown = &data[..data.len().min(8)];
    if shown.is_empty() {
        return "nothing".to_owned();
    }
    shown
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_knows_every_magic_and_nothing_else() {
        for c in Compression::ALL {
            let data = compress(b"some payload bytes", c);
            assert_eq!(Compression::detect(&data), Some(c), "{c}");
        }
        assert_eq!(Compression::detect(b"\x7fELF"), None);
        assert_eq!(Compression::detect(b""), None);
    }

    #[test]
    fn hex_start_shows_at_most_eight_bytes() {
        assert_eq!(hex_start(b"\x00\x01"), "00 01");
        assert_eq!(hex_start(&[0xab; 20]).split(' ').count(), 8);
        assert_eq!(hex_start(b""), "nothing");
    }
}
