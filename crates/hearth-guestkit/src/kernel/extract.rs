//! Getting the ELF vmlinux out of a bzImage, and [`ensure_elf`], which
//! gives a VMM that only loads ELF kernels (Firecracker) an ELF for any
//! kernel file, extracting and caching it once.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::decompress::{decompress, MAX_DECOMPRESSED};
use super::inspect::{check_elf, classify, elf_banner, is_elf, read, Kind};
use super::{
    hex_start, write_atomically, Compression, FormatError, KernelError, KernelFormat, KernelInfo,
};

/// Hex digits of the bzImage's SHA-256 in a cached vmlinux's name.
const CACHE_HASH_LEN: usize = 16;

/// The ELF vmlinux inside the bzImage contents `image`.
pub fn extract_vmlinux_bytes(image: &[u8]) -> Result<Vec<u8>, FormatError> {
    match classify(image)? {
        Kind::Elf => Err(FormatError::AlreadyElf),
        Kind::BzImage {
            compression,
            payload,
            ..
        } => {
            let elf = decompress(payload, compression, MAX_DECOMPRESSED)?;
            check_payload(&elf, compression)?;
            Ok(elf)
        }
    }
}

/// The ELF vmlinux inside the bzImage at `bzimage`.
pub fn extract_vmlinux(bzimage: &Path) -> Result<Vec<u8>, KernelError> {
    let image = read(bzimage)?;
    extract_vmlinux_bytes(&image).map_err(|source| format_error(bzimage, source))
}

/// Writes the ELF vmlinux inside `bzimage` to `out` (through a temporary
/// file and a rename, so `out` is whole or absent) and describes it.
pub fn extract_to(bzimage: &Path, out: &Path) -> Result<KernelInfo, KernelError> {
    let elf = extract_vmlinux(bzimage)?;
    write_atomically(out, &elf).map_err(|source| KernelError::Write {
        path: out.to_owned(),
        source,
    })?;
    Ok(KernelInfo {
        format: KernelFormat::Elf,
        version: elf_banner(&elf),
        size: elf.len() as u64,
    })
}

/// An ELF vmlinux for `kernel`: the file itself when it is one, else the
/// ELF extracted from the bzImage into
/// `cache_dir/vmlinux-<sha256 prefix of the bzImage>.elf`, reused when
/// already there.
pub fn ensure_elf(kernel: &Path, cache_dir: &Path) -> Result<PathBuf, KernelError> {
    let image = read(kernel)?;
    let kind = classify(&image).map_err(|source| format_error(kernel, source))?;
    if let Kind::Elf = kind {
        return Ok(kernel.to_owned());
    }
    let cached = cache_dir.join(format!("vmlinux-{}.elf", short_sha256(&image)));
    if cached.is_file() {
        return Ok(cached);
    }
    let elf = extract_vmlinux_bytes(&image).map_err(|source| format_error(kernel, source))?;
    write_atomically(&cached, &elf).map_err(|source| KernelError::Write {
        path: cached.clone(),
        source,
    })?;
    tracing::info!(kernel = %kernel.display(), elf = %cached.display(), "extracted vmlinux");
    Ok(cached)
}

fn check_payload(elf: &[u8], compression: Compression) -> Result<(), FormatError> {
    if !is_elf(elf) {
        return Err(FormatError::PayloadNotElf {
            compression,
            start: hex_start(elf),
        });
    }
    check_elf(elf)
}

fn short_sha256(data: &[u8]) -> String {
    let mut digest = hex::encode(Sha256::digest(data));
    digest.truncate(CACHE_HASH_LEN);
    digest
}

fn format_error(path: &Path, source: FormatError) -> KernelError {
    KernelError::Format {
        path: path.to_owned(),
        source,
    }
}
