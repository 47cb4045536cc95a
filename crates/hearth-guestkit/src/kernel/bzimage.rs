//! The x86 boot protocol's setup header, as far as finding a bzImage's
//! payload and version needs it (Documentation/arch/x86/boot.rst), and a
//! builder for synthetic bzImages that carry a given payload.

use std::ops::Range;

use super::{compress, inspect, Compression, FormatError};

const SETUP_SECTS: usize = 0x1f1;
const SYSSIZE: usize = 0x1f4;
const BOOT_FLAG: usize = 0x1fe;
const JUMP: usize = 0x200;
const HEADER_MAGIC: usize = 0x202;
const PROTOCOL: usize = 0x206;
const KERNEL_VERSION: usize = 0x20e;
const LOADFLAGS: usize = 0x211;
const XLOADFLAGS: usize = 0x236;
const PAYLOAD_OFFSET: usize = 0x248;
const PAYLOAD_LENGTH: usize = 0x24c;
/// Where the fields this module reads end.
const HEADER_END: usize = 0x250;
const SECTOR: usize = 512;
/// `kernel_version` points this far before the string it names.
const VERSION_BASE: usize = 0x200;
/// Protocol 2.08 added `payload_offset` and `payload_length`.
const MIN_PROTOCOL: u16 = 0x0208;
const MAX_VERSION_LEN: usize = 512;

/// The setup header fields that locate the payload and version string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupHeader {
    /// As stored: 0 means 4.
    pub setup_sects: u8,
    pub protocol: u16,
    /// Offset of the version string, minus 0x200; 0 when there is none.
    pub kernel_version: u16,
    /// Relative to the start of the protected-mode code.
    pub payload_offset: u32,
    pub payload_length: u32,
}

/// Whether `image` carries the boot protocol's "HdrS" magic.
pub(super) fn has_magic(image: &[u8]) -> bool {
    image.get(HEADER_MAGIC..HEADER_MAGIC + 4) == Some(b"HdrS")
}

impl SetupHeader {
    /// Reads the header of a file that has the "HdrS" magic.
    pub fn parse(image: &[u8]) -> Result<SetupHeader, FormatError> {
        if image.len() < HEADER_END {
            return Err(FormatError::Truncated {
                what: "bzImage setup header",
                needed: HEADER_END as u64,
                actual: image.len() as u64,
            });
        }
        let header = SetupHeader {
            setup_sects: image[SETUP_SECTS],
            protocol: read_u16(image, PROTOCOL),
            kernel_version: read_u16(image, KERNEL_VERSION),
            payload_offset: read_u32(image, PAYLOAD_OFFSET),
            payload_length: read_u32(image, PAYLOAD_LENGTH),
        };
        if header.protocol < MIN_PROTOCOL {
            return Err(FormatError::OldBootProtocol {
                version: header.protocol,
            });
        }
        Ok(header)
    }

    /// Where the protected-mode code (and so the payload's base) starts.
    pub fn protected_mode_start(&self) -> u64 {
        let sects = if self.setup_sects == 0 {
            4
        } else {
            self.setup_sects
        };
        (u64::from(sects) + 1) * SECTOR as u64
    }

    /// The payload's byte range in the file.
    pub fn payload_range(&self) -> Range<u64> {
        let start = self.protected_mode_start() + u64::from(self.payload_offset);
        start..start + u64::from(self.payload_length)
    }

    /// The compressed payload, checked to lie within `image`.
    pub fn payload<'a>(&self, image: &'a [u8]) -> Result<&'a [u8], FormatError> {
        let range = self.payload_range();
        if range.end > image.len() as u64 {
            return Err(FormatError::Truncated {
                what: "bzImage payload",
                needed: range.end,
                actual: image.len() as u64,
            });
        }
        Ok(&image[range.start as usize..range.end as usize])
    }

    /// The version string the header points at, if any.
    pub fn version(&self, image: &[u8]) -> Option<String> {
        if self.kernel_version == 0 {
            return None;
        }
        let at = usize::from(self.kernel_version) + VERSION_BASE;
        let tail = image.get(at..)?;
        let tail = &tail[..tail.len().min(MAX_VERSION_LEN)];
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        let text = String::from_utf8_lossy(&tail[..end]).trim().to_owned();
        (!text.is_empty()).then_some(text)
    }
}

fn read_u16(image: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([image[at], image[at + 1]])
}

fn read_u32(image: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(image[at..at + 4].try_into().expect("four bytes"))
}

/// Where the builder puts the version string.
const BUILT_VERSION_AT: usize = 0x280;
/// Zeros standing in for the decompressor code before the payload.
const BUILT_PAYLOAD_OFFSET: usize = 0x100;

/// A bzImage with a minimal setup header (protocol 2.15, 64-bit) around
/// `payload_compressed`, which is stored as given: append the kernel
/// build's 4-byte size trailer yourself, or use [`wrap_elf_as_bzimage`].
/// It is valid for hearth's parser, not bootable.
pub fn build_bzimage(payload_compressed: &[u8], version: &str) -> Vec<u8> {
    let version = &version.as_bytes()[..version.len().min(MAX_VERSION_LEN - 1)];
    let setup_len = (BUILT_VERSION_AT + version.len() + 1).div_ceil(SECTOR) * SECTOR;
    let mut image = vec![0u8; setup_len];
    write_setup_header(&mut image, setup_len, payload_compressed.len());
    image[BUILT_VERSION_AT..BUILT_VERSION_AT + version.len()].copy_from_slice(version);
    image.resize(setup_len + BUILT_PAYLOAD_OFFSET, 0);
    image.extend_from_slice(payload_compressed);
    image.resize(image.len().next_multiple_of(16), 0);
    let syssize = u32::try_from((image.len() - setup_len) / 16).unwrap_or(u32::MAX);
    image[SYSSIZE..SYSSIZE + 4].copy_from_slice(&syssize.to_le_bytes());
    image
}

fn write_setup_header(image: &mut [u8], setup_len: usize, payload_len: usize) {
    let setup_sects = u8::try_from(setup_len / SECTOR - 1).expect("version string is bounded");
    let kernel_version = u16::try_from(BUILT_VERSION_AT - VERSION_BASE).expect("small offset");
    let payload_len = u32::try_from(payload_len).unwrap_or(u32::MAX);
    image[SETUP_SECTS] = setup_sects;
    image[BOOT_FLAG..BOOT_FLAG + 2].copy_from_slice(&0xaa55u16.to_le_bytes());
    // A short jump over the header, as real images start with.
    image[JUMP..JUMP + 2].copy_from_slice(&[0xeb, 0x66]);
    image[HEADER_MAGIC..HEADER_MAGIC + 4].copy_from_slice(b"HdrS");
    image[PROTOCOL..PROTOCOL + 2].copy_from_slice(&0x020fu16.to_le_bytes());
    image[KERNEL_VERSION..KERNEL_VERSION + 2].copy_from_slice(&kernel_version.to_le_bytes());
    image[LOADFLAGS] = 0x01; // LOADED_HIGH
    image[XLOADFLAGS..XLOADFLAGS + 2].copy_from_slice(&0x0001u16.to_le_bytes()); // XLF_KERNEL_64
    let offset = BUILT_PAYLOAD_OFFSET as u32;
    image[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(&offset.to_le_bytes());
    image[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4].copy_from_slice(&payload_len.to_le_bytes());
}

/// Compresses `elf` and wraps it in a bzImage as the kernel build does:
/// the compressed stream followed by the 4-byte little-endian size of the
/// uncompressed ELF. The version string is taken from the ELF's
/// "Linux version" banner when it has one.
pub fn wrap_elf_as_bzimage(elf: &[u8], compression: Compression) -> Vec<u8> {
    let mut payload = compress(elf, compression);
    let size = u32::try_from(elf.len()).unwrap_or(u32::MAX);
    payload.extend_from_slice(&size.to_le_bytes());
    let version = inspect::elf_banner(elf).unwrap_or_else(|| "hearth synthetic".to_owned());
    build_bzimage(&payload, &version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_writes_what_the_parser_reads() {
        let image = build_bzimage(b"PAYLOAD", "6.1.0-test (someone@somewhere) #1");
        assert!(has_magic(&image));
        let header = SetupHeader::parse(&image).unwrap();
        assert_eq!(header.setup_sects, 1);
        assert_eq!(header.protected_mode_start(), 1024);
        assert_eq!(header.payload(&image).unwrap(), b"PAYLOAD");
        assert_eq!(
            header.version(&image).as_deref(),
            Some("6.1.0-test (someone@somewhere) #1")
        );
    }

    #[test]
    fn zero_setup_sects_means_four() {
        let header = SetupHeader {
            setup_sects: 0,
            protocol: 0x020f,
            kernel_version: 0,
            payload_offset: 0x10,
            payload_length: 0x20,
        };
        assert_eq!(header.protected_mode_start(), 5 * 512);
        assert_eq!(header.payload_range(), 2576..2608);
    }

    #[test]
    fn a_long_version_moves_the_protected_mode_code() {
        let version = "v".repeat(400);
        let image = build_bzimage(b"P", &version);
        let header = SetupHeader::parse(&image).unwrap();
        assert_eq!(header.setup_sects, 2);
        assert_eq!(header.version(&image), Some(version));
        assert_eq!(header.payload(&image).unwrap(), b"P");
    }

    #[test]
    fn a_payload_past_the_end_is_truncation() {
        let image = build_bzimage(&[7u8; 1000], "v");
        let cut = &image[..image.len() - 500];
        let header = SetupHeader::parse(cut).unwrap();
        let err = header.payload(cut).unwrap_err();
        assert!(
            matches!(err, FormatError::Truncated { what: "bzImage payload", needed, .. }
                if needed == 1024 + 0x100 + 1000),
            "{err}"
        );
    }

    #[test]
    fn a_short_header_is_truncation() {
        let image = build_bzimage(b"P", "v");
        let err = SetupHeader::parse(&image[..0x210]).unwrap_err();
        assert!(matches!(
            err,
            FormatError::Truncated {
                what: "bzImage setup header",
                ..
            }
        ));
    }

    #[test]
    fn protocols_before_2_08_are_refused() {
        let mut image = build_bzimage(b"P", "v");
        image[PROTOCOL..PROTOCOL + 2].copy_from_slice(&0x0204u16.to_le_bytes());
        let err = SetupHeader::parse(&image).unwrap_err();
        assert!(err.to_string().contains("2.04 predates 2.08"), "{err}");
    }

    #[test]
    fn no_version_pointer_means_no_version() {
        let mut image = build_bzimage(b"P", "v");
        image[KERNEL_VERSION..KERNEL_VERSION + 2].fill(0);
        assert_eq!(SetupHeader::parse(&image).unwrap().version(&image), None);
    }

    #[test]
    fn wrapping_appends_the_size_trailer() {
        let image = wrap_elf_as_bzimage(b"not really an elf", Compression::Gzip);
        let header = SetupHeader::parse(&image).unwrap();
        let payload = header.payload(&image).unwrap();
        assert_eq!(payload[payload.len() - 4..], 17u32.to_le_bytes());
        assert_eq!(Compression::detect(payload), Some(Compression::Gzip));
    }
}
