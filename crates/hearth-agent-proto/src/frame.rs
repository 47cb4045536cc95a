//! Framing: a `u32` little-endian length, then a JSON body of that length.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest body a frame may carry: 1 MiB. Exec output is sent in chunks
/// far below this, so only a broken or hostile peer reaches it.
pub const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("reading or writing a frame failed")]
    Io(#[source] io::Error),
    #[error("the stream ended inside a frame ({got} of {expected} bytes read)")]
    Truncated { expected: usize, got: usize },
    #[error("a frame of {len} bytes is larger than the limit of {max} bytes", max = MAX_FRAME)]
    TooLarge { len: usize },
    #[error("a frame body is not a valid message")]
    Decode(#[source] serde_json::Error),
    #[error("a message could not be encoded")]
    Encode(#[source] serde_json::Error),
}

/// Writes one message as one frame and flushes.
pub fn write_frame<W: Write, M: Serialize>(w: &mut W, msg: &M) -> Result<(), FrameError> {
    let body = serde_json::to_vec(msg).map_err(FrameError::Encode)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge { len: body.len() });
    }
    let len = (body.len() as u32).to_le_bytes();
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&body);
    w.write_all(&buf).map_err(FrameError::Io)?;
    w.flush().map_err(FrameError::Io)
}

/// Reads one frame. `Ok(None)` means the stream ended cleanly between
/// frames; an end inside a frame is [`FrameError::Truncated`].
pub fn read_frame<R: Read, M: DeserializeOwned>(r: &mut R) -> Result<Option<M>, FrameError> {
    let mut len = [0u8; 4];
    match read_full(r, &mut len)? {
        0 => return Ok(None),
        4 => {}
        got => return Err(FrameError::Truncated { expected: 4, got }),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len });
    }
    let mut body = vec![0u8; len];
    let got = read_full(r, &mut body)?;
    if got < len {
        return Err(FrameError::Truncated { expected: len, got });
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(FrameError::Decode)
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize, FrameError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostMessage;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    fn read_host(bytes: &[u8]) -> Result<Option<HostMessage>, FrameError> {
        read_frame(&mut &bytes[..])
    }

    #[test]
    fn empty_stream_is_a_clean_end() {
        assert!(read_host(&[]).unwrap().is_none());
    }

    #[test]
    fn truncated_length_is_refused() {
        let err = read_host(&[1, 0]).unwrap_err();
        assert!(matches!(
            err,
            FrameError::Truncated {
                expected: 4,
                got: 2
            }
        ));
    }

    #[test]
    fn truncated_body_is_refused() {
        let mut bytes = framed(br#"{"type":"welcome","protocol":1}"#);
        bytes.truncate(bytes.len() - 3);
        let err = read_host(&bytes).unwrap_err();
        assert!(matches!(err, FrameError::Truncated { got, .. } if got == bytes.len() - 4));
    }

    #[test]
    fn oversize_frame_is_refused_before_reading_the_body() {
        let bytes = ((MAX_FRAME + 1) as u32).to_le_bytes();
        let err = read_host(&bytes).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len } if len == MAX_FRAME + 1));
        assert!(err.to_string().contains("larger than the limit"), "{err}");
    }

    #[test]
    fn oversize_message_is_not_written() {
        let msg = HostMessage::Refused {
            reason: "x".repeat(MAX_FRAME),
        };
        let mut out = Vec::new();
        let err = write_frame(&mut out, &msg).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
        assert!(out.is_empty());
    }

    #[test]
    fn garbage_json_is_a_decode_error() {
        let err = read_host(&framed(b"{not json")).unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)));
    }

    #[test]
    fn two_frames_in_a_row_are_read_in_order() {
        let mut bytes = Vec::new();
        write_frame(&mut bytes, &HostMessage::Ack { seq: 1 }).unwrap();
        write_frame(&mut bytes, &HostMessage::Ack { seq: 2 }).unwrap();
        let mut r = &bytes[..];
        let a: Option<HostMessage> = read_frame(&mut r).unwrap();
        let b: Option<HostMessage> = read_frame(&mut r).unwrap();
        let c: Option<HostMessage> = read_frame(&mut r).unwrap();
        assert_eq!(a, Some(HostMessage::Ack { seq: 1 }));
        assert_eq!(b, Some(HostMessage::Ack { seq: 2 }));
        assert_eq!(c, None);
    }
}
