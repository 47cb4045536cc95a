//! One credential file as the agent sends it (protocol 5). Its content is
//! a secret: `Debug` shows the path, mode and length only, and the base64
//! text is wiped from memory when the value is dropped.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// A captured file: its guest path, permission bits and content.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapturedFile {
    pub path: String,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Standard base64 (with padding) of the file's bytes.
    pub data: String,
}

impl std::fmt::Debug for CapturedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapturedFile")
            .field("path", &self.path)
            .field("mode", &format_args!("{:#o}", self.mode))
            .field("data_len", &self.data.len())
            .finish()
    }
}

impl Drop for CapturedFile {
    fn drop(&mut self) {
        self.data.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode_data, GuestMessage};

    #[test]
    fn debug_shows_no_content() {
        let secret = "sk-ant-oat01-very-secret-token";
        let msg = GuestMessage::Captured {
            id: 3,
            files: vec![CapturedFile {
                path: "/home/u/.claude/.credentials.json".into(),
                mode: 0o600,
                data: encode_data(secret.as_bytes()),
            }],
        };
        for shown in [format!("{msg:?}"), format!("{msg:#?}")] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(!shown.contains(&encode_data(secret.as_bytes())), "{shown}");
            assert!(shown.contains(".credentials.json") && shown.contains("0o600"));
        }
    }
}
