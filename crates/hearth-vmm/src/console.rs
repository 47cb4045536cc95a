//! The console pump: every byte the hypervisor writes to stdout (the guest's
//! serial port) is appended to the console log and broadcast to live
//! followers. [`LineSplitter`] turns that byte stream back into lines.

use std::io::Write;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::broadcast;

/// Copies `from` into `log` and onto `tx` until end of file.
pub async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut log: std::fs::File,
    tx: broadcast::Sender<Bytes>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut log_ok = true;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = Bytes::copy_from_slice(&buf[..n]);
        if log_ok {
            if let Err(err) = log.write_all(&chunk) {
                tracing::error!(error = %err, "console log write failed; live stream continues");
                log_ok = false;
            }
        }
        let _ = tx.send(chunk);
    }
    let _ = log.flush();
}

/// Splits a byte stream into lines, tolerating partial chunks and invalid
/// UTF-8.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Maximum bytes kept for one unterminated line; longer ones are cut.
    const MAX_LINE: usize = 64 * 1024;

    /// Feeds a chunk and returns the lines it completed, without `\n`/`\r`.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in chunk {
            if b == b'\n' {
                lines.push(self.take());
            } else if self.pending.len() < Self::MAX_LINE {
                self.pending.push(b);
            }
        }
        lines
    }

    /// The last, unterminated line, if any.
    pub fn finish(&mut self) -> Option<String> {
        (!self.pending.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let line = String::from_utf8_lossy(&self.pending)
            .trim_end_matches('\r')
            .to_owned();
        self.pending.clear();
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"hel").is_empty());
        assert_eq!(s.push(b"lo\r\nwor"), vec!["hello"]);
        assert_eq!(s.push(b"ld\n\n"), vec!["world", ""]);
        assert_eq!(s.finish(), None);
        s.push(b"tail");
        assert_eq!(s.finish().as_deref(), Some("tail"));
    }

    #[tokio::test]
    async fn pump_writes_every_byte_to_log_and_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let log = std::fs::File::create(&path).unwrap();
        let (tx, mut rx) = broadcast::channel(16);
        let data: &[u8] = b"line one\nline two\n";
        pump(data, log, tx).await;
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let mut got = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, data);
    }
}
