//! The entropy the host sends a guest restored from a snapshot (protocol
//! 6). Every VM restored from one snapshot wakes with the same kernel
//! random state, so each is reseeded from bytes only it gets: they are a
//! secret of that VM, so `Debug` shows their length only and the base64
//! text is wiped from memory when the value is dropped.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// Standard base64 (with padding) of the seed's bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seed(pub String);

/// Bytes of entropy the host sends with each `restored`.
pub const SEED_BYTES: usize = 64;

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Seed({} base64 chars)", self.0.len())
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode_data, HostMessage};

    #[test]
    fn debug_shows_no_seed() {
        let seed = encode_data(b"0123456789abcdef0123456789abcdef");
        let msg = HostMessage::Restored {
            seed: Seed(seed.clone()),
            hostname: "vm-1".into(),
            machine_id: "0".repeat(32),
        };
        let shown = format!("{msg:?}");
        assert!(!shown.contains(&seed), "{shown}");
        assert!(shown.contains("vm-1"), "{shown}");
    }
}
