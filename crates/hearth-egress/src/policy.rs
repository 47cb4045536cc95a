//! What one connection may reach: domains, ports and the address classes
//! that are refused after resolution.
//!
//! A policy is data built by the caller from a tenant's and a session's
//! settings; the checks here are pure functions of it, so every rule is
//! tested without a socket.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::Serialize;

use crate::target::Host;
use crate::upstream::UpstreamProxy;

/// A policy setting that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("`{0}` is not a domain name, an IP address or a `*.` wildcard")]
    BadDomain(String),
    #[error("`{0}` is not a network in CIDR notation (e.g. 127.0.0.0/8)")]
    BadNetwork(String),
    #[error("`{0}` was given no address: give it at least one")]
    NoAddress(String),
}

/// One entry of a domain allow-list: an exact name (or IP literal), or
/// `*.example.com`, which matches every name below `example.com` but not
/// `example.com` itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainPattern {
    Exact(String),
    /// The parent domain, without the `*.`.
    Below(String),
}

impl DomainPattern {
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let bad = || PolicyError::BadDomain(text.to_owned());
        let name = normalize_name(text);
        if let Some(parent) = name.strip_prefix("*.") {
            return is_dns_name(parent)
                .then(|| Self::Below(parent.to_owned()))
                .ok_or_else(bad);
        }
        let literal = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return Ok(Self::Exact(ip.to_string()));
        }
        is_dns_name(&name)
            .then_some(Self::Exact(name))
            .ok_or_else(bad)
    }

    /// Whether `host` (normalized: lower case, no trailing dot) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => host == name,
            Self::Below(parent) => host
                .strip_suffix(parent.as_str())
                .is_some_and(|label| label.len() > 1 && label.ends_with('.')),
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Below(parent) => write!(f, "*.{parent}"),
        }
    }
}

impl FromStr for DomainPattern {
    type Err = PolicyError;
    fn from_str(text: &str) -> Result<Self, PolicyError> {
        Self::parse(text)
    }
}

/// Lower case, without one trailing dot (`Example.COM.` is `example.com`).
pub(crate) fn normalize_name(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    match lower.strip_suffix('.') {
        Some(stripped) => stripped.to_owned(),
        None => lower,
    }
}

/// A DNS host name: 1 to 253 characters, labels of 1 to 63 letters,
/// digits, `-` or `_`, not starting or ending with `-`.
pub(crate) fn is_dns_name(name: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (1..=253).contains(&name.len()) && name.split('.').all(label_ok)
}

/// A network in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct IpNet {
    address: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn new(address: IpAddr, prefix: u8) -> Result<Self, PolicyError> {
        let max = if address.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(PolicyError::BadNetwork(format!("{address}/{prefix}")));
        }
        Ok(Self { address, prefix })
    }

    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let bad = || PolicyError::BadNetwork(text.to_owned());
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => {
                let address: IpAddr = address.parse().map_err(|_| bad())?;
                (address, prefix.parse().map_err(|_| bad())?)
            }
            None => {
                let address: IpAddr = text.parse().map_err(|_| bad())?;
                (address, if address.is_ipv4() { 32 } else { 128 })
            }
        };
        Self::new(address, prefix).map_err(|_| bad())
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = PolicyError;
    fn from_str(text: &str) -> Result<Self, PolicyError> {
        Self::parse(text)
    }
}

/// The classes of addresses that are always refused (unless a network of
/// the policy allows the address explicitly).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressClass {
    /// 0.0.0.0/8, `::`.
    Unspecified,
    /// 127.0.0.0/8, `::1`.
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16), ULA fc00::/7, the old
    /// site-local fec0::/10.
    Private,
    /// 169.254/16 (where clouds keep their metadata service), fe80::/10.
    LinkLocal,
    /// Carrier-grade NAT, 100.64/10.
    SharedCgnat,
    /// 224/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 240/4, and the deprecated IPv4-compatible IPv6 addresses (::/96).
    Reserved,
    /// One of the host's own addresses, as the caller listed them.
    Host,
}

impl AddressClass {
    /// The class's short name, as rules and records name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::SharedCgnat => "shared (CGNAT)",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Reserved => "reserved",
            Self::Host => "the host's own",
        }
    }
}

/// The class of an address that is never reachable by default, or `None`
/// for an ordinary (global) address. IPv4-mapped IPv6 addresses
/// (`::ffff:10.0.0.1`) are classified as the IPv4 address they carry.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match canonical(ip) {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => classify_v6(ip),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    let [a, b, ..] = ip.octets();
    Some(match (a, b) {
        _ if ip.is_broadcast() => AddressClass::Broadcast,
        (0, _) => AddressClass::Unspecified,
        (127, _) => AddressClass::Loopback,
        (10, _) | (172, 16..=31) | (192, 168) => AddressClass::Private,
        (169, 254) => AddressClass::LinkLocal,
        (100, 64..=127) => AddressClass::SharedCgnat,
        (224..=239, _) => AddressClass::Multicast,
        (240..=255, _) => AddressClass::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    let first = ip.segments()[0];
    Some(match first {
        _ if ip.is_unspecified() => AddressClass::Unspecified,
        _ if ip.is_loopback() => AddressClass::Loopback,
        _ if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 => AddressClass::Private,
        _ if first & 0xffc0 == 0xfe80 => AddressClass::LinkLocal,
        _ if first & 0xff00 == 0xff00 => AddressClass::Multicast,
        _ if u128::from(ip) >> 32 == 0 => AddressClass::Reserved,
        _ => return None,
    })
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries; any other
/// address as it is.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Which domains a connection may name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Domains {
    Any,
    Only(Vec<DomainPattern>),
}

/// Which ports a connection may reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ports {
    Any,
    Only(Vec<u16>),
}

impl Default for Ports {
    /// HTTP and HTTPS.
    fn default() -> Self {
        Self::Only(vec![80, 443])
    }
}

/// Why a connection was refused by the policy. Its `Display` names the
/// rule; it never holds anything beyond the host, port and address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Denial {
    #[error("`{host}` is not in the allowed domains (rule: domains)")]
    Domain { host: String },
    #[error("port {port} is not allowed (rule: ports)")]
    Port { port: u16 },
    #[error("`{host}` has the {} address {address} (rule: address class `{}`)", class.name(), class.name())]
    Address {
        host: String,
        address: IpAddr,
        class: AddressClass,
    },
    #[error(
        "`{host}` has the address {address}, which the networks rules refuse (rule: networks)"
    )]
    Network { host: String, address: IpAddr },
}

impl Denial {
    /// The rule that refused, as a short stable name: `domains`, `ports`,
    /// or `address:<class>`.
    pub fn rule(&self) -> String {
        match self {
            Self::Domain { .. } => "domains".to_owned(),
            Self::Port { .. } => "ports".to_owned(),
            Self::Address { class, .. } => format!("address:{}", class.name()),
            Self::Network { .. } => "networks".to_owned(),
        }
    }
}

/// What one connection may reach.
#[derive(Clone, Debug)]
pub struct Policy {
    domains: Domains,
    ports: Ports,
    allowed_networks: Vec<IpNet>,
    host_addresses: Vec<IpAddr>,
    denied_networks: Vec<IpNet>,
    only_networks: Vec<IpNet>,
    upstream: Option<UpstreamProxy>,
}

impl Policy {
    /// Only these domains (exact names and `*.` wildcards), on ports 80
    /// and 443.
    pub fn allow_list<I, S>(patterns: I) -> Result<Self, PolicyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let patterns = patterns
            .into_iter()
            .map(|p| DomainPattern::parse(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self::with_domains(Domains::Only(patterns)))
    }

    /// Any domain, on ports 80 and 443. The address classes still apply.
    pub fn any_domain() -> Self {
        Self::with_domains(Domains::Any)
    }

    pub fn with_domains(domains: Domains) -> Self {
        Self {
            domains,
            ports: Ports::default(),
            allowed_networks: Vec::new(),
            host_addresses: Vec::new(),
            denied_networks: Vec::new(),
            only_networks: Vec::new(),
            upstream: None,
        }
    }

    pub fn with_ports(mut self, ports: Ports) -> Self {
        self.ports = ports;
        self
    }

    /// Allows a network that the address classes would refuse (e.g.
    /// 127.0.0.0/8 for a fake provider a test runs on the host).
    pub fn allow_network(mut self, network: IpNet) -> Self {
        self.allowed_networks.push(network);
        self
    }

    /// Refuses addresses in `network`, before anything else (a VM's
    /// `deny`).
    pub fn deny_network(mut self, network: IpNet) -> Self {
        self.denied_networks.push(network);
        self
    }

    /// Once any is given, refuses addresses outside these networks (a VM's
    /// `allow`); the address classes still apply inside them.
    pub fn only_network(mut self, network: IpNet) -> Self {
        self.only_networks.push(network);
        self
    }

    /// The host's own addresses, refused like the classes.
    pub fn with_host_addresses(mut self, addresses: Vec<IpAddr>) -> Self {
        self.host_addresses = addresses;
        self
    }

    /// Connect through another HTTP proxy.
    pub fn with_upstream(mut self, upstream: UpstreamProxy) -> Self {
        self.upstream = Some(upstream);
        self
    }

    pub fn upstream(&self) -> Option<&UpstreamProxy> {
        self.upstream.as_ref()
    }

    pub fn check_port(&self, port: u16) -> Result<(), Denial> {
        match &self.ports {
            Ports::Only(ports) if !ports.contains(&port) => Err(Denial::Port { port }),
            _ => Ok(()),
        }
    }

    /// Whether the domain policy allows `host`. An IP literal is allowed
    /// by an allow-list only if it is listed as such.
    pub fn check_host(&self, host: &Host) -> Result<(), Denial> {
        let Domains::Only(patterns) = &self.domains else {
            return Ok(());
        };
        let name = match host {
            Host::Name(name) => name.clone(),
            Host::Ip(ip) => ip.to_string(),
        };
        if patterns.iter().any(|p| p.matches(&name)) {
            Ok(())
        } else {
            Err(Denial::Domain { host: name })
        }
    }

    /// Whether `address` (one that `host` resolved to, or its literal) may
    /// be connected to.
    pub fn check_address(&self, host: &Host, address: IpAddr) -> Result<(), Denial> {
        let ip = canonical(address);
        let within = |nets: &[IpNet]| nets.iter().any(|n| n.contains(ip) || n.contains(address));
        if within(&self.denied_networks)
            || (!self.only_networks.is_empty() && !within(&self.only_networks))
        {
            return Err(Denial::Network {
                host: host.to_string(),
                address,
            });
        }
        if self
            .allowed_networks
            .iter()
            .any(|net| net.contains(ip) || net.contains(address))
        {
            return Ok(());
        }
        let own = self.host_addresses.iter().any(|own| canonical(*own) == ip);
        let class = if own {
            Some(AddressClass::Host)
        } else {
            classify(ip)
        };
        match class {
            Some(class) => Err(Denial::Address {
                host: host.to_string(),
                address,
                class,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn refused_classes() {
        for (text, class) in [
            ("0.0.0.0", AddressClass::Unspecified),
            ("127.0.0.1", AddressClass::Loopback),
            ("127.255.0.9", AddressClass::Loopback),
            ("10.0.0.1", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("172.31.255.255", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("169.254.169.254", AddressClass::LinkLocal),
            ("100.64.0.1", AddressClass::SharedCgnat),
            ("100.127.255.255", AddressClass::SharedCgnat),
            ("224.0.0.1", AddressClass::Multicast),
            ("255.255.255.255", AddressClass::Broadcast),
            ("240.0.0.1", AddressClass::Reserved),
            ("::", AddressClass::Unspecified),
            ("::1", AddressClass::Loopback),
            ("fd00::1", AddressClass::Private),
            ("fc00::1", AddressClass::Private),
            ("fe80::1", AddressClass::LinkLocal),
            ("ff02::1", AddressClass::Multicast),
            ("::ffff:10.0.0.1", AddressClass::Private),
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:169.254.169.254", AddressClass::LinkLocal),
            ("::10.0.0.1", AddressClass::Reserved),
        ] {
            assert_eq!(classify(ip(text)), Some(class), "{text}");
        }
    }

    #[test]
    fn global_addresses_pass() {
        for text in [
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2606:2800:220:1::1",
        ] {
            assert_eq!(classify(ip(text)), None, "{text}");
        }
    }

    #[test]
    fn wildcards_match_below_only() {
        let p = DomainPattern::parse("*.Example.com.").unwrap();
        assert!(p.matches("login.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("evilexample.com"));
        assert!(!p.matches(".example.com"));
        let exact = DomainPattern::parse("example.com").unwrap();
        assert!(exact.matches("example.com"));
        assert!(!exact.matches("www.example.com"));
        for bad in ["", "*.", "a..b", "-a.com", "a b", "*.*.com", "http://x"] {
            assert!(DomainPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn networks_lift_classes_and_host_addresses_are_refused() {
        let host = Host::Name("login.example.test".into());
        let policy = Policy::any_domain()
            .allow_network(IpNet::parse("127.0.0.0/8").unwrap())
            .with_host_addresses(vec![ip("203.0.113.7")]);
        assert!(policy.check_address(&host, ip("127.0.0.1")).is_ok());
        assert!(policy.check_address(&host, ip("::ffff:127.0.0.1")).is_ok());
        assert!(policy.check_address(&host, ip("10.0.0.1")).is_err());
        let denial = policy
            .check_address(&host, ip("::ffff:203.0.113.7"))
            .unwrap_err();
        assert_eq!(denial.rule(), "address:the host's own");
        assert!(policy.check_address(&host, ip("93.184.216.34")).is_ok());
    }

    #[test]
    fn cidr_parsing() {
        assert!(IpNet::parse("10.0.0.0/8")
            .unwrap()
            .contains(ip("10.255.0.1")));
        assert!(!IpNet::parse("10.0.0.0/8").unwrap().contains(ip("11.0.0.1")));
        assert!(IpNet::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
        assert!(IpNet::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert!(IpNet::parse("::1").unwrap().contains(ip("::1")));
        for bad in ["10.0.0.0/33", "fd00::/129", "x/8", "10.0.0.0/"] {
            assert!(IpNet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn allow_list_and_ports() {
        let policy = Policy::allow_list(["login.example.com", "*.auth.example.com"]).unwrap();
        assert!(policy
            .check_host(&Host::Name("login.example.com".into()))
            .is_ok());
        assert!(policy
            .check_host(&Host::Name("x.auth.example.com".into()))
            .is_ok());
        let denial = policy
            .check_host(&Host::Name("evil.test".into()))
            .unwrap_err();
        assert_eq!(denial.rule(), "domains");
        assert!(denial.to_string().contains("evil.test"));
        assert!(policy.check_host(&Host::Ip(ip("10.0.0.1"))).is_err());
        assert!(policy.check_port(443).is_ok());
        assert_eq!(policy.check_port(22), Err(Denial::Port { port: 22 }));
        assert!(policy.with_ports(Ports::Any).check_port(22).is_ok());
    }
}
