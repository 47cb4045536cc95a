//! Credential capture (protocol 5): a login run in the guest writes a
//! CLI's credential files; the host names them (`capture_watch`) and gets
//! them back as one `captured` message once they are all complete and
//! have stopped changing, and again whenever they become a different
//! complete set.
//!
//! Each watch polls its files on a thread of its own (every
//! [`POLL`]; no inotify, so no new dependency and nothing missed by a
//! tool that renames into place). Contents are read into wiped buffers,
//! kept only for one look, and never logged or written anywhere: the
//! `captured` message is a live message of the current connection, never
//! a record, so it is never journaled nor sent again by the outbox. A
//! watch outlives its connection: the host asks again after each welcome,
//! which hands the watch the new connection and has its current set sent
//! again. A watch nobody asks for again within [`ORPHAN_GRACE`] of a new
//! connection (its owner went with an old controller) stops.

mod set;
mod tracker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hearth_agent_proto::{encode_data, CapturedFile, GuestMessage};
use hearth_types::guest::CaptureSpec;

use self::set::{read_set, Reading};
use self::tracker::{Step, Tracker};
use crate::outbox::Link;

/// How often a watch looks at its files.
pub const POLL: Duration = Duration::from_millis(200);
/// How long after a new connection a watch not asked for again lives.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(30);

/// Every watch of this agent, across connections.
#[derive(Clone)]
pub struct Captures {
    state: Arc<Mutex<State>>,
}

impl Default for Captures {
    fn default() -> Self {
        Captures::with_grace(ORPHAN_GRACE)
    }
}

impl std::fmt::Debug for Captures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Captures")
    }
}

struct State {
    watches: HashMap<u64, Arc<Watch>>,
    /// Counts connections; with when the current one began.
    connection: u64,
    since: Option<Instant>,
    /// How long after a new connection a watch not asked for again lives.
    grace: Duration,
}

struct Watch {
    id: u64,
    spec: CaptureSpec,
    stopped: AtomicBool,
    owner: Mutex<Owner>,
}

/// The connection a watch sends on.
struct Owner {
    link: Link,
    connection: u64,
    /// Asked again: send the current set even if it was sent before.
    resend: bool,
}

impl Captures {
    /// Watches not asked for again within `grace` of a new connection stop.
    pub fn with_grace(grace: Duration) -> Self {
        let state = State {
            watches: HashMap::new(),
            connection: 0,
            since: None,
            grace,
        };
        Captures {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// A host welcomed the agent: watches it does not ask for again
    /// within [`ORPHAN_GRACE`] stop.
    pub fn connected(&self) {
        let mut st = self.lock();
        st.connection += 1;
        st.since = Some(Instant::now());
    }

    /// `capture_watch`: a new watch, or an old one handed `link` (and its
    /// set sent again). The same id with another spec starts over.
    pub fn watch(&self, id: u64, spec: CaptureSpec, link: Link) {
        if let Err(why) = spec.check() {
            eprintln!("hearth-agent: capture {id}: refused: {why}");
            let message = format!("the capture spec is not valid: {why}");
            let _ = link.send(GuestMessage::CaptureFailed { id, message });
            return;
        }
        let mut st = self.lock();
        let connection = st.connection;
        if let Some(old) = st.watches.get(&id) {
            if old.spec == spec {
                *old.lock() = Owner {
                    link,
                    connection,
                    resend: true,
                };
                return;
            }
            old.stopped.store(true, Ordering::Release);
        }
        let watch = Arc::new(Watch {
            id,
            spec,
            stopped: AtomicBool::new(false),
            owner: Mutex::new(Owner {
                link,
                connection,
                resend: false,
            }),
        });
        st.watches.insert(id, watch.clone());
        drop(st);
        let captures = self.clone();
        std::thread::spawn(move || captures.run(&watch));
    }

    /// `capture_stop`.
    pub fn stop(&self, id: u64) {
        if let Some(w) = self.lock().watches.remove(&id) {
            w.stopped.store(true, Ordering::Release);
        }
    }

    /// The watch's thread: a look every [`POLL`] until stopped.
    fn run(&self, watch: &Watch) {
        let id = watch.id;
        let n = watch.spec.files.len();
        eprintln!("hearth-agent: capture {id}: watching {n} files");
        let mut tracker = Tracker::new(Duration::from_millis(watch.spec.stable_ms));
        while !watch.stopped.load(Ordering::Acquire) {
            if self.orphaned(watch) {
                eprintln!("hearth-agent: capture {id}: stopped (not asked for again after the host came back)");
                return;
            }
            look(watch, &mut tracker);
            std::thread::sleep(POLL);
        }
        eprintln!("hearth-agent: capture {id}: stopped");
    }

    /// Whether no connection since the watch's own asked for it, and the
    /// current one is past its grace; such a watch is forgotten.
    fn orphaned(&self, watch: &Watch) -> bool {
        let mut st = self.lock();
        let current = st.connection;
        let late = st.since.is_some_and(|s| s.elapsed() > st.grace);
        if !late || watch.lock().connection == current {
            return false;
        }
        if st
            .watches
            .get(&watch.id)
            .is_some_and(|w| std::ptr::eq(&**w, watch))
        {
            st.watches.remove(&watch.id);
        }
        true
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Watch {
    fn lock(&self) -> MutexGuard<'_, Owner> {
        self.owner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The link to send on, and whether the host asked again.
    fn take_owner(&self) -> (Link, bool) {
        let mut owner = self.lock();
        let resend = std::mem::take(&mut owner.resend);
        (owner.link.clone(), resend)
    }
}

/// Reads the set, decides, and sends what there is to send.
fn look(watch: &Watch, tracker: &mut Tracker) {
    let id = watch.id;
    let (link, resend) = watch.take_owner();
    if resend {
        tracker.forget_said();
    }
    let reading = read_set(&watch.spec);
    let was_waiting = tracker.waiting().map(str::to_owned);
    let step = tracker.observe(&reading, Instant::now());
    if let Some(why) = tracker
        .waiting()
        .filter(|w| Some(*w) != was_waiting.as_deref())
    {
        eprintln!("hearth-agent: capture {id}: waiting: {why}");
    }
    // What a connection that is gone did not take is said again once the
    // next one asks for the watch again (`resend`).
    match step {
        Step::Send => send(id, reading, &link),
        Step::Fail(message) => {
            eprintln!("hearth-agent: capture {id}: failed: {message}");
            let _ = link.send(GuestMessage::CaptureFailed { id, message });
        }
        Step::Wait => {}
    }
}

/// One `captured` message of the complete set read; the buffers are
/// wiped as they go.
fn send(id: u64, reading: Reading, link: &Link) {
    let Reading::Complete { files, .. } = reading else {
        return;
    };
    let files: Vec<CapturedFile> = files
        .into_iter()
        .map(|f| CapturedFile {
            data: encode_data(&f.bytes),
            path: f.path,
            mode: f.mode,
        })
        .collect();
    let n = files.len();
    if link.send(GuestMessage::Captured { id, files }).is_ok() {
        eprintln!("hearth-agent: capture {id}: sent {n} files");
    }
}

#[cfg(test)]
mod tests;
