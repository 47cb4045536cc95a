//! The host's first words to an agent restored from a snapshot: entropy
//! for the kernel's random generator, fresh for each greeting (the kernel
//! of every VM restored from one snapshot starts in the same state), and
//! the VM's own identity, derived from its id so a reconnect repeats it.

use hearth_agent_proto::{encode_data, HostMessage, Seed, SEED_BYTES};
use hearth_types::guest::GuestConfig;
use hearth_types::VmId;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// `restored` for `vm`: its hostname is its configuration's, else its id.
pub(super) fn message(vm: &VmId, config: &GuestConfig) -> HostMessage {
    let hostname = config
        .hostname
        .clone()
        .unwrap_or_else(|| vm.as_str().to_owned());
    HostMessage::Restored {
        seed: Seed(encode_data(&seed())),
        hostname,
        machine_id: machine_id(vm),
    }
}

/// 32 lowercase hex digits, the same for the same VM.
pub(crate) fn machine_id(vm: &VmId) -> String {
    let digest = Sha256::digest(format!("hearth machine-id {vm}").as_bytes());
    hex::encode(&digest[..16])
}

/// Bytes from the host kernel's random generator.
fn seed() -> Zeroizing<Vec<u8>> {
    let mut buf = Zeroizing::new(vec![0u8; SEED_BYTES]);
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is valid, writable memory of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            filled += n as usize;
        }
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_differ_per_vm_and_seeds_per_greeting() {
        let (a, b): (VmId, VmId) = ("vm-a".parse().unwrap(), "vm-b".parse().unwrap());
        assert_eq!(machine_id(&a).len(), 32);
        assert_eq!(machine_id(&a), machine_id(&a));
        assert_ne!(machine_id(&a), machine_id(&b));
        let one = message(&a, &GuestConfig::default());
        let two = message(&a, &GuestConfig::default());
        let (
            HostMessage::Restored {
                seed: s1, hostname, ..
            },
            HostMessage::Restored { seed: s2, .. },
        ) = (one, two)
        else {
            panic!("not restored");
        };
        assert_eq!(hostname, "vm-a");
        assert_ne!(s1, s2);
    }
}
