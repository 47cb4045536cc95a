//! A guest's network as one word of the kernel command line, for a VM
//! booted with no agent link to tell it (`hearth vm run --network nat`):
//! `hearth.net=ADDRESS/LEN,GATEWAY,MAC[,DNS...]`. The agent reads it and
//! applies it like the host's configuration, before any service starts;
//! the kernel itself ignores it (the Debian kernel has no `ip=`).

use std::net::Ipv4Addr;

use super::GuestNetwork;

/// The kernel command-line parameter carrying the network.
pub const NETWORK_PARAM: &str = "hearth.net=";

impl GuestNetwork {
    /// `hearth.net=172.31.0.2/30,172.31.0.1,02:68:74:00:00:02,172.31.0.1`.
    pub fn to_kernel_word(&self) -> String {
        let mut word = format!(
            "{NETWORK_PARAM}{}/{},{},{}",
            self.address, self.prefix_len, self.gateway, self.mac
        );
        for dns in &self.dns {
            word.push(',');
            word.push_str(&dns.to_string());
        }
        word
    }

    /// The network `hearth.net=` on `cmdline` names; `Ok(None)` when it
    /// names none, an error naming what is wrong otherwise.
    pub fn from_kernel_cmdline(cmdline: &str) -> Result<Option<GuestNetwork>, String> {
        let Some(value) = cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix(NETWORK_PARAM))
        else {
            return Ok(None);
        };
        let bad = |why: &str| format!("{NETWORK_PARAM}{value} is not valid: {why}");
        let mut parts = value.split(',');
        let (address, prefix_len) = parts
            .next()
            .and_then(|a| a.split_once('/'))
            .ok_or_else(|| bad("it starts with ADDRESS/LEN"))?;
        let address: Ipv4Addr = address.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix_len: u8 = prefix_len.parse().map_err(|_| bad("LEN is not 1 to 30"))?;
        let gateway = parts.next().ok_or_else(|| bad("no gateway"))?;
        let gateway: Ipv4Addr = gateway
            .parse()
            .map_err(|_| bad("the gateway is not IPv4"))?;
        let mac = parts.next().ok_or_else(|| bad("no MAC"))?.to_owned();
        let dns = parts
            .map(|d| d.parse().map_err(|_| bad("a resolver is not IPv4")))
            .collect::<Result<Vec<Ipv4Addr>, String>>()?;
        let net = GuestNetwork {
            mac,
            address,
            prefix_len,
            gateway,
            dns,
        };
        net.check().map_err(|why| bad(&why))?;
        Ok(Some(net))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> GuestNetwork {
        GuestNetwork {
            mac: "02:68:74:00:00:02".into(),
            address: Ipv4Addr::new(172, 31, 0, 2),
            prefix_len: 30,
            gateway: Ipv4Addr::new(172, 31, 0, 1),
            dns: vec![Ipv4Addr::new(172, 31, 0, 1)],
        }
    }

    #[test]
    fn a_network_survives_the_kernel_command_line() {
        let line = format!("console=ttyS0 {} quiet", net().to_kernel_word());
        assert_eq!(GuestNetwork::from_kernel_cmdline(&line), Ok(Some(net())));
        let bare = GuestNetwork {
            dns: vec![],
            ..net()
        };
        let line = bare.to_kernel_word();
        assert_eq!(
            line,
            "hearth.net=172.31.0.2/30,172.31.0.1,02:68:74:00:00:02"
        );
        assert_eq!(GuestNetwork::from_kernel_cmdline(&line), Ok(Some(bare)));
    }

    #[test]
    fn no_word_is_no_network_and_a_bad_one_is_named() {
        assert_eq!(GuestNetwork::from_kernel_cmdline("console=ttyS0"), Ok(None));
        for bad in [
            "hearth.net=172.31.0.2,172.31.0.1,02:68:74:00:00:02",
            "hearth.net=172.31.0.2/31,172.31.0.1,02:68:74:00:00:02",
            "hearth.net=172.31.0.2/30,10.0.0.1,02:68:74:00:00:02",
            "hearth.net=172.31.0.2/30,172.31.0.1",
            "hearth.net=172.31.0.2/30,172.31.0.1,02:68:74:00:00:02,nine",
        ] {
            let err = GuestNetwork::from_kernel_cmdline(bad).unwrap_err();
            assert!(err.starts_with(bad), "{err}");
        }
    }
}
