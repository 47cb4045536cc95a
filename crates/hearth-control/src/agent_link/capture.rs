//! Credential capture over the agent link (protocol 5): the host names a
//! login's credential files ([`super::LinkHandle::watch_capture`]), the
//! agent sends them back as one set once complete and stable, and the
//! link hands the set to the watch's owner (a session driver, which seals
//! it). Captures are never records: nothing here stores, logs or shows a
//! file's content (`Debug` prints paths, modes and lengths), and the
//! contents live in wiped buffers.
//!
//! A watch is kept across reconnects, like a listener: asked for again
//! after each welcome while its receiver lives (the agent then sends its
//! current set again), and stopped once the receiver is dropped.

use std::collections::HashMap;

use hearth_agent_proto::{decode_data, CapturedFile};
use hearth_types::guest::CaptureSpec;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

/// The first protocol version that carries captures.
pub use hearth_agent_proto::CAPTURE_PROTOCOL;

/// What a watch reports, any number of times until it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub enum CaptureEvent {
    /// The files, complete and unchanged for the spec's `stable_ms`; again
    /// whenever they become a different complete set, and after a
    /// reconnect.
    Captured(CapturedSet),
    /// Why the agent cannot deliver (a bad spec, a file too large, an
    /// agent too old, ...); no file content. The watch goes on: a later
    /// complete set still comes.
    Failed(String),
}

/// One complete set, in the order of the spec's files.
#[derive(Clone, PartialEq, Eq)]
pub struct CapturedSet {
    pub files: Vec<CapturedCredentialFile>,
}

/// One captured file: its guest path, permission bits and bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct CapturedCredentialFile {
    pub path: String,
    pub mode: u32,
    pub contents: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for CaptureEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaptureEvent::Captured(set) => f.debug_tuple("Captured").field(set).finish(),
            CaptureEvent::Failed(why) => f.debug_tuple("Failed").field(why).finish(),
        }
    }
}

impl std::fmt::Debug for CapturedSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.files).finish()
    }
}

impl std::fmt::Debug for CapturedCredentialFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapturedCredentialFile")
            .field("path", &self.path)
            .field("mode", &format_args!("{:#o}", self.mode))
            .field("len", &self.contents.len())
            .finish()
    }
}

/// The agent's files as the owner gets them; data that is not base64
/// makes the whole set a failure (without its content).
pub(super) fn decode(files: Vec<CapturedFile>) -> CaptureEvent {
    let mut out = Vec::with_capacity(files.len());
    for file in &files {
        let Ok(bytes) = decode_data(&file.data) else {
            return CaptureEvent::Failed("the agent sent a capture that is not base64".into());
        };
        out.push(CapturedCredentialFile {
            path: file.path.clone(),
            mode: file.mode,
            contents: Zeroizing::new(bytes),
        });
    }
    CaptureEvent::Captured(CapturedSet { files: out })
}

/// The watches of one link, kept across its connections.
#[derive(Default)]
pub(super) struct Watches {
    by_id: HashMap<u64, Watched>,
}

struct Watched {
    spec: CaptureSpec,
    events: mpsc::UnboundedSender<CaptureEvent>,
}

impl Watches {
    pub(super) fn add(
        &mut self,
        id: u64,
        spec: CaptureSpec,
        events: mpsc::UnboundedSender<CaptureEvent>,
    ) {
        self.by_id.insert(id, Watched { spec, events });
    }

    /// Forgets watch `id`; whether it was there.
    pub(super) fn remove(&mut self, id: u64) -> bool {
        self.by_id.remove(&id).is_some()
    }

    /// Forgets the watches whose owner left; returns the rest (to ask for
    /// again) and the ids forgotten (to stop).
    pub(super) fn sweep(&mut self) -> (Vec<(u64, CaptureSpec)>, Vec<u64>) {
        let gone: Vec<u64> = self
            .by_id
            .iter()
            .filter(|(_, w)| w.events.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            self.by_id.remove(id);
        }
        let live = self
            .by_id
            .iter()
            .map(|(id, w)| (*id, w.spec.clone()))
            .collect();
        (live, gone)
    }

    /// Hands `event` to watch `id`'s owner; `false` when there is none
    /// (any more): the agent should stop watching.
    pub(super) fn deliver(&mut self, id: u64, event: CaptureEvent) -> bool {
        let Some(w) = self.by_id.get(&id) else {
            return false;
        };
        if w.events.send(event).is_err() {
            self.by_id.remove(&id);
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use hearth_agent_proto::encode_data;

    use super::*;

    #[test]
    fn a_set_decodes_and_debug_shows_no_content() {
        let secret = b"{\"access_token\":\"sk-very-secret\"}";
        let event = decode(vec![CapturedFile {
            path: "/home/u/.codex/auth.json".into(),
            mode: 0o600,
            data: encode_data(secret),
        }]);
        let CaptureEvent::Captured(set) = &event else {
            panic!("not captured")
        };
        assert_eq!(&set.files[0].contents[..], secret);
        for shown in [format!("{event:?}"), format!("{event:#?}")] {
            assert!(!shown.contains("sk-very-secret"), "{shown}");
            assert!(
                shown.contains("auth.json") && shown.contains("0o600"),
                "{shown}"
            );
        }
    }

    #[test]
    fn data_that_is_not_base64_fails_without_content() {
        let event = decode(vec![CapturedFile {
            path: "/a".into(),
            mode: 0o600,
            data: "sk-not*base64".into(),
        }]);
        assert_eq!(
            event,
            CaptureEvent::Failed("the agent sent a capture that is not base64".into())
        );
    }
}
