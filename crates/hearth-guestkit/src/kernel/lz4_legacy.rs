//! The LZ4 "legacy" frame, the only LZ4 framing the kernel build uses
//! (`lz4 -l`): the magic 0x184C2102, then blocks of
//! `[u32 LE compressed size][LZ4 block]`, each decompressing to at most
//! 8 MiB. The kernel build appends the decompressed size as four more
//! bytes, which the framing cannot tell from a block header except by
//! their value, so a size that cannot be a block ends the stream.

use lz4_flex::block::DecompressError;

pub(super) const MAGIC: u32 = 0x184C_2102;
/// The most one block decompresses to.
pub(super) const BLOCK_SIZE: usize = 8 << 20;
/// LZ4_compressBound(BLOCK_SIZE): the most one block can take compressed.
const MAX_COMPRESSED_BLOCK: usize = BLOCK_SIZE + BLOCK_SIZE / 255 + 16;
const HEADER: usize = 4;

#[derive(Debug, thiserror::Error)]
pub(super) enum Lz4LegacyError {
    #[error("no LZ4 legacy frame magic")]
    BadMagic,
    #[error("the block at byte {offset} is damaged")]
    Block {
        offset: usize,
        #[source]
        source: DecompressError,
    },
    #[error("the block at byte {offset} claims {size} bytes but only {remaining} follow")]
    CutShort {
        offset: usize,
        size: usize,
        remaining: usize,
    },
    #[error("the output exceeds {limit} bytes")]
    TooLarge { limit: usize },
}

/// One step through the frame.
#[derive(Debug, PartialEq, Eq)]
enum Chunk {
    /// A block's compressed bytes are at this range.
    Block(std::ops::Range<usize>),
    /// Another legacy frame starts here (concatenated frames).
    Magic,
    /// Nothing more: the input ended, maybe after the size trailer.
    End,
}

/// Compresses `data` as one legacy frame (no size trailer).
pub(super) fn encode(data: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_le_bytes().to_vec();
    for chunk in data.chunks(BLOCK_SIZE) {
        let block = lz4_flex::block::compress(chunk);
        let len = u32::try_from(block.len()).expect("an 8 MiB block compresses to under 4 GiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&block);
    }
    out
}

/// Decompresses a legacy frame, ignoring a trailing size word, refusing
/// output beyond `limit` bytes.
pub(super) fn decode(input: &[u8], limit: usize) -> Result<Vec<u8>, Lz4LegacyError> {
    if !input.starts_with(&MAGIC.to_le_bytes()) {
        return Err(Lz4LegacyError::BadMagic);
    }
    let mut out = Vec::new();
    let mut pos = HEADER;
    loop {
        match next_chunk(input, pos)? {
            Chunk::Block(range) => {
                decode_block(&input[range.clone()], range.start, &mut out, limit)?;
                pos = range.end;
            }
            Chunk::Magic => pos += HEADER,
            Chunk::End => return Ok(out),
        }
    }
}

fn next_chunk(input: &[u8], pos: usize) -> Result<Chunk, Lz4LegacyError> {
    let remaining = input.len().saturating_sub(pos);
    let Some(header) = input.get(pos..pos + HEADER) else {
        return Ok(Chunk::End);
    };
    let size = u32::from_le_bytes(header.try_into().expect("four bytes")) as usize;
    let start = pos + HEADER;
    if size == MAGIC as usize {
        return Ok(Chunk::Magic);
    }
    if size > 0 && size <= MAX_COMPRESSED_BLOCK && size <= remaining - HEADER {
        return Ok(Chunk::Block(start..start + size));
    }
    if remaining == HEADER {
        return Ok(Chunk::End);
    }
    Err(Lz4LegacyError::CutShort {
        offset: pos,
        size,
        remaining: remaining - HEADER,
    })
}

fn decode_block(
    block: &[u8],
    offset: usize,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), Lz4LegacyError> {
    let old = out.len();
    out.resize(old + BLOCK_SIZE, 0);
    let written = lz4_flex::block::decompress_into(block, &mut out[old..])
        .map_err(|source| Lz4LegacyError::Block { offset, source })?;
    out.truncate(old + written);
    if out.len() > limit {
        return Err(Lz4LegacyError::TooLarge { limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn round_trips_across_several_blocks() {
        let data = sample(BLOCK_SIZE * 2 + 12345);
        let frame = encode(&data);
        assert_eq!(decode(&frame, usize::MAX).unwrap(), data);
    }

    #[test]
    fn the_kernels_size_trailer_is_ignored() {
        let data = sample(1000);
        let mut frame = encode(&data);
        frame.extend_from_slice(&(data.len() as u32).to_le_bytes());
        assert_eq!(decode(&frame, usize::MAX).unwrap(), data);
    }

    #[test]
    fn a_large_trailer_value_is_not_taken_for_a_block() {
        let mut frame = encode(b"abc");
        frame.extend_from_slice(&53_243_444u32.to_le_bytes());
        assert_eq!(decode(&frame, usize::MAX).unwrap(), b"abc");
    }

    #[test]
    fn concatenated_frames_decode_in_order() {
        let mut frame = encode(b"first ");
        frame.extend_from_slice(&encode(b"second"));
        assert_eq!(decode(&frame, usize::MAX).unwrap(), b"first second");
    }

    #[test]
    fn an_empty_frame_is_empty() {
        assert_eq!(decode(&MAGIC.to_le_bytes(), usize::MAX).unwrap(), b"");
    }

    #[test]
    fn a_cut_block_is_an_error_not_a_short_output() {
        let frame = encode(&sample(100_000));
        let cut = &frame[..frame.len() - 10];
        let err = decode(cut, usize::MAX).unwrap_err();
        assert!(
            matches!(err, Lz4LegacyError::CutShort { offset: 4, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_damaged_block_is_an_error() {
        let mut frame = encode(&sample(100_000));
        frame[8..40].fill(0xff);
        let err = decode(&frame, usize::MAX).unwrap_err();
        assert!(
            matches!(err, Lz4LegacyError::Block { offset: 8, .. }),
            "{err}"
        );
    }

    #[test]
    fn output_beyond_the_limit_is_refused() {
        let frame = encode(&vec![0u8; 100_000]);
        let err = decode(&frame, 50_000).unwrap_err();
        assert!(matches!(err, Lz4LegacyError::TooLarge { limit: 50_000 }));
    }

    #[test]
    fn wrong_magic_is_refused() {
        assert!(matches!(
            decode(b"\x1f\x8b\x08\x00", usize::MAX),
            Err(Lz4LegacyError::BadMagic)
        ));
    }
}
