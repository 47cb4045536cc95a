//! What one VM's NIC may reach beyond the networks every VM is refused:
//! networks denied, networks it is limited to, and a rate limit each way.
//! Parsed from the API's text (`hearth_types::api::NetworkPolicy`) into
//! typed values, so the ruleset is generated from addresses and numbers,
//! never from what a user wrote.

use std::fmt;
use std::net::Ipv4Addr;

use hearth_types::api::NetworkPolicy;

/// The most networks in one list: a ruleset stays small and quick to apply.
pub const MAX_NETWORKS: usize = 256;
/// The rate limit's bounds, kbit/s: below 64 a TCP connection barely
/// starts; above 10 Gbit/s the limit means nothing.
pub const MIN_BANDWIDTH_KBIT: u32 = 64;
pub const MAX_BANDWIDTH_KBIT: u32 = 10_000_000;

/// An IPv4 network with its host bits clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Net {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl Ipv4Net {
    /// `203.0.113.0/24`, or an address alone (a /32).
    pub fn parse(text: &str) -> Result<Ipv4Net, String> {
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let address: Ipv4Addr = addr.parse().map_err(|_| {
            format!("{text:?} is not an IPv4 network: write it as 203.0.113.0/24, or an address")
        })?;
        let prefix_len = match len {
            None => 32,
            Some(len) => len
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= 32)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to 32"))?,
        };
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0);
        let network = Ipv4Addr::from(u32::from(address) & mask);
        if network != address {
            return Err(format!(
                "{text:?} has host bits set: write {network}/{prefix_len}"
            ));
        }
        Ok(Ipv4Net {
            address,
            prefix_len,
        })
    }

    /// `a.b.c.d/len` from parts known to be aligned.
    pub(crate) const fn new(a: u8, b: u8, c: u8, d: u8, prefix_len: u8) -> Ipv4Net {
        Ipv4Net {
            address: Ipv4Addr::new(a, b, c, d),
            prefix_len,
        }
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0)
    }

    /// Whether every address of `other` is in this network.
    pub fn contains(&self, other: &Ipv4Net) -> bool {
        other.prefix_len >= self.prefix_len
            && u32::from(other.address) & self.mask() == u32::from(self.address)
    }
}

/// One VM's checked policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NicPolicy {
    /// Refused (and counted), before anything else.
    pub deny: Vec<Ipv4Net>,
    /// When not empty, the only networks the guest reaches (still never a
    /// refused one).
    pub allow: Vec<Ipv4Net>,
    /// Each direction's rate, kbit/s; `None`: unlimited.
    pub bandwidth_kbit: Option<u32>,
    /// Names (and `*.` wildcards) the guest's web traffic may reach
    /// through the host's proxy; when given, nothing leaves directly but
    /// for the `allow` networks. Checked by the caller (hearth-egress's
    /// domain syntax); kept here so the ruleset closes the direct path.
    pub allow_domains: Vec<String>,
    /// Networks of the always refused classes this VM may reach all the
    /// same, because its tenant's policy allows them (never from the VM's
    /// own policy: see [`crate::tenant`]). Each is within `allow`.
    pub open: Vec<Ipv4Net>,
}

impl NicPolicy {
    /// Checks the API's policy; each error names the field and the fix.
    pub fn from_request(policy: &NetworkPolicy) -> Result<NicPolicy, String> {
        let list = |field: &str, items: &[String]| -> Result<Vec<Ipv4Net>, String> {
            if items.len() > MAX_NETWORKS {
                return Err(format!(
                    "network_policy.{field}: {} networks; at most {MAX_NETWORKS}",
                    items.len()
                ));
            }
            items
                .iter()
                .map(|n| Ipv4Net::parse(n).map_err(|e| format!("network_policy.{field}: {e}")))
                .collect()
        };
        if let Some(rate) = policy.bandwidth_kbit {
            if !(MIN_BANDWIDTH_KBIT..=MAX_BANDWIDTH_KBIT).contains(&rate) {
                return Err(format!(
                    "network_policy.bandwidth_kbit: {rate}; give {MIN_BANDWIDTH_KBIT} to {MAX_BANDWIDTH_KBIT} (kbit/s)"
                ));
            }
        }
        Ok(NicPolicy {
            deny: list("deny", &policy.deny)?,
            allow: list("allow", &policy.allow)?,
            bandwidth_kbit: policy.bandwidth_kbit,
            allow_domains: domains(&policy.allow_domains)?,
            open: Vec::new(),
        })
    }

    /// The API's form of this policy (what the VM's record keeps; `open`
    /// is not part of it, it is worked out from the tenant's policy).
    pub fn to_request(&self) -> NetworkPolicy {
        let texts = |nets: &[Ipv4Net]| nets.iter().map(Ipv4Net::to_string).collect();
        NetworkPolicy {
            allow: texts(&self.allow),
            deny: texts(&self.deny),
            bandwidth_kbit: self.bandwidth_kbit,
            allow_domains: self.allow_domains.clone(),
        }
    }

    /// Whether the guest may leave directly only for its `allow`
    /// networks (it has domain rules, which only the proxy can apply).
    pub(crate) fn closed(&self) -> bool {
        !self.allow_domains.is_empty()
    }

    /// The rate in bytes per second, and a burst of a quarter second
    /// (at least 64 KiB, so a TCP window passes whole).
    pub(crate) fn rate_and_burst(&self) -> Option<(u64, u64)> {
        self.bandwidth_kbit.map(|kbit| {
            let bytes = u64::from(kbit) * 1000 / 8;
            (bytes, (bytes / 20).max(16 * 1024))
        })
    }
}

/// The domain list's size is bounded here; its syntax is the proxy's.
fn domains(items: &[String]) -> Result<Vec<String>, String> {
    if items.len() > MAX_NETWORKS {
        return Err(format!(
            "network_policy.allow_domains: {} names; at most {MAX_NETWORKS}",
            items.len()
        ));
    }
    Ok(items.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_with_or_without_a_length_and_host_bits_are_refused() {
        assert_eq!(
            Ipv4Net::parse("203.0.113.0/24").unwrap().to_string(),
            "203.0.113.0/24"
        );
        assert_eq!(Ipv4Net::parse("198.51.100.7").unwrap().prefix_len, 32);
        assert_eq!(Ipv4Net::parse("0.0.0.0/0").unwrap().prefix_len, 0);
        let err = Ipv4Net::parse("203.0.113.5/24").unwrap_err();
        assert!(err.contains("write 203.0.113.0/24"), "{err}");
        assert!(Ipv4Net::parse("203.0.113.0/33").is_err());
        assert!(Ipv4Net::parse("example.com").unwrap_err().contains("IPv4"));
        assert!(Ipv4Net::parse("1.2.3.4/\"; flush ruleset").is_err());
    }

    #[test]
    fn a_network_contains_its_subnets_and_not_its_neighbours() {
        let net = |t: &str| Ipv4Net::parse(t).unwrap();
        assert!(net("10.0.0.0/8").contains(&net("10.20.0.0/16")));
        assert!(net("10.20.0.0/16").contains(&net("10.20.0.0/16")));
        assert!(!net("10.20.0.0/16").contains(&net("10.0.0.0/8")));
        assert!(!net("10.20.0.0/16").contains(&net("10.21.0.1")));
        assert!(net("0.0.0.0/0").contains(&net("192.168.1.1")));
    }

    #[test]
    fn a_request_is_checked_field_by_field() {
        let ok = NetworkPolicy {
            allow: vec!["203.0.113.0/24".into()],
            deny: vec!["203.0.113.9".into()],
            bandwidth_kbit: Some(1000),
            allow_domains: Vec::new(),
        };
        let policy = NicPolicy::from_request(&ok).unwrap();
        assert_eq!(policy.to_request().deny, ["203.0.113.9/32"]);
        assert_eq!(policy.rate_and_burst(), Some((125_000, 16_384)));
        let bad = NetworkPolicy {
            deny: vec!["nope".into()],
            ..ok.clone()
        };
        assert!(NicPolicy::from_request(&bad)
            .unwrap_err()
            .starts_with("network_policy.deny:"));
        let slow = NetworkPolicy {
            bandwidth_kbit: Some(8),
            ..ok.clone()
        };
        assert!(NicPolicy::from_request(&slow)
            .unwrap_err()
            .contains("64 to 10000000"));
        let long = NetworkPolicy {
            allow: vec!["198.51.100.1".into(); MAX_NETWORKS + 1],
            ..ok
        };
        assert!(NicPolicy::from_request(&long)
            .unwrap_err()
            .contains("at most 256"));
    }
}
