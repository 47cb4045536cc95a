//! A network lab for the tests of VM networks: a "host" namespace VM
//! networks hang off and an "internet" namespace with an HTTP server that
//! answers with the address it saw, joined by a veth pair and removed on
//! drop. No packet leaves the namespaces a test made.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The test host namespace's address toward the internet namespace: what
/// the server sees after both NATs.
pub const HOST_ADDR: &str = "203.0.113.1";
use hearth_testkit::netlab::NamespacePair;
// Not every test binary that includes `common` uses each of them.
#[allow(unused_imports)]
pub use hearth_testkit::netlab::{ip, ip_out, INTERNET_ADDR};

/// False, after one printed line, when this machine cannot run the test.
pub fn can_run() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let why = if !root {
        "not root"
    } else if !Path::new("/dev/net/tun").exists() {
        "no /dev/net/tun"
    } else if hearth_net::nft_binary().is_none() {
        "no nft binary (scripts/setup-host installs nftables)"
    } else if hearth_testkit::static_agent().is_none() {
        "no static guest agent"
    } else {
        return true;
    };
    println!("skipped: VM networks need root, /dev/net/tun, nft and the agent: {why}");
    false
}

/// The test's namespaces: "host" (where VM networks hang off) and
/// "internet", joined by a veth pair; removed on drop, after the VM
/// namespaces of ours a failed run left behind.
pub struct Lab {
    pub prefix: String,
    pub host_ns: String,
    pub internet_ns: String,
    /// Other prefixes whose namespaces the drop removes too.
    pub also_remove: Vec<String>,
    /// Removed after the drop above.
    _pair: NamespacePair,
}

impl Lab {
    pub fn new() -> Lab {
        let prefix = format!("v{:x}", std::process::id() % 0xf_ffff);
        let pair = NamespacePair::new(&prefix);
        Lab {
            host_ns: pair.host.clone(),
            internet_ns: pair.internet.clone(),
            prefix,
            also_remove: Vec::new(),
            _pair: pair,
        }
    }

    /// VM namespaces (`/run/netns/{prefix}-s*`) and host links of ours.
    pub fn leftovers(&self) -> Vec<String> {
        self.leftovers_of(&self.prefix)
    }

    /// The same for names made with `prefix` (`hearth vm run`'s `hrun`).
    pub fn leftovers_of(&self, prefix: &str) -> Vec<String> {
        let ours = format!("{prefix}-s");
        let namespaces = ip_out(&["netns", "list"]);
        let links = ip_out(&["-n", &self.host_ns, "-o", "link", "show"]);
        let mut left: Vec<String> = namespaces
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&ours))
            .map(|n| format!("namespace {n}"))
            .collect();
        left.extend(
            links
                .lines()
                .filter_map(|l| l.split(": ").nth(1))
                .map(|n| n.split('@').next().unwrap_or(n))
                .filter(|n| n.starts_with(&ours))
                .map(|n| format!("link {n}")),
        );
        left
    }
}

impl Drop for Lab {
    /// The VM namespaces a failed run left behind (its server, killed
    /// first by the host's drop, could not remove them); the pair goes
    /// after this.
    fn drop(&mut self) {
        let mut left = self.leftovers();
        for prefix in &self.also_remove {
            left.extend(self.leftovers_of(prefix));
        }
        for ns in left.iter().filter_map(|l| l.strip_prefix("namespace ")) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// An HTTP server on the internet namespace's address answering every
/// request with the peer's address; its port.
pub fn serve_in(ns: &str) -> u16 {
    serve_at(ns, INTERNET_ADDR)
}

/// The same server on `at` (any address of namespace `ns`): its port.
pub fn serve_at(ns: &str, at: Ipv4Addr) -> u16 {
    serve_on(ns, at, 0)
}

/// The same server on `at:port` (`0`: any free port): its port.
pub fn serve_on(ns: &str, at: Ipv4Addr, port: u16) -> u16 {
    let path = format!("/run/netns/{ns}");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("the namespace");
        // SAFETY: setns(2) on an open namespace file; it moves only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let listener = TcpListener::bind((at, port)).expect("bind");
        tx.send(listener.local_addr().unwrap().port()).unwrap();
        for stream in listener.incoming().flatten() {
            let _ = answer(stream);
        }
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the server")
}

pub fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 512];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let body = format!("{}\n", stream.peer_addr()?.ip());
    let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}
