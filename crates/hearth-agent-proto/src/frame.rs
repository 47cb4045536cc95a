//! Framing: a `u32` little-endian length, then a JSON body of that length.
//! A body may carry a secret (a captured credential, a file written), so
//! the buffers are wiped once used, and decode errors are shown without
//! the values they quote.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;
use zeroize::Zeroizing;

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
    let body = to_wiped_json(msg).map_err(FrameError::Encode)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge { len: body.len() });
    }
    let len = (body.len() as u32).to_le_bytes();
    let mut buf = Zeroizing::new(Vec::with_capacity(4 + body.len()));
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
    let mut body = Zeroizing::new(vec![0u8; len]);
    let got = read_full(r, &mut body)?;
    if got < len {
        return Err(FrameError::Truncated { expected: len, got });
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(FrameError::Decode)
}

/// `msg` as JSON, in a buffer wiped when dropped; each buffer outgrown
/// while writing it is wiped too, so no copy of the body is left behind.
pub fn to_wiped_json<M: Serialize>(msg: &M) -> Result<Zeroizing<Vec<u8>>, serde_json::Error> {
    let mut out = WipingVec(Zeroizing::new(Vec::with_capacity(256)));
    serde_json::to_writer(&mut out, msg)?;
    Ok(out.0)
}

/// A byte buffer that wipes what it outgrows.
struct WipingVec(Zeroizing<Vec<u8>>);

impl Write for WipingVec {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let need = self.0.len() + bytes.len();
        if need > self.0.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(need.max(2 * self.0.capacity())));
            bigger.extend_from_slice(&self.0);
            // The old buffer is wiped as it is dropped here.
            self.0 = bigger;
        }
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `e` in words, with every quoted value it cites (serde quotes the
/// strings it could not take) replaced by `"…"`: for logs, where a
/// message's values must not go.
pub fn redacted(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let mut out = String::with_capacity(text.len());
    let mut quoted = false;
    let mut escaped = false;
    for c in text.chars() {
        if quoted {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => {
                    quoted = false;
                    out.push_str("…\"");
                }
                _ => escaped = false,
            }
        } else {
            quoted = c == '"';
            out.push(c);
        }
    }
    if quoted {
        out.push_str("…\"");
    }
    out
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
    fn wiped_json_is_the_same_json() {
        let msg = HostMessage::Refused {
            reason: "x".repeat(100_000),
        };
        let wiped = to_wiped_json(&msg).unwrap();
        assert_eq!(&wiped[..], &serde_json::to_vec(&msg).unwrap()[..]);
    }

    #[test]
    fn a_redacted_decode_error_cites_no_value() {
        let body = br#"{"type":"ack","seq":"tok\"en-123"}"#;
        let err = serde_json::from_slice::<HostMessage>(body).unwrap_err();
        assert!(err.to_string().contains("en-123"), "serde cites it: {err}");
        let shown = redacted(&err);
        assert!(
            !shown.contains("tok") && !shown.contains("en-123"),
            "{shown}"
        );
        assert!(shown.contains("invalid type: string \"…\""), "{shown}");
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
