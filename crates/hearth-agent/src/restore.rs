//! What a guest restored from a snapshot must do before it is anyone's
//! VM: every VM restored from one snapshot wakes with the same kernel
//! random state, hostname and machine id. The host's `restored` brings
//! entropy only this VM gets (mixed into the kernel's input pool with
//! `RNDADDENTROPY`, then `RNDRESEEDCRNG` so the very next read differs
//! from every sibling's) and a new identity; the guest then forgets the
//! configuration it was snapshotted with, so the next `config` is its own.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use hearth_agent_proto::decode_data;
use zeroize::Zeroizing;

use crate::config::{self, ConfigError};

/// `_IOW('R', 0x03, int[2])`: add entropy, with a credit, to the input pool.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `_IO('R', 0x07)`: reseed the CRNG from the input pool now.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the host's seed is not base64")]
    Seed,
    #[error("machine id {0:?} is not 32 lowercase hex digits")]
    MachineId(String),
    #[error("reseeding the kernel's random generator failed ({step})")]
    Random {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Reseeds the kernel's random generator from the host's `seed` (base64).
pub fn reseed(seed: &str) -> Result<(), RestoreError> {
    let bytes = Zeroizing::new(decode_data(seed).map_err(|_| RestoreError::Seed)?);
    let random = File::options()
        .write(true)
        .open("/dev/random")
        .map_err(|source| RestoreError::Random {
            step: "opening /dev/random",
            source,
        })?;
    add_entropy(&random, &bytes)?;
    // SAFETY: RNDRESEEDCRNG takes no argument; the descriptor is open.
    let rc = unsafe { libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG) };
    check(rc, "RNDRESEEDCRNG")
}

/// `RNDADDENTROPY`: a `rand_pool_info` (entropy bits credited, byte
/// count, then the bytes) in one buffer of 32-bit words.
fn add_entropy(random: &File, bytes: &[u8]) -> Result<(), RestoreError> {
    let words = bytes.len().div_ceil(4);
    let mut info = Zeroizing::new(vec![0u32; 2 + words]);
    info[0] = u32::try_from(bytes.len() * 8).unwrap_or(u32::MAX);
    info[1] = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        info[2 + i] = u32::from_ne_bytes(w);
    }
    // SAFETY: `info` is a valid rand_pool_info of `bytes.len()` bytes that
    // outlives the call; the kernel only reads it.
    let rc = unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) };
    check(rc, "RNDADDENTROPY")
}

fn check(rc: libc::c_int, step: &'static str) -> Result<(), RestoreError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(RestoreError::Random {
            step,
            source: std::io::Error::last_os_error(),
        })
    }
}

/// Whether `/etc/machine-id` already says `id` (a reconnect of the same
/// restored VM, not a new one).
pub fn has_machine_id(id: &str) -> bool {
    std::fs::read_to_string("/etc/machine-id").is_ok_and(|s| s.trim() == id)
}

/// Takes the new identity: hostname and `/etc/machine-id`.
pub fn take_identity(hostname: &str, machine_id: &str) -> Result<(), RestoreError> {
    let valid = machine_id.len() == 32
        && machine_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !valid {
        return Err(RestoreError::MachineId(machine_id.to_owned()));
    }
    config::set_hostname(hostname)?;
    let path = Path::new("/etc/machine-id");
    config::write_atomically(path, format!("{machine_id}\n").as_bytes(), 0o444).map_err(
        |source| ConfigError::File {
            path: "/etc/machine-id".into(),
            source,
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_machine_id_is_refused_before_anything_changes() {
        let err = take_identity("h", "XYZ").unwrap_err().to_string();
        assert!(err.contains("32 lowercase hex digits"), "{err}");
    }

    #[test]
    fn a_seed_that_is_not_base64_is_named() {
        let err = reseed("***").unwrap_err().to_string();
        assert!(err.contains("not base64"), "{err}");
    }
}
