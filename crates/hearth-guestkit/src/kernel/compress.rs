//! Compression in each of the kernel build's formats, at fast settings:
//! used to build synthetic bzImages for tests, where speed matters more
//! than size.

use std::io::Write;

use super::{lz4_legacy, Compression};

/// Compresses `data` the way the kernel build's `cmd_<method>` would
/// (without the trailing size word; see [`super::wrap_elf_as_bzimage`]).
pub fn compress(data: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::Gzip => gzip(data),
        Compression::Xz => xz(data),
        Compression::Zstd => zstd::bulk::compress(data, 1).expect("zstd compresses into memory"),
        Compression::Lz4 => lz4_legacy::encode(data),
        Compression::Lzma => lzma(data),
        Compression::Bzip2 => bzip2(data),
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

fn bzip2(data: &[u8]) -> Vec<u8> {
    let mut encoder = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    encoder.write_all(data).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

fn xz(data: &[u8]) -> Vec<u8> {
    let stream = xz2::stream::Stream::new_easy_encoder(0, xz2::stream::Check::Crc32)
        .expect("xz preset 0 is valid");
    encode_with(stream, data)
}

fn lzma(data: &[u8]) -> Vec<u8> {
    let options = xz2::stream::LzmaOptions::new_preset(0).expect("lzma preset 0 is valid");
    let stream = xz2::stream::Stream::new_lzma_encoder(&options).expect("lzma options are valid");
    encode_with(stream, data)
}

fn encode_with(stream: xz2::stream::Stream, data: &[u8]) -> Vec<u8> {
    let mut encoder = xz2::write::XzEncoder::new_stream(Vec::new(), stream);
    encoder.write_all(data).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}
