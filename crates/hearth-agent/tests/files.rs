//! `hearth vm cp` through the real agent binary: a file read with its
//! checksum, a write checked and put in place, an oversized read refused.

mod common;

use common::Agent;
use hearth_agent_proto::{decode_data, encode_data, GuestMessage, HostMessage};
use sha2::{Digest, Sha256};

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 200 KiB that are not all alike: four chunks.
fn content() -> Vec<u8> {
    (0..200 * 1024u32).map(|i| (i % 251) as u8).collect()
}

#[test]
fn a_file_is_read_in_chunks_with_its_size_and_checksum() {
    let agent = Agent::start(&[]);
    let path = agent.path("source.bin");
    std::fs::write(&path, content()).unwrap();
    let mut host = agent.connect(0);
    host.send(&HostMessage::FileRead {
        id: 1,
        path: path.display().to_string(),
        max_bytes: 1 << 20,
    });
    let mut got = Vec::new();
    let mut chunks = 0;
    let done = loop {
        match host.next() {
            GuestMessage::FileChunk { id: 1, data } => {
                chunks += 1;
                got.extend(decode_data(&data).unwrap());
            }
            GuestMessage::Record { .. } => {}
            other => break other,
        }
    };
    assert_eq!(chunks, 4);
    assert_eq!(got, content());
    assert_eq!(
        done,
        GuestMessage::FileDone {
            id: 1,
            size: content().len() as u64,
            sha256: sha(&content())
        }
    );
}

#[test]
fn an_oversized_read_is_refused_before_any_chunk() {
    let agent = Agent::start(&[]);
    let path = agent.path("big.bin");
    std::fs::write(&path, content()).unwrap();
    let mut host = agent.connect(0);
    host.send(&HostMessage::FileRead {
        id: 2,
        path: path.display().to_string(),
        max_bytes: 1000,
    });
    let reply = loop {
        match host.next() {
            GuestMessage::Record { .. } => {}
            other => break other,
        }
    };
    assert!(
        matches!(&reply, GuestMessage::FileError { id: 2, message } if message.contains("1000")),
        "{reply:?}"
    );
    host.send(&HostMessage::FileRead {
        id: 3,
        path: agent.dir.path().display().to_string(),
        max_bytes: 1000,
    });
    let reply = loop {
        match host.next() {
            GuestMessage::Record { .. } => {}
            other => break other,
        }
    };
    assert!(
        matches!(&reply, GuestMessage::FileError { id: 3, message } if message.contains("not a regular file")),
        "{reply:?}"
    );
}

#[test]
fn a_written_file_is_checked_and_put_in_place() {
    let agent = Agent::start(&[]);
    let target = agent.path("dest/copy.bin");
    let data = content();
    let mut host = agent.connect(0);
    host.send(&HostMessage::FileWrite {
        id: 4,
        path: target.display().to_string(),
        size: data.len() as u64,
        mode: 0o640,
    });
    for chunk in data.chunks(64 * 1024) {
        host.send(&HostMessage::FileChunk {
            id: 4,
            data: encode_data(chunk),
        });
    }
    host.send(&HostMessage::FileEnd {
        id: 4,
        sha256: sha(&data),
    });
    let reply = loop {
        match host.next() {
            GuestMessage::Record { .. } => {}
            other => break other,
        }
    };
    assert_eq!(
        reply,
        GuestMessage::FileDone {
            id: 4,
            size: data.len() as u64,
            sha256: sha(&data)
        }
    );
    assert_eq!(std::fs::read(&target).unwrap(), data);
    // A wrong checksum leaves the file as it was.
    host.send(&HostMessage::FileWrite {
        id: 5,
        path: target.display().to_string(),
        size: 3,
        mode: 0o640,
    });
    host.send(&HostMessage::FileChunk {
        id: 5,
        data: encode_data(b"new"),
    });
    host.send(&HostMessage::FileEnd {
        id: 5,
        sha256: sha(b"old"),
    });
    let reply = loop {
        match host.next() {
            GuestMessage::Record { .. } => {}
            other => break other,
        }
    };
    assert!(
        matches!(reply, GuestMessage::FileError { id: 5, .. }),
        "{reply:?}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), data);
    let names: Vec<_> = std::fs::read_dir(agent.path("dest")).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary file is left");
}
