//! The records the host must not lose, kept until it acknowledges them.
//!
//! Every record gets the next `seq` (from 1, per agent instance). The host
//! acks by seq (in `welcome` and `ack`); everything up to an ack is dropped
//! and the rest is sent again after a reconnect. The buffer is bounded: when
//! the host stays away too long, the oldest `service_log` lines go first,
//! and a `lines_dropped` record per service says how many.

use std::collections::{BTreeMap, VecDeque};

use hearth_agent_proto::Record;

/// How much the journal holds before it drops lines.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_records: usize,
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_records: 10_000,
            max_bytes: 8 << 20,
        }
    }
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    record: Record,
    size: usize,
}

#[derive(Debug)]
pub struct Journal {
    limits: Limits,
    next_seq: u64,
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl Journal {
    pub fn new(limits: Limits) -> Self {
        Journal {
            limits,
            next_seq: 1,
            entries: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Appends `record`; returns its seq. Makes room first when full.
    pub fn push(&mut self, record: Record) -> u64 {
        let seq = self.append(record);
        if self.full() {
            self.make_room();
        }
        seq
    }

    /// Drops every record up to and including `seq`.
    pub fn ack(&mut self, seq: u64) {
        while self.entries.front().is_some_and(|e| e.seq <= seq) {
            let e = self.entries.pop_front().expect("checked above");
            self.bytes -= e.size;
        }
    }

    /// The first record after `seq`, with its seq.
    pub fn after(&self, seq: u64) -> Option<(u64, Record)> {
        let i = self.entries.partition_point(|e| e.seq <= seq);
        self.entries.get(i).map(|e| (e.seq, e.record.clone()))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn append(&mut self, record: Record) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let size = size_of_record(&record);
        self.bytes += size;
        self.entries.push_back(Entry { seq, record, size });
        seq
    }

    fn full(&self) -> bool {
        self.entries.len() > self.limits.max_records || self.bytes > self.limits.max_bytes
    }

    /// Drops the oldest lines until the journal is at 90% of its limits (so
    /// that not every new line costs a `lines_dropped`), then records how
    /// many lines of each service went. With no lines left to drop, the
    /// oldest records of any kind go.
    fn make_room(&mut self) {
        let target_records = self.limits.max_records * 9 / 10;
        let target_bytes = self.limits.max_bytes * 9 / 10;
        let mut dropped: BTreeMap<String, u64> = BTreeMap::new();
        let mut i = 0;
        while (self.entries.len() > target_records || self.bytes > target_bytes)
            && i < self.entries.len()
        {
            if let Record::ServiceLog { service, .. } = &self.entries[i].record {
                *dropped.entry(service.clone()).or_default() += 1;
                let e = self.entries.remove(i).expect("index checked");
                self.bytes -= e.size;
            } else {
                i += 1;
            }
        }
        while self.entries.len() > target_records || self.bytes > target_bytes {
            let Some(e) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= e.size;
            eprintln!("hearth-agent: journal full: dropped record {}", e.seq);
        }
        for (service, count) in dropped {
            self.append(Record::LinesDropped {
                uptime_ms: crate::uptime_ms(),
                service,
                count,
            });
        }
    }
}

/// What a record costs in the buffer: its text plus a fixed overhead.
fn size_of_record(record: &Record) -> usize {
    const OVERHEAD: usize = 96;
    match record {
        Record::ServiceLog { service, line, .. } => OVERHEAD + service.len() + line.len(),
        Record::ConfigApplied { services, .. } => {
            OVERHEAD
                + services
                    .iter()
                    .map(|s| 256 + s.argv.concat().len())
                    .sum::<usize>()
        }
        Record::BootReport { .. } => 4096,
        _ => OVERHEAD * 2,
    }
}

#[cfg(test)]
mod tests {
    use hearth_agent_proto::Stream;

    use super::*;

    fn line(service: &str, text: &str) -> Record {
        Record::ServiceLog {
            uptime_ms: 1,
            service: service.into(),
            stream: Stream::Stdout,
            line: text.into(),
        }
    }

    fn ready() -> Record {
        Record::Ready { uptime_ms: 1 }
    }

    #[test]
    fn seqs_start_at_one_and_acks_drop_what_they_cover() {
        let mut j = Journal::new(Limits::default());
        assert_eq!(j.push(ready()), 1);
        assert_eq!(j.push(ready()), 2);
        assert_eq!(j.push(ready()), 3);
        assert_eq!(j.after(0).unwrap().0, 1);
        j.ack(2);
        assert_eq!(j.len(), 1);
        assert_eq!(j.after(0).unwrap().0, 3);
        assert_eq!(j.after(3), None);
        j.ack(1); // an old ack changes nothing
        assert_eq!(j.len(), 1);
    }

    #[test]
    fn when_full_the_oldest_lines_go_and_a_lines_dropped_record_says_so() {
        let mut j = Journal::new(Limits {
            max_records: 10,
            max_bytes: 1 << 20,
        });
        j.push(ready());
        for n in 0..10 {
            j.push(line("web", &format!("line {n}")));
        }
        // 11 records: lines dropped down to 9, then one lines_dropped.
        assert_eq!(j.len(), 10);
        assert_eq!(j.after(0).unwrap().1, ready(), "non-lines are kept");
        let (_, second) = j.after(1).unwrap();
        assert_eq!(second, line("web", "line 2"));
        let mut last = None;
        let mut seq = 0;
        while let Some((s, r)) = j.after(seq) {
            seq = s;
            last = Some(r);
        }
        assert!(
            matches!(last, Some(Record::LinesDropped { ref service, count: 2, .. }) if service == "web"),
            "{last:?}"
        );
    }

    #[test]
    fn the_byte_bound_holds_too() {
        let mut j = Journal::new(Limits {
            max_records: 1000,
            max_bytes: 10_000,
        });
        for _ in 0..100 {
            j.push(line("big", &"x".repeat(1000)));
        }
        assert!(j.bytes <= 10_000, "{}", j.bytes);
    }
}
