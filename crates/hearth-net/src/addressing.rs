//! Addresses. Every guest sees the same network (address, gateway, MAC), so
//! a snapshot or an image never depends on where it runs; what differs per
//! VM is the transit /30 between its namespace and the host, picked by its
//! slot from the pool.

use std::net::Ipv4Addr;

use crate::names::{Slot, MAX_SLOTS};
use crate::NetError;

/// The guest's own address, the same in every VM.
pub const GUEST_ADDRESS: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 2);
/// The TAP's address in the namespace: the guest's gateway.
pub const GUEST_GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 1);
pub const GUEST_PREFIX_LEN: u8 = 30;
/// Locally administered, the same in every VM.
pub const GUEST_MAC: [u8; 6] = [0x02, 0x68, 0x74, 0x00, 0x00, 0x02];

/// What the guest is told about its network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestAddressing {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mac: [u8; 6],
}

impl GuestAddressing {
    pub fn fixed() -> GuestAddressing {
        GuestAddressing {
            address: GUEST_ADDRESS,
            prefix_len: GUEST_PREFIX_LEN,
            gateway: GUEST_GATEWAY,
            mac: GUEST_MAC,
        }
    }

    /// `02:68:74:00:00:02`, as QEMU's `mac=` wants it.
    pub fn mac_text(&self) -> String {
        let parts: Vec<String> = self.mac.iter().map(|b| format!("{b:02x}")).collect();
        parts.join(":")
    }
}

/// The host's pool of transit /30s, one per slot: `.1` on the host's end,
/// `.2` on the namespace's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransitPool {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Default for TransitPool {
    fn default() -> TransitPool {
        TransitPool {
            network: Ipv4Addr::new(10, 231, 0, 0),
            prefix_len: 16,
        }
    }
}

impl TransitPool {
    /// A pool of `network/prefix_len`: aligned, between /14 and /28.
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Result<TransitPool, NetError> {
        let bad = || NetError::BadPool(format!("{network}/{prefix_len}"));
        if !(14..=28).contains(&prefix_len) {
            return Err(bad());
        }
        let host_bits = u32::MAX >> prefix_len;
        if u32::from(network) & host_bits != 0 {
            return Err(bad());
        }
        Ok(TransitPool {
            network,
            prefix_len,
        })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// How many slots the pool holds.
    pub fn size(&self) -> u32 {
        ((1u64 << (32 - self.prefix_len)) / 4).min(u64::from(MAX_SLOTS)) as u32
    }

    /// The host's end of `slot`'s /30.
    pub fn host_address(&self, slot: Slot) -> Ipv4Addr {
        self.nth(slot, 1)
    }

    /// The namespace's end of `slot`'s /30.
    pub fn namespace_address(&self, slot: Slot) -> Ipv4Addr {
        self.nth(slot, 2)
    }

    fn nth(&self, slot: Slot, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + slot.get() * 4 + offset)
    }

    /// Whether `other/len` shares any address with the pool.
    pub fn overlaps(&self, other: Ipv4Addr, len: u8) -> bool {
        let shorter = len.min(self.prefix_len);
        let mask = if shorter == 0 {
            0
        } else {
            u32::MAX << (32 - shorter)
        };
        u32::from(other) & mask == u32::from(self.network) & mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_get_consecutive_thirty_twos() {
        let pool = TransitPool::default();
        let slot = Slot::new(3).unwrap();
        assert_eq!(pool.host_address(slot), Ipv4Addr::new(10, 231, 0, 13));
        assert_eq!(pool.namespace_address(slot), Ipv4Addr::new(10, 231, 0, 14));
        assert_eq!(pool.size(), 16_384);
    }

    #[test]
    fn unaligned_or_odd_pools_are_refused() {
        assert!(TransitPool::new(Ipv4Addr::new(10, 231, 0, 1), 16).is_err());
        assert!(TransitPool::new(Ipv4Addr::new(10, 0, 0, 0), 8).is_err());
        assert!(TransitPool::new(Ipv4Addr::new(10, 231, 0, 0), 24).is_ok());
    }

    #[test]
    fn overlap_is_seen_from_either_side() {
        let pool = TransitPool::default();
        assert!(pool.overlaps(Ipv4Addr::new(10, 0, 0, 0), 8));
        assert!(pool.overlaps(Ipv4Addr::new(10, 231, 7, 0), 24));
        assert!(!pool.overlaps(Ipv4Addr::new(10, 232, 0, 0), 16));
        assert!(
            pool.overlaps(Ipv4Addr::new(0, 0, 0, 0), 0),
            "a default route covers all"
        );
    }
}
