//! Decompressing a bzImage payload in-process, for each of the kernel
//! build's compressions. The build appends the uncompressed size as four
//! bytes after every compressed stream, so each decoder stops at the end
//! of its (single) stream and ignores what follows. Output is capped so a
//! crafted payload cannot exhaust memory.

use std::io::{self, Read};

use xz2::stream::{Action, Status, Stream};

use super::lz4_legacy::{self, Lz4LegacyError};
use super::{Compression, FormatError};

/// The most a payload may decompress to; real kernels are well under
/// 100 MiB.
pub const MAX_DECOMPRESSED: usize = 512 << 20;
/// The most liblzma and zstd may allocate for their windows.
const ZSTD_WINDOW_LOG_MAX: u32 = 31;

/// Why a decoder stopped.
enum Failure {
    TooLarge,
    Corrupt(io::Error),
}

/// Decompresses `payload`, refusing output beyond `limit` bytes.
pub(super) fn decompress(
    payload: &[u8],
    compression: Compression,
    limit: usize,
) -> Result<Vec<u8>, FormatError> {
    let result = match compression {
        Compression::Gzip => read_capped(flate2::bufread::GzDecoder::new(payload), limit),
        Compression::Bzip2 => read_capped(bzip2::bufread::BzDecoder::new(payload), limit),
        Compression::Zstd => zstd_frame(payload, limit),
        Compression::Xz => liblzma(Stream::new_stream_decoder(u64::MAX, 0), payload, limit),
        Compression::Lzma => liblzma(Stream::new_lzma_decoder(u64::MAX), payload, limit),
        Compression::Lz4 => lz4(payload, limit),
    };
    result.map_err(|failure| match failure {
        Failure::TooLarge => FormatError::TooLarge { compression, limit },
        Failure::Corrupt(source) => FormatError::Decompress {
            compression,
            source,
        },
    })
}

fn read_capped(reader: impl Read, limit: usize) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(Failure::Corrupt)?;
    if out.len() > limit {
        return Err(Failure::TooLarge);
    }
    Ok(out)
}

/// One zstd frame: a second "frame" would be the size trailer.
fn zstd_frame(payload: &[u8], limit: usize) -> Result<Vec<u8>, Failure> {
    let mut decoder = zstd::stream::read::Decoder::with_buffer(payload)
        .map_err(Failure::Corrupt)?
        .single_frame();
    decoder
        .window_log_max(ZSTD_WINDOW_LOG_MAX)
        .map_err(Failure::Corrupt)?;
    read_capped(decoder, limit)
}

/// Drives a liblzma decoder (xz or lzma alone) to the end of its stream.
fn liblzma(
    stream: Result<Stream, xz2::stream::Error>,
    input: &[u8],
    limit: usize,
) -> Result<Vec<u8>, Failure> {
    let mut stream = stream.map_err(|e| Failure::Corrupt(io::Error::other(e)))?;
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).min(limit));
    loop {
        if out.len() > limit {
            return Err(Failure::TooLarge);
        }
        if out.len() == out.capacity() {
            out.reserve(out.len().max(1 << 16));
        }
        let (consumed, produced) = (stream.total_in(), out.len());
        let rest = &input[consumed as usize..];
        let status = stream
            .process_vec(rest, &mut out, Action::Run)
            .map_err(|e| Failure::Corrupt(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        if status == Status::StreamEnd {
            return if out.len() > limit {
                Err(Failure::TooLarge)
            } else {
                Ok(out)
            };
        }
        if stream.total_in() == consumed && out.len() == produced {
            return Err(Failure::Corrupt(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

fn lz4(payload: &[u8], limit: usize) -> Result<Vec<u8>, Failure> {
    lz4_legacy::decode(payload, limit).map_err(|e| match e {
        Lz4LegacyError::TooLarge { .. } => Failure::TooLarge,
        other => Failure::Corrupt(io::Error::new(io::ErrorKind::InvalidData, other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::compress;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 1000).to_le_bytes())
            .collect()
    }

    fn with_trailer(mut stream: Vec<u8>, len: usize) -> Vec<u8> {
        stream.extend_from_slice(&(len as u32).to_le_bytes());
        stream
    }

    #[test]
    fn every_method_round_trips_and_ignores_the_size_trailer() {
        let data = sample();
        for c in Compression::ALL {
            let payload = with_trailer(compress(&data, c), data.len());
            let out =
                decompress(&payload, c, MAX_DECOMPRESSED).unwrap_or_else(|e| panic!("{c}: {e}"));
            assert!(out == data, "{c} did not round-trip");
        }
    }

    #[test]
    fn every_method_refuses_output_beyond_the_limit() {
        let data = vec![0u8; 1 << 20];
        for c in Compression::ALL {
            let err = decompress(&compress(&data, c), c, 1000).unwrap_err();
            assert!(
                matches!(err, FormatError::TooLarge { limit: 1000, .. }),
                "{c}: {err}"
            );
        }
    }

    #[test]
    fn every_method_reports_a_cut_stream() {
        let data = sample();
        for c in Compression::ALL {
            let stream = compress(&data, c);
            let cut = &stream[..stream.len() / 2];
            let err = decompress(cut, c, MAX_DECOMPRESSED).unwrap_err();
            assert!(matches!(err, FormatError::Decompress { .. }), "{c}: {err}");
        }
    }
}
