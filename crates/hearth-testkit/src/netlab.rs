//! Two network namespaces for the tests and benchmarks of VM networks: a
//! "host" the VM networks hang off (203.0.113.1 on `up0`) and an
//! "internet" (203.0.113.2 on `up1`), joined by a veth pair, both removed
//! on drop. Nothing is sent outside namespaces a test made.

use std::net::Ipv4Addr;
use std::process::Command;

/// The host namespace's address toward the internet namespace: what a
/// server there sees after both NATs.
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const INTERNET_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

/// `ip ARGS`, which must succeed.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `ip ARGS` printed.
pub fn ip_out(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("running ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host and internet namespaces, `{tag}h` and `{tag}i`.
#[derive(Debug)]
pub struct NamespacePair {
    pub host: String,
    pub internet: String,
}

impl NamespacePair {
    pub fn new(tag: &str) -> NamespacePair {
        let pair = NamespacePair {
            host: format!("{tag}h"),
            internet: format!("{tag}i"),
        };
        let (h, i) = (pair.host.as_str(), pair.internet.as_str());
        ip(&["netns", "add", h]);
        ip(&["netns", "add", i]);
        ip(&[
            "-n", h, "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", i,
        ]);
        let (host_addr, internet_addr) = (format!("{HOST_ADDR}/24"), format!("{INTERNET_ADDR}/24"));
        ip(&["-n", h, "addr", "add", &host_addr, "dev", "up0"]);
        ip(&["-n", i, "addr", "add", &internet_addr, "dev", "up1"]);
        for (ns, link) in [(h, "up0"), (i, "up1"), (h, "lo"), (i, "lo")] {
            ip(&["-n", ns, "link", "set", link, "up"]);
        }
        pair
    }
}

impl Drop for NamespacePair {
    fn drop(&mut self) {
        for ns in [&self.host, &self.internet] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
