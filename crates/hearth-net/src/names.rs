//! Every kernel object of a VM's network is named from its slot and the
//! host's prefix, so the reconciler can tell hearth's objects from anyone
//! else's, and which slot each belongs to, from the name alone.

use std::fmt;
use std::str::FromStr;

use crate::NetError;

/// The first part of every hearth-made name on the host (`hearth` in
/// `hearth-s17`): 1 to 8 lowercase letters and digits, starting with a
/// letter, so that `{prefix}-s{slot}` fits a 15-byte interface name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Prefix(String);

/// The longest prefix: 8 + `-s` + 5 digits = 15, the kernel's limit.
const MAX_PREFIX: usize = 8;

impl FromStr for Prefix {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Prefix, NetError> {
        let starts_with_letter = s.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
        let all_fit = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if s.len() > MAX_PREFIX || !starts_with_letter || !all_fit {
            return Err(NetError::BadPrefix(s.to_owned()));
        }
        Ok(Prefix(s.to_owned()))
    }
}

impl Default for Prefix {
    fn default() -> Prefix {
        Prefix("hearth".to_owned())
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Prefix {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The VM's network namespace (`/run/netns/hearth-s17`) and the host
    /// end of its veth pair share this name: they are different kinds of
    /// object, and one name per slot is easiest to read.
    pub fn slot_name(&self, slot: Slot) -> String {
        format!("{}-s{}", self.0, slot.0)
    }

    /// The slot a name of ours stands for; `None` for anyone else's name.
    pub fn parse_slot(&self, name: &str) -> Option<Slot> {
        let digits = name.strip_prefix(self.0.as_str())?.strip_prefix("-s")?;
        let canonical = !digits.is_empty() && (digits == "0" || !digits.starts_with('0'));
        let all_digits = digits.bytes().all(|b| b.is_ascii_digit());
        (canonical && all_digits)
            .then(|| digits.parse().ok())
            .flatten()
            .filter(|&n| n < MAX_SLOTS)
            .map(Slot)
    }

    /// The nftables pattern matching every host link of ours.
    pub(crate) fn link_pattern(&self) -> String {
        format!("{}-s*", self.0)
    }
}

/// The most slots any pool has: five digits in a name.
pub const MAX_SLOTS: u32 = 65_536;

/// A VM's address slot: its number names its namespace and links and picks
/// its transit addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(u32);

impl Slot {
    /// `None` past [`MAX_SLOTS`].
    pub fn new(n: u32) -> Option<Slot> {
        (n < MAX_SLOTS).then_some(Slot(n))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slot {}", self.0)
    }
}

/// Inside each namespace the names are the same for every VM.
pub const TAP_NAME: &str = "tap0";
pub const NS_LINK_NAME: &str = "veth0";
/// The nftables table hearth owns, inside each namespace.
pub const NS_TABLE: &str = "hearth";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_their_slot() {
        let prefix: Prefix = "hearth".parse().unwrap();
        let slot = Slot::new(17).unwrap();
        assert_eq!(prefix.slot_name(slot), "hearth-s17");
        assert_eq!(prefix.parse_slot("hearth-s17"), Some(slot));
        let longest = "abcdefgh".parse::<Prefix>().unwrap();
        assert_eq!(
            longest.slot_name(Slot::new(MAX_SLOTS - 1).unwrap()).len(),
            15
        );
    }

    #[test]
    fn other_names_are_not_ours() {
        let prefix: Prefix = "hearth".parse().unwrap();
        for name in [
            "hearth-s",
            "hearth-s017",
            "hearth-sx",
            "hearthx-s1",
            "eth0",
            "hearth-s99999",
        ] {
            assert_eq!(prefix.parse_slot(name), None, "{name}");
        }
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in ["", "Hearth", "9hearth", "hearth-x", "toolongpr"] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad:?}");
        }
    }
}
