//! Opening one store from several connections at once, as `hearth token
//! create` does while `hearth serve` starts: each open must wait for the
//! others' locks (SQLite's busy timeout, migrations under `BEGIN
//! IMMEDIATE`), never fail with "database is locked".

use std::sync::{Arc, Barrier};
use std::thread;

use hearth_store::sqlite::SCHEMA_VERSION;
use hearth_store::SqliteStore;

/// Openers per round: `serve` and a CLI, and a few more to make the race
/// likely on a slow machine.
const OPENERS: usize = 4;
const ROUNDS: usize = 50;

#[test]
fn many_connections_opening_one_fresh_file_at_once_all_succeed() {
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join("state").join("hearth.db"));
        let start = Arc::new(Barrier::new(OPENERS));
        let openers: Vec<_> = (0..OPENERS)
            .map(|_| {
                let (path, start) = (Arc::clone(&path), Arc::clone(&start));
                thread::spawn(move || {
                    start.wait();
                    SqliteStore::open(&path).map(|s| s.schema_version())
                })
            })
            .collect();
        for opener in openers {
            match opener.join().expect("opener thread") {
                Ok(Ok(version)) => assert_eq!(version, SCHEMA_VERSION),
                Ok(Err(e)) | Err(e) => panic!("round {round}: {}", hearth_types::error_chain(&e)),
            }
        }
    }
}
