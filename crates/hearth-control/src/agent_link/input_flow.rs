//! Flow control for one exec's input (protocol 3). The agent queues input
//! until the command reads it and reports each byte that left its queue
//! (`exec_input_written`); the link keeps at most [`INPUT_WINDOW`] bytes
//! sent and unreported, and holds the rest here. The bytes held are
//! counted in a gauge the exec's [`super::ExecInput`] shares, so whoever
//! feeds it (the exec WebSocket) can stop reading its client while the
//! command is behind: backpressure from the guest's pipe to the client.

use std::collections::VecDeque;
use std::sync::Arc;

use hearth_agent_proto::INPUT_WINDOW;
use tokio::sync::watch;

use super::input::INPUT_CHUNK;

/// Bytes of input held for an exec on the host: sent to the link and not
/// yet passed on to the agent.
pub type Gauge = Arc<watch::Sender<usize>>;

/// Counts `len` more bytes held while `push` hands them to the link, and
/// uncounts them when it could not.
pub(super) fn hold_while<E>(
    gauge: &Gauge,
    len: usize,
    push: impl FnOnce() -> Result<(), E>,
) -> Result<(), E> {
    gauge.send_modify(|held| *held += len);
    let pushed = push();
    if pushed.is_err() {
        gauge.send_modify(|held| *held = held.saturating_sub(len));
    }
    pushed
}

/// Whether less than `limit` bytes are held.
pub(super) fn below(gauge: &Gauge, limit: usize) -> bool {
    *gauge.borrow() < limit
}

/// Resolves once less than `limit` bytes are held.
pub(super) async fn wait_below(gauge: &Gauge, limit: usize) {
    let mut held = gauge.subscribe();
    let _ = held.wait_for(|h| *h < limit).await;
}

/// What goes to the agent next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outgoing {
    Data(Vec<u8>),
    End,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum EndState {
    #[default]
    Open,
    /// Asked for: sent once what waits is sent.
    Wanted,
    Sent,
}

/// One exec's input on its way to the agent.
#[derive(Debug)]
pub(super) struct InputFlow {
    queue: VecDeque<Vec<u8>>,
    held: usize,
    /// Sent and not yet reported written by the agent.
    in_flight: u64,
    end: EndState,
    gauge: Gauge,
}

impl InputFlow {
    pub(super) fn new(gauge: Gauge) -> InputFlow {
        InputFlow {
            queue: VecDeque::new(),
            held: 0,
            in_flight: 0,
            end: EndState::Open,
            gauge,
        }
    }

    /// Holds `bytes` (in chunks a frame carries) until the window allows.
    /// Input after the end is dropped.
    pub(super) fn push(&mut self, bytes: &[u8]) {
        if self.end != EndState::Open {
            self.release(bytes.len());
            return;
        }
        for chunk in bytes.chunks(INPUT_CHUNK) {
            self.queue.push_back(chunk.to_vec());
        }
        self.held += bytes.len();
    }

    /// No more input: the end follows what is held.
    pub(super) fn end(&mut self) {
        if self.end == EndState::Open {
            self.end = EndState::Wanted;
        }
    }

    /// The client is gone: what is held is dropped (the agent closes the
    /// input of a hung-up exec anyway).
    pub(super) fn hang_up(&mut self) {
        self.queue.clear();
        let held = std::mem::take(&mut self.held);
        self.release(held);
    }

    /// The agent reported `bytes` more gone from its queue.
    pub(super) fn written(&mut self, bytes: u64) {
        self.in_flight = self.in_flight.saturating_sub(bytes);
    }

    /// The next message the window allows, if any.
    pub(super) fn next(&mut self) -> Option<Outgoing> {
        if let Some(len) = self.queue.front().map(Vec::len) {
            if self.in_flight + len as u64 > INPUT_WINDOW {
                return None;
            }
            let chunk = self.queue.pop_front()?;
            self.in_flight += len as u64;
            self.held -= len;
            self.release(len);
            return Some(Outgoing::Data(chunk));
        }
        if self.end == EndState::Wanted {
            self.end = EndState::Sent;
            return Some(Outgoing::End);
        }
        None
    }

    fn release(&self, bytes: usize) {
        self.gauge
            .send_modify(|held| *held = held.saturating_sub(bytes));
    }
}

impl Drop for InputFlow {
    /// The exec ended (or its connection dropped): its input goes nowhere.
    fn drop(&mut self) {
        self.release(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flow with `bytes` counted in its gauge, as `ExecInput::send` does.
    fn flow_with(bytes: &[u8]) -> (InputFlow, watch::Receiver<usize>) {
        let (tx, rx) = watch::channel(0);
        let gauge = Arc::new(tx);
        gauge.send_modify(|h| *h += bytes.len());
        let mut flow = InputFlow::new(gauge);
        flow.push(bytes);
        (flow, rx)
    }

    fn data_len(out: Option<Outgoing>) -> usize {
        match out {
            Some(Outgoing::Data(d)) => d.len(),
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn no_more_than_the_window_is_in_flight_until_reports_come() {
        let input = vec![7u8; 1 << 20];
        let (mut flow, gauge) = flow_with(&input);
        let mut sent = 0;
        while let Some(out) = flow.next() {
            sent += data_len(Some(out));
        }
        assert_eq!(sent as u64, INPUT_WINDOW);
        assert_eq!(*gauge.borrow(), input.len() - sent);
        flow.written(INPUT_CHUNK as u64);
        assert_eq!(data_len(flow.next()), INPUT_CHUNK);
        assert_eq!(flow.next(), None);
    }

    #[test]
    fn the_end_follows_the_input_held_before_it() {
        let (mut flow, gauge) = flow_with(b"abc");
        flow.end();
        flow.push(b"late");
        assert_eq!(flow.next(), Some(Outgoing::Data(b"abc".to_vec())));
        assert_eq!(flow.next(), Some(Outgoing::End));
        assert_eq!(flow.next(), None);
        assert_eq!(*gauge.borrow(), 0);
    }

    #[test]
    fn a_hang_up_or_the_end_of_the_exec_releases_what_is_held() {
        let input = vec![1u8; 3 * INPUT_WINDOW as usize];
        let (mut flow, gauge) = flow_with(&input);
        while flow.next().is_some() {}
        assert!(*gauge.borrow() > 0);
        flow.hang_up();
        assert_eq!(*gauge.borrow(), 0);

        let (flow, gauge) = flow_with(&input);
        drop(flow);
        assert_eq!(*gauge.borrow(), 0);
    }
}
