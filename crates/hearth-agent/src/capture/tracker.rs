//! When a watch sends: the decision, apart from the files and the clock,
//! so it is tested with made-up times. A complete set is sent once it has
//! been the same for `stable_ms` and differs from the last one sent; a
//! failure is said once until something else happens.

use std::time::{Duration, Instant};

use super::set::Reading;

/// What the watch does after a look at its files.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Wait,
    /// Send the complete set just read.
    Send,
    /// Send `capture_failed` with this message.
    Fail(String),
}

#[derive(Debug)]
pub struct Tracker {
    stable: Duration,
    /// The complete set last seen, and since when it has been the same.
    seen: Option<([u8; 32], Instant)>,
    /// The set last sent on the current connection.
    sent: Option<[u8; 32]>,
    /// The failure last said.
    failed: Option<String>,
    /// Why the set was last incomplete (logged when it changes).
    waiting: Option<String>,
}

impl Tracker {
    pub fn new(stable: Duration) -> Self {
        Tracker {
            stable,
            seen: None,
            sent: None,
            failed: None,
            waiting: None,
        }
    }

    /// The host may not have what was said (it asked again after a
    /// reconnect): the current complete set, or the current failure, goes
    /// out again.
    pub fn forget_said(&mut self) {
        self.sent = None;
        self.failed = None;
    }

    /// The set read at `now`.
    pub fn observe(&mut self, reading: &Reading, now: Instant) -> Step {
        match reading {
            Reading::Incomplete(why) => {
                self.seen = None;
                self.failed = None;
                self.waiting = Some(why.clone());
                Step::Wait
            }
            Reading::Failed(why) => {
                self.seen = None;
                if self.failed.as_ref() == Some(why) {
                    return Step::Wait;
                }
                self.failed = Some(why.clone());
                Step::Fail(why.clone())
            }
            Reading::Complete { digest, .. } => {
                self.failed = None;
                self.waiting = None;
                let since = match self.seen {
                    Some((d, since)) if d == *digest => since,
                    _ => {
                        self.seen = Some((*digest, now));
                        now
                    }
                };
                if now.duration_since(since) < self.stable || self.sent == Some(*digest) {
                    return Step::Wait;
                }
                self.sent = Some(*digest);
                Step::Send
            }
        }
    }

    /// Why the set is not complete, if it is not.
    pub fn waiting(&self) -> Option<&str> {
        self.waiting.as_deref()
    }
}
