//! What a host needs before VMs get networks, as findings `hearth doctor`
//! prints: the nft binary, IPv4 forwarding, and a transit pool that
//! overlaps none of the host's routes (doctor checks `/dev/net/tun` itself).

use std::net::Ipv4Addr;

use crate::addressing::TransitPool;
use crate::names::Prefix;
use crate::nft::nft_binary;

/// One check's outcome: `fix` is set when it failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub what: String,
    pub fix: Option<String>,
}

fn good(what: String) -> Finding {
    Finding { what, fix: None }
}

fn bad(what: String, fix: &str) -> Finding {
    Finding {
        what,
        fix: Some(fix.to_owned()),
    }
}

/// Every networking check on this host, for names `prefix` and `pool`.
pub fn checks(prefix: &Prefix, pool: &TransitPool) -> Vec<Finding> {
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    vec![
        nft(),
        forward(forwarding.trim() == "1"),
        pool_overlap(pool, &overlapping_routes(&routes, pool, prefix)),
    ]
}

fn nft() -> Finding {
    match nft_binary() {
        Some(path) => good(format!("nftables: {} (VM networks)", path.display())),
        None => bad(
            "nft not found: VMs cannot get networks".to_owned(),
            "run scripts/setup-host (installs nftables)",
        ),
    }
}

fn forward(on: bool) -> Finding {
    if on {
        good("IPv4 forwarding on".to_owned())
    } else {
        bad(
            "IPv4 forwarding off: `hearth serve` turns it on when a VM first asks for a network".to_owned(),
            "sysctl -w net.ipv4.ip_forward=1 (and net.ipv4.ip_forward=1 in /etc/sysctl.d/ to keep it)",
        )
    }
}

fn pool_overlap(pool: &TransitPool, clashes: &[String]) -> Finding {
    let net = format!("{}/{}", pool.network(), pool.prefix_len());
    if clashes.is_empty() {
        good(format!("network pool {net} overlaps no host route"))
    } else {
        bad(
            format!(
                "network pool {net} overlaps host routes: {}",
                clashes.join(", ")
            ),
            "start `hearth serve --network-pool` with a free network, such as 10.233.0.0/16",
        )
    }
}

/// The routes of `/proc/net/route` text that share addresses with the
/// pool, as `network/len dev`; default routes and hearth's own links do
/// not count.
pub fn overlapping_routes(text: &str, pool: &TransitPool, prefix: &Prefix) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(parse_route)
        .filter(|(dev, _, len)| *len > 0 && prefix.parse_slot(dev).is_none())
        .filter(|(_, net, len)| pool.overlaps(*net, *len))
        .map(|(dev, net, len)| format!("{net}/{len} dev {dev}"))
        .collect()
}

/// `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`, the
/// addresses in host-order hex.
fn parse_route(line: &str) -> Option<(String, Ipv4Addr, u8)> {
    let cols: Vec<&str> = line.split_whitespace().collect();
    let dest = u32::from_str_radix(cols.get(1)?, 16).ok()?;
    let mask = u32::from_str_radix(cols.get(7)?, 16).ok()?;
    Some((
        cols[0].to_owned(),
        Ipv4Addr::from(u32::from_be_bytes(dest.to_le_bytes())),
        mask.count_ones() as u8,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
docker0\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0
hearth-s3\t0C00E70A\t00000000\t0001\t0\t0\t0\tFCFFFFFF\t0\t0\t0
";

    #[test]
    fn only_real_overlaps_are_reported() {
        let prefix = Prefix::default();
        let found = overlapping_routes(ROUTES, &TransitPool::default(), &prefix);
        assert_eq!(found, vec!["10.0.0.0/8 dev docker0".to_owned()]);
        let elsewhere = TransitPool::new(Ipv4Addr::new(10, 240, 0, 0), 16).unwrap();
        let docker_only = overlapping_routes(ROUTES, &elsewhere, &prefix);
        assert_eq!(docker_only.len(), 1, "10/8 covers every 10.x pool");
    }
}
