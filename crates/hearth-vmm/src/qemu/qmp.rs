//! A minimal QMP client: the JSON control protocol QEMU speaks on its
//! `-qmp` Unix socket. Enough for status, stop, and saving and loading snapshots.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket I/O failed")]
    Io(#[from] std::io::Error),
    #[error("QMP connection closed by QEMU")]
    Closed,
    #[error("QMP sent something that is not JSON")]
    Json(#[from] serde_json::Error),
    #[error("QMP command {command} failed: {desc}")]
    Command { command: String, desc: String },
}

/// A connection that has completed the capabilities handshake.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Qmp {
    /// Connects, retrying until the socket exists, for at most `wait`.
    pub async fn connect(path: &Path, wait: Duration) -> Result<Self, QmpError> {
        let deadline = tokio::time::Instant::now() + wait;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        let (r, writer) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(r),
            writer,
        };
        qmp.read_message().await?; // greeting
        qmp.execute("qmp_capabilities").await?;
        Ok(qmp)
    }

    /// Runs a command without arguments and returns its `return` value.
    pub async fn execute(&mut self, command: &str) -> Result<Value, QmpError> {
        self.execute_with(command, None).await
    }

    /// Runs a command with `arguments` and returns its `return` value.
    pub async fn execute_with(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let mut line = match arguments {
            Some(args) => json!({ "execute": command, "arguments": args }),
            None => json!({ "execute": command }),
        }
        .to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await?;
        loop {
            let msg = self.read_message().await?;
            if let Some(ret) = msg.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = msg.get("error") {
                let desc = err
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("no description");
                return Err(QmpError::Command {
                    command: command.to_owned(),
                    desc: desc.to_owned(),
                });
            }
            // Anything else is an asynchronous event; skip it.
        }
    }

    /// `query-status`'s `status` field (`running`, `paused`, ...).
    pub async fn status(&mut self) -> Result<String, QmpError> {
        let ret = self.execute("query-status").await?;
        Ok(ret
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned())
    }

    async fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await? == 0 {
            return Err(QmpError::Closed);
        }
        Ok(serde_json::from_str(&line)?)
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::UnixListener;

    use super::*;

    /// A scripted peer speaking QMP's framing, to test the client's parsing.
    async fn peer(listener: UnixListener, replies: Vec<&'static str>) {
        let (s, _) = listener.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
            .await
            .unwrap();
        for reply in replies {
            let mut req = String::new();
            r.read_line(&mut req).await.unwrap();
            w.write_all(reply.as_bytes()).await.unwrap();
        }
    }

    #[tokio::test]
    async fn handshake_status_events_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let replies = vec![
            "{\"return\": {}}\n",
            "{\"event\": \"RESUME\"}\n{\"return\": {\"status\": \"running\", \"running\": true}}\n",
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\n",
        ];
        tokio::spawn(peer(listener, replies));
        let mut qmp = Qmp::connect(&path, Duration::from_secs(2)).await.unwrap();
        assert_eq!(qmp.status().await.unwrap(), "running");
        let err = qmp.execute("quit").await.unwrap_err().to_string();
        assert!(err.contains("quit") && err.contains("nope"), "{err}");
    }
}
