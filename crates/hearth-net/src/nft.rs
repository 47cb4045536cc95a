//! Firewall and NAT as nftables rulesets hearth generates from its own
//! typed values (never from user text), each applied in one transaction by
//! `nft -f -` in the calling thread's namespace: a ruleset is in place
//! whole or not at all.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::addressing::{TransitPool, GUEST_GATEWAY};
use crate::guest_sockets::{DNS_PORT, INTERCEPT_HTTP_PORT, INTERCEPT_TLS_PORT};
use crate::names::{Prefix, NS_LINK_NAME, NS_TABLE, TAP_NAME};
use crate::policy::{Ipv4Net, NicPolicy};
use crate::NetError;

/// Networks a VM never reaches through the host: private, loopback,
/// link-local, carrier-grade NAT, multicast and reserved.
const REFUSED: &str = "0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, \
                       172.16.0.0/12, 192.168.0.0/16, 224.0.0.0/3";

/// The packet mark a VM's hole table (see [`slot_holes`]) gives what its
/// tenant opened, so the host's guard lets it through (`ht` in ASCII).
const OPENED_MARK: &str = "0x6874";

/// The named counter, in each namespace, of the guest's packets refused
/// for their destination.
pub(crate) const REFUSED_COUNTER: &str = "refused";

/// Inside a VM's namespace: the guest's traffic leaves by the veth with the
/// namespace's transit address (source NAT), but never for a refused
/// network or one its policy denies or leaves out (counted per VM), and
/// at most at its rate each way; nothing reaches the guest unasked, and
/// nothing reaches the namespace itself.
pub(crate) fn namespace_ruleset(policy: &NicPolicy) -> String {
    let from_guest = format!("iifname \"{TAP_NAME}\"");
    let refuse = format!("counter name \"{REFUSED_COUNTER}\" drop");
    let mut out_rules = Vec::new();
    let mut in_rules = Vec::new();
    if let Some((rate, burst)) = policy.rate_and_burst() {
        let limit = format!("limit rate over {rate} bytes/second burst {burst} bytes drop");
        out_rules.push(format!("{from_guest} {limit}"));
        in_rules.push(format!(
            "iifname \"{NS_LINK_NAME}\" oifname \"{TAP_NAME}\" {limit}"
        ));
    }
    if !policy.deny.is_empty() {
        out_rules.push(format!(
            "{from_guest} ip daddr {{ {} }} {refuse}",
            set(&policy.deny)
        ));
    }
    if !policy.open.is_empty() {
        out_rules.push(format!(
            "{from_guest} ip daddr {{ {} }} oifname \"{NS_LINK_NAME}\" accept",
            set(&policy.open)
        ));
    }
    out_rules.push(format!("{from_guest} ip daddr {{ {REFUSED} }} {refuse}"));
    if !policy.allow.is_empty() {
        out_rules.push(format!(
            "{from_guest} ip daddr != {{ {} }} {refuse}",
            set(&policy.allow)
        ));
    } else if policy.closed() {
        out_rules.push(format!("{from_guest} {refuse}"));
    }
    out_rules.push(format!("{from_guest} oifname \"{NS_LINK_NAME}\" accept"));
    in_rules.push(format!(
        "iifname \"{NS_LINK_NAME}\" oifname \"{TAP_NAME}\" ct state established,related accept"
    ));
    let forward: String = out_rules
        .iter()
        .chain(&in_rules)
        .map(|rule| format!("    {rule}\n"))
        .collect();
    let gw = GUEST_GATEWAY;
    format!(
        "table ip {NS_TABLE} {{}}
flush table ip {NS_TABLE}
table ip {NS_TABLE} {{
  counter {REFUSED_COUNTER} {{}}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    {from_guest} udp dport 53 dnat to {gw}:{DNS_PORT}
    {from_guest} tcp dport 53 dnat to {gw}:{DNS_PORT}
    {from_guest} tcp dport 80 dnat to {gw}:{INTERCEPT_HTTP_PORT}
    {from_guest} tcp dport 443 dnat to {gw}:{INTERCEPT_TLS_PORT}
  }}
  chain input {{
    type filter hook input priority filter; policy drop;
    iifname \"lo\" accept
    ct state established,related accept
    {from_guest} ip daddr {gw} udp dport {DNS_PORT} accept
    {from_guest} ip daddr {gw} tcp dport {DNS_PORT} accept
    {from_guest} ip daddr {gw} tcp dport {{ {INTERCEPT_HTTP_PORT}, {INTERCEPT_TLS_PORT} }} accept
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
{forward}  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"{NS_LINK_NAME}\" masquerade
  }}
}}
"
    )
}

/// `a/24, b/32` for an nftables set.
fn set(networks: &[Ipv4Net]) -> String {
    let items: Vec<String> = networks.iter().map(Ipv4Net::to_string).collect();
    items.join(", ")
}

/// On the host, one table for all VMs: no VM reaches another or the host
/// itself, nor a refused network; what leaves for anywhere else is
/// masqueraded behind the host's address.
pub(crate) fn host_ruleset(prefix: &Prefix, pool: &TransitPool) -> String {
    let links = prefix.link_pattern();
    let pool = format!("{}/{}", pool.network(), pool.prefix_len());
    format!(
        "table ip {prefix} {{}}
flush table ip {prefix}
table ip {prefix} {{
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname \"{links}\" ct state established,related accept
    iifname \"{links}\" counter drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname \"{links}\" oifname \"{links}\" counter drop
    iifname \"{links}\" meta mark != {OPENED_MARK} ip daddr {{ {REFUSED} }} counter drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {pool} oifname != \"{links}\" masquerade
  }}
}}
"
    )
}

/// On the host, one VM's holes in the guard: its table (named like its
/// host link, `name`) marks what leaves that link for the always refused
/// networks its tenant opened (`open`, never another VM's link), before
/// the host's table sees it. A table of its own, so the host's table can
/// be replaced whole without taking the holes with it.
pub(crate) fn slot_holes(prefix: &Prefix, name: &str, open: &[Ipv4Net]) -> String {
    let links = prefix.link_pattern();
    let open = set(open);
    format!(
        "table ip {name} {{}}
flush table ip {name}
table ip {name} {{
  chain forward {{
    type filter hook forward priority filter - 1; policy accept;
    iifname \"{name}\" oifname != \"{links}\" ip daddr {{ {open} }} meta mark set {OPENED_MARK}
  }}
}}
"
    )
}

/// Removes the host's table, or a VM's hole table, whether it exists or not.
pub(crate) fn host_removal(prefix: &Prefix) -> String {
    table_removal(&prefix.to_string())
}

/// Removes table `ip {name}`, whether it exists or not.
pub(crate) fn table_removal(name: &str) -> String {
    format!("table ip {name} {{}}\ndelete table ip {name}\n")
}

/// The nft binary: the usual places first (`hearth serve` may run with a
/// PATH without `/usr/sbin`), then PATH.
pub fn nft_binary() -> Option<PathBuf> {
    let usual = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"];
    if let Some(found) = usual.iter().map(Path::new).find(|p| p.exists()) {
        return Some(found.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nft"))
        .find(|p| p.exists())
}

/// Applies `ruleset` in the calling thread's namespace, in one transaction.
pub(crate) fn apply(ruleset: &str, place: &str) -> Result<(), NetError> {
    run_nft(&["-f", "-"], Some(ruleset), place).map(drop)
}

/// The packets counted by the namespace's refused counter, in the calling
/// thread's namespace.
pub(crate) fn refused_packets(place: &str) -> Result<u64, NetError> {
    let out = run_nft(
        &["list", "counter", "ip", NS_TABLE, REFUSED_COUNTER],
        None,
        place,
    )?;
    parse_packets(&out).ok_or_else(|| NetError::NftRefused {
        place: place.to_owned(),
        stderr: format!("no packet count in `nft list counter`: {out}"),
    })
}

fn parse_packets(listing: &str) -> Option<u64> {
    let mut words = listing.split_whitespace();
    words.find(|w| *w == "packets")?;
    words.next()?.parse().ok()
}

/// `nft list tables` in the calling thread's namespace: `ip hearth`, ...
pub(crate) fn tables(place: &str) -> Result<Vec<String>, NetError> {
    let out = run_nft(&["list", "tables"], None, place)?;
    Ok(out
        .lines()
        .filter_map(|l| l.strip_prefix("table "))
        .map(str::to_owned)
        .collect())
}

fn run_nft(args: &[&str], stdin: Option<&str>, place: &str) -> Result<String, NetError> {
    let nft = nft_binary().ok_or(NetError::NoNft)?;
    let fail = |source| NetError::Nft {
        place: place.to_owned(),
        source,
    };
    let mut child = Command::new(nft)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(fail)?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.unwrap_or_default().as_bytes())
            .map_err(fail)?;
    }
    let out = child.wait_with_output().map_err(fail)?;
    if !out.status.success() {
        return Err(NetError::NftRefused {
            place: place.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_counts_are_read_from_a_counter_listing() {
        let listing = "table ip hearth {\n\tcounter refused {\n\t\tpackets 3 bytes 180\n\t}\n}\n";
        assert_eq!(parse_packets(listing), Some(3));
        assert_eq!(parse_packets("table ip hearth {}"), None);
    }

    #[test]
    fn a_policy_adds_its_denials_its_allow_list_and_its_rate_each_way() {
        let plain = namespace_ruleset(&NicPolicy::default());
        assert!(!plain.contains("limit rate"), "{plain}");
        assert!(!plain.contains("!="), "{plain}");
        let policy = NicPolicy {
            deny: vec![Ipv4Net::parse("203.0.113.9").unwrap()],
            allow: vec![Ipv4Net::parse("203.0.113.0/24").unwrap()],
            bandwidth_kbit: Some(8000),
            ..NicPolicy::default()
        };
        let text = namespace_ruleset(&policy);
        let deny = text.find("ip daddr { 203.0.113.9/32 } counter").unwrap();
        let allow = text.find("ip daddr != { 203.0.113.0/24 } counter").unwrap();
        let accept = text.find("oifname \"veth0\" accept").unwrap();
        assert!(deny < allow, "denials come first: {text}");
        assert!(allow < accept, "{text}");
        assert_eq!(
            text.matches("limit rate over 1000000 bytes/second").count(),
            2,
            "{text}"
        );
    }

    #[test]
    fn the_host_ruleset_names_only_our_links_and_pool() {
        let prefix: Prefix = "ht1".parse().unwrap();
        let text = host_ruleset(&prefix, &TransitPool::default());
        assert!(text.starts_with("table ip ht1 {}\nflush table ip ht1\n"));
        assert!(text.contains("ip saddr 10.231.0.0/16 oifname != \"ht1-s*\" masquerade"));
        assert!(text.contains("iifname \"ht1-s*\" oifname \"ht1-s*\" counter drop"));
        assert!(text.contains("meta mark != 0x6874 ip daddr { 0.0.0.0/8, 10.0.0.0/8"));
    }

    #[test]
    fn an_opened_network_is_let_through_after_denials_and_only_for_its_vm() {
        let policy = NicPolicy {
            deny: vec![Ipv4Net::parse("10.20.0.9").unwrap()],
            allow: vec![Ipv4Net::parse("10.20.0.0/16").unwrap()],
            open: vec![Ipv4Net::parse("10.20.0.0/16").unwrap()],
            ..NicPolicy::default()
        };
        let text = namespace_ruleset(&policy);
        let deny = text.find("{ 10.20.0.9/32 } counter").unwrap();
        let open = text
            .find("{ 10.20.0.0/16 } oifname \"veth0\" accept")
            .unwrap();
        let refused = text.find("{ 0.0.0.0/8,").unwrap();
        assert!(deny < open && open < refused, "{text}");
        let plain = namespace_ruleset(&NicPolicy::default());
        assert_eq!(
            plain.matches("accept").count(),
            text.matches("accept").count() - 1
        );
        let prefix: Prefix = "ht1".parse().unwrap();
        let holes = slot_holes(&prefix, "ht1-s3", &policy.open);
        assert!(holes.starts_with("table ip ht1-s3 {}\nflush table ip ht1-s3\n"));
        assert!(holes.contains(
            "iifname \"ht1-s3\" oifname != \"ht1-s*\" ip daddr { 10.20.0.0/16 } meta mark set 0x6874"
        ));
    }
}
