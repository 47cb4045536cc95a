//! Saying what a kernel file is: an x86-64 ELF vmlinux or a bzImage (and
//! how its payload is compressed), and which kernel version it holds.

use std::fmt;
use std::path::Path;

use super::bzimage::{self, SetupHeader};
use super::{hex_start, Compression, FormatError, KernelError};

const ELF_MAGIC: &[u8] = b"\x7fELF";
const ELF_HEADER_LEN: usize = 64;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EM_X86_64: u16 = 62;
const BANNER: &[u8] = b"Linux version ";
const MAX_BANNER_LEN: usize = 512;

/// The two kernel file formats hearth boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// An uncompressed ELF64 x86-64 vmlinux, as Firecracker loads.
    Elf,
    /// A bzImage (what distributions ship as `vmlinuz`), as QEMU loads.
    BzImage { compression: Compression },
}

impl fmt::Display for KernelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelFormat::Elf => f.write_str("ELF vmlinux (x86-64)"),
            KernelFormat::BzImage { compression } => {
                write!(f, "bzImage ({compression}-compressed payload)")
            }
        }
    }
}

/// What [`inspect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    pub format: KernelFormat,
    /// The version string: from the setup header of a bzImage, from the
    /// "Linux version" banner of an ELF.
    pub version: Option<String>,
    /// The file's size in bytes.
    pub size: u64,
}

impl KernelInfo {
    /// The kernel release (`uname -r`), the version string's first word.
    pub fn release(&self) -> Option<&str> {
        self.version.as_deref()?.split_whitespace().next()
    }
}

impl fmt::Display for KernelInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "format:  {}", self.format)?;
        match &self.version {
            Some(version) => writeln!(f, "version: {version}")?,
            None => writeln!(f, "version: unknown (the file carries no version string)")?,
        }
        let mib = self.size as f64 / f64::from(1 << 20);
        write!(f, "size:    {} bytes ({mib:.1} MiB)", self.size)
    }
}

/// What a file holds, with the bzImage payload located.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind<'a> {
    Elf,
    BzImage {
        header: SetupHeader,
        compression: Compression,
        payload: &'a [u8],
    },
}

/// Says what the kernel file at `path` is.
pub fn inspect(path: &Path) -> Result<KernelInfo, KernelError> {
    let data = read(path)?;
    inspect_bytes(&data).map_err(|source| KernelError::Format {
        path: path.to_owned(),
        source,
    })
}

/// Says what the kernel file contents `data` are.
pub fn inspect_bytes(data: &[u8]) -> Result<KernelInfo, FormatError> {
    let (format, version) = match classify(data)? {
        Kind::Elf => (KernelFormat::Elf, elf_banner(data)),
        Kind::BzImage {
            header,
            compression,
            ..
        } => (KernelFormat::BzImage { compression }, header.version(data)),
    };
    Ok(KernelInfo {
        format,
        version,
        size: data.len() as u64,
    })
}

pub(super) fn read(path: &Path) -> Result<Vec<u8>, KernelError> {
    std::fs::read(path).map_err(|source| KernelError::Io {
        path: path.to_owned(),
        source,
    })
}

pub(super) fn classify(data: &[u8]) -> Result<Kind<'_>, FormatError> {
    if data.is_empty() {
        return Err(FormatError::Empty);
    }
    if data.starts_with(ELF_MAGIC) {
        check_elf(data)?;
        return Ok(Kind::Elf);
    }
    if !bzimage::has_magic(data) {
        return Err(FormatError::NotAKernel {
            start: hex_start(data),
        });
    }
    let header = SetupHeader::parse(data)?;
    let payload = header.payload(data)?;
    let compression =
        Compression::detect(payload).ok_or_else(|| FormatError::UnknownCompression {
            start: hex_start(payload),
        })?;
    Ok(Kind::BzImage {
        header,
        compression,
        payload,
    })
}

pub(super) fn is_elf(data: &[u8]) -> bool {
    data.starts_with(ELF_MAGIC)
}

/// Checks that an ELF file is a 64-bit little-endian x86-64 one.
pub(super) fn check_elf(data: &[u8]) -> Result<(), FormatError> {
    if data.len() < ELF_HEADER_LEN {
        return Err(FormatError::Truncated {
            what: "ELF header",
            needed: ELF_HEADER_LEN as u64,
            actual: data.len() as u64,
        });
    }
    let (class, encoding) = (data[4], data[5]);
    let machine = u16::from_le_bytes([data[0x12], data[0x13]]);
    if class != ELFCLASS64 || encoding != ELFDATA2LSB || machine != EM_X86_64 {
        return Err(FormatError::WrongElf {
            class,
            data: encoding,
            machine,
        });
    }
    Ok(())
}

/// The text after "Linux version " and a digit. Kernels since 6.1 carry
/// two banners, one without the build number ("# SMP"), so the first one
/// with a build number ("#1 SMP") wins, else the first one.
pub(super) fn elf_banner(elf: &[u8]) -> Option<String> {
    let mut first = None;
    let mut from = 0;
    while let Some(found) = find(&elf[from..], BANNER) {
        let at = from + found + BANNER.len();
        from = at;
        if !elf.get(at).is_some_and(u8::is_ascii_digit) {
            continue;
        }
        let banner = line_at(&elf[at..]);
        if has_build_number(&banner) {
            return Some(banner);
        }
        first.get_or_insert(banner);
    }
    first
}

fn has_build_number(banner: &str) -> bool {
    banner.split_whitespace().any(|word| {
        word.len() > 1
            && word.starts_with('#')
            && word[1..].starts_with(|c: char| c.is_ascii_digit())
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut from = 0;
    while let Some(i) = haystack[from..].iter().position(|&b| b == first) {
        let at = from + i;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn line_at(bytes: &[u8]) -> String {
    let bytes = &bytes[..bytes.len().min(MAX_BANNER_LEN)];
    let end = bytes
        .iter()
        .position(|&b| b == 0 || b == b'\n')
        .unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-byte x86-64 ELF header followed by `rest`.
    fn elf(rest: &[u8]) -> Vec<u8> {
        let mut data = vec![0u8; ELF_HEADER_LEN];
        data[..4].copy_from_slice(ELF_MAGIC);
        data[4] = ELFCLASS64;
        data[5] = ELFDATA2LSB;
        data[0x12..0x14].copy_from_slice(&EM_X86_64.to_le_bytes());
        data.extend_from_slice(rest);
        data
    }

    #[test]
    fn an_elf_reports_its_banner() {
        let data = elf(b"xx Linux version %s\0Linux version 6.1.0-9-amd64 (x@y) #1\n\0");
        let info = inspect_bytes(&data).unwrap();
        assert_eq!(info.format, KernelFormat::Elf);
        assert_eq!(info.version.as_deref(), Some("6.1.0-9-amd64 (x@y) #1"));
        assert_eq!(info.release(), Some("6.1.0-9-amd64"));
    }

    #[test]
    fn the_banner_with_a_build_number_wins() {
        let data = elf(b"Linux version 6.1.0 (x@y) # SMP\n\0Linux version 6.1.0 (x@y) #1 SMP\n");
        let info = inspect_bytes(&data).unwrap();
        assert_eq!(info.version.as_deref(), Some("6.1.0 (x@y) #1 SMP"));
        let data = elf(b"Linux version 6.1.0 (x@y) # SMP\n");
        assert_eq!(
            inspect_bytes(&data).unwrap().version.as_deref(),
            Some("6.1.0 (x@y) # SMP")
        );
    }

    #[test]
    fn an_elf_without_banner_has_no_version() {
        assert_eq!(inspect_bytes(&elf(b"")).unwrap().version, None);
    }

    #[test]
    fn a_32_bit_or_foreign_elf_is_refused() {
        let mut data = elf(b"");
        data[0x12] = 183; // aarch64
        let err = inspect_bytes(&data).unwrap_err();
        assert!(matches!(err, FormatError::WrongElf { machine: 183, .. }));
        let mut data = elf(b"");
        data[4] = 1;
        assert!(matches!(
            inspect_bytes(&data),
            Err(FormatError::WrongElf { class: 1, .. })
        ));
    }

    #[test]
    fn a_short_elf_is_truncation() {
        let err = inspect_bytes(b"\x7fELF\x02\x01").unwrap_err();
        assert!(matches!(
            err,
            FormatError::Truncated {
                what: "ELF header",
                ..
            }
        ));
    }

    #[test]
    fn empty_and_garbage_are_told_apart() {
        assert!(matches!(inspect_bytes(b""), Err(FormatError::Empty)));
        let err = inspect_bytes(b"hello world").unwrap_err();
        assert!(err.to_string().contains("68 65 6c 6c 6f 20 77 6f"), "{err}");
    }

    #[test]
    fn a_bzimage_reports_compression_and_version() {
        let image = bzimage::build_bzimage(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0], "6.1.0 #1");
        let info = inspect_bytes(&image).unwrap();
        assert_eq!(
            info.format,
            KernelFormat::BzImage {
                compression: Compression::Zstd
            }
        );
        assert_eq!(info.version.as_deref(), Some("6.1.0 #1"));
        let shown = info.to_string();
        assert!(
            shown.contains("bzImage (zstd-compressed payload)"),
            "{shown}"
        );
    }

    #[test]
    fn an_unknown_payload_compression_is_named() {
        let image = bzimage::build_bzimage(b"\x00\x01\x02\x03", "v");
        let err = inspect_bytes(&image).unwrap_err();
        assert!(err.to_string().contains("starts with 00 01 02 03"), "{err}");
    }
}
