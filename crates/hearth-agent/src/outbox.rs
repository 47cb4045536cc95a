//! Everything the agent sends goes through here, and one writer thread owns
//! the channel's write half.
//!
//! Two kinds of messages wait: records, kept in the [`Journal`] until the
//! host acks them and sent again after each reconnect, and live messages
//! (exec output, file chunks, heartbeats) that belong to one connection and
//! are dropped with it. Producers of records (service output threads) never
//! wait for the channel: pushing a record only takes a lock. Live senders
//! wait for room in a short queue, which paces an exec's output to the
//! channel; when their connection is gone they are told so and stop.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use hearth_agent_proto::{write_frame, GuestMessage, Record};

use crate::journal::{Journal, Limits};

/// Live messages queued at most; a live sender waits beyond this.
const LIVE_QUEUE: usize = 64;

pub type Writer = Box<dyn Write + Send>;

#[derive(Debug, thiserror::Error)]
#[error("the connection to the host this message belonged to is gone")]
pub struct Gone;

struct State {
    /// The write half, when connected and not being written to.
    writer: Option<Writer>,
    connected: bool,
    /// The writer thread holds the write half right now.
    busy: bool,
    /// Bumped at each attach and detach: live messages of an older
    /// connection never reach a newer one.
    generation: u64,
    /// The highest seq sent on this connection.
    sent: u64,
    live: VecDeque<GuestMessage>,
    journal: Journal,
}

pub struct Outbox {
    state: Mutex<State>,
    changed: Condvar,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outbox")
    }
}

/// A connection's handle for live messages.
#[derive(Clone, Debug)]
pub struct Link {
    outbox: Arc<Outbox>,
    generation: u64,
}

impl Link {
    /// Queues `msg` for this connection, waiting while the queue is full;
    /// `Gone` once the connection ended.
    pub fn send(&self, msg: GuestMessage) -> Result<(), Gone> {
        let mut st = self.outbox.lock();
        loop {
            if !st.connected || st.generation != self.generation {
                return Err(Gone);
            }
            if st.live.len() < LIVE_QUEUE {
                st.live.push_back(msg);
                self.outbox.changed.notify_all();
                return Ok(());
            }
            st = self.outbox.wait(st);
        }
    }
}

impl Outbox {
    /// An outbox with its writer thread.
    pub fn start(limits: Limits) -> Arc<Outbox> {
        let outbox = Arc::new(Outbox {
            state: Mutex::new(State {
                writer: None,
                connected: false,
                busy: false,
                generation: 0,
                sent: 0,
                live: VecDeque::new(),
                journal: Journal::new(limits),
            }),
            changed: Condvar::new(),
        });
        let writer = outbox.clone();
        std::thread::spawn(move || writer.write_loop());
        outbox
    }

    /// Keeps `record` until acked; never waits for the channel.
    pub fn record(&self, record: Record) -> u64 {
        let seq = self.lock().journal.push(record);
        self.changed.notify_all();
        seq
    }

    /// Hands the write half of a new connection, whose host stored every
    /// record up to `acked`, to the writer thread; the records after that
    /// are sent again, in order.
    pub fn attach(self: &Arc<Self>, writer: Writer, acked: u64) -> Link {
        let mut st = self.lock();
        while st.busy {
            st = self.wait(st);
        }
        st.journal.ack(acked);
        st.sent = acked;
        st.writer = Some(writer);
        st.connected = true;
        st.generation += 1;
        st.live.clear();
        self.changed.notify_all();
        Link {
            outbox: self.clone(),
            generation: st.generation,
        }
    }

    /// Ends the connection: the write half is dropped (after a write in
    /// progress), queued live messages with it.
    pub fn detach(&self) {
        let mut st = self.lock();
        while st.busy {
            st = self.wait(st);
        }
        disconnect(&mut st);
        self.changed.notify_all();
    }

    pub fn ack(&self, seq: u64) {
        self.lock().journal.ack(seq);
    }

    /// Records kept, for tests and limits.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.lock().journal.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(g).unwrap_or_else(|p| p.into_inner())
    }

    fn write_loop(&self) {
        loop {
            let (mut writer, msg, generation) = self.next_message();
            let written = write_frame(&mut writer, &msg);
            let mut st = self.lock();
            st.busy = false;
            if st.generation == generation {
                match written {
                    Ok(()) => st.writer = Some(writer),
                    Err(e) => {
                        eprintln!("hearth-agent: writing to the host failed: {e}");
                        disconnect(&mut st);
                    }
                }
            }
            self.changed.notify_all();
        }
    }

    /// Waits for something to send on a connection; takes the write half.
    fn next_message(&self) -> (Writer, GuestMessage, u64) {
        let mut st = self.lock();
        loop {
            if st.writer.is_some() {
                if let Some(msg) = pop(&mut st) {
                    let writer = st.writer.take().expect("checked above");
                    st.busy = true;
                    self.changed.notify_all();
                    return (writer, msg, st.generation);
                }
            }
            st = self.wait(st);
        }
    }
}

fn disconnect(st: &mut State) {
    st.writer = None;
    st.connected = false;
    st.generation += 1;
    st.live.clear();
}

/// The next message: live ones first (they are paced), then the next record.
fn pop(st: &mut State) -> Option<GuestMessage> {
    if let Some(msg) = st.live.pop_front() {
        return Some(msg);
    }
    let (seq, record) = st.journal.after(st.sent)?;
    st.sent = seq;
    Some(GuestMessage::Record { seq, record })
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use hearth_agent_proto::read_frame;

    use super::*;

    fn ready(n: u64) -> Record {
        Record::Ready { uptime_ms: n }
    }

    fn recv_seq(s: &mut UnixStream) -> u64 {
        match read_frame(s).unwrap() {
            Some(GuestMessage::Record { seq, record }) => {
                assert_eq!(record, ready(seq), "the record matches its seq");
                seq
            }
            other => panic!("expected a record, got {other:?}"),
        }
    }

    fn pair() -> (UnixStream, Writer) {
        let (host, guest) = UnixStream::pair().unwrap();
        host.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        (host, Box::new(guest))
    }

    #[test]
    fn records_not_acked_are_sent_again_after_a_reconnect() {
        let outbox = Outbox::start(Limits::default());
        for n in 1..=3 {
            outbox.record(ready(n));
        }
        let (mut first, w) = pair();
        outbox.attach(w, 0);
        let got: Vec<u64> = (0..3).map(|_| recv_seq(&mut first)).collect();
        assert_eq!(got, [1, 2, 3]);
        outbox.ack(1);
        outbox.detach();
        drop(first);
        // Made while nobody listens.
        outbox.record(ready(4));
        outbox.record(ready(5));
        // The new host says it stored up to 2 (one more than the ack).
        let (mut second, w) = pair();
        outbox.attach(w, 2);
        let got: Vec<u64> = (0..3).map(|_| recv_seq(&mut second)).collect();
        assert_eq!(got, [3, 4, 5]);
        assert_eq!(outbox.pending(), 3);
        outbox.ack(5);
        assert_eq!(outbox.pending(), 0);
    }

    #[test]
    fn live_messages_of_an_old_connection_are_refused() {
        let outbox = Outbox::start(Limits::default());
        let (_host, w) = pair();
        let old = outbox.attach(w, 0);
        outbox.detach();
        assert!(old.send(GuestMessage::Heartbeat { uptime_ms: 1 }).is_err());
        let (mut host, w) = pair();
        let new = outbox.attach(w, 0);
        assert!(old.send(GuestMessage::Heartbeat { uptime_ms: 1 }).is_err());
        new.send(GuestMessage::Heartbeat { uptime_ms: 2 }).unwrap();
        let got: Option<GuestMessage> = read_frame(&mut host).unwrap();
        assert_eq!(got, Some(GuestMessage::Heartbeat { uptime_ms: 2 }));
    }

    #[test]
    fn recording_never_waits_for_a_host_that_does_not_read() {
        let outbox = Outbox::start(Limits {
            max_records: 100,
            max_bytes: 1 << 20,
        });
        let (_host, w) = pair();
        outbox.attach(w, 0);
        let start = std::time::Instant::now();
        for n in 0..20_000 {
            outbox.record(Record::ServiceLog {
                uptime_ms: n,
                service: "s".into(),
                stream: hearth_agent_proto::Stream::Stdout,
                line: "x".repeat(200),
            });
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        assert!(outbox.pending() <= 101);
    }
}
