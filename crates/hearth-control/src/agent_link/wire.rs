//! The agent protocol's frames (`u32` little-endian length, JSON body) on
//! tokio streams: the same format as `hearth_agent_proto::read_frame`, for
//! a link that waits on several things at once. Bodies may carry secrets
//! (captured credentials, files written): their buffers are wiped.

use hearth_agent_proto::{to_wiped_json, FrameError, GuestMessage, HostMessage, MAX_FRAME};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

/// Reads one message; `Ok(None)` when the stream ended between frames.
/// Not cancel-safe: one task owns the reading half and calls it in a loop.
pub(super) async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<GuestMessage>, FrameError> {
    let mut len = [0u8; 4];
    let got = read_full(r, &mut len).await?;
    match got {
        0 => return Ok(None),
        4 => {}
        got => return Err(FrameError::Truncated { expected: 4, got }),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len });
    }
    let mut body = Zeroizing::new(vec![0u8; len]);
    let got = read_full(r, &mut body).await?;
    if got < len {
        return Err(FrameError::Truncated { expected: len, got });
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(FrameError::Decode)
}

async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<usize, FrameError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]).await {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(got)
}

/// Writes one message as one frame.
pub(super) async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &HostMessage,
) -> Result<(), FrameError> {
    let body = to_wiped_json(msg).map_err(FrameError::Encode)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge { len: body.len() });
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(4 + body.len()));
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await.map_err(FrameError::Io)?;
    w.flush().await.map_err(FrameError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_read_back_as_the_blocking_reader_wrote_them() {
        let mut bytes = Vec::new();
        let hello = GuestMessage::Heartbeat { uptime_ms: 7 };
        hearth_agent_proto::write_frame(&mut bytes, &hello).unwrap();
        let mut r = &bytes[..];
        assert_eq!(read_message(&mut r).await.unwrap(), Some(hello));
        assert_eq!(read_message(&mut r).await.unwrap(), None);
        let mut cut = &bytes[..bytes.len() - 1];
        assert!(matches!(
            read_message(&mut cut).await,
            Err(FrameError::Truncated { .. })
        ));
    }

    #[tokio::test]
    async fn written_frames_are_read_by_the_blocking_reader() {
        let mut out = Vec::new();
        write_message(&mut out, &HostMessage::Ack { seq: 3 })
            .await
            .unwrap();
        let back: Option<HostMessage> = hearth_agent_proto::read_frame(&mut &out[..]).unwrap();
        assert_eq!(back, Some(HostMessage::Ack { seq: 3 }));
    }
}
