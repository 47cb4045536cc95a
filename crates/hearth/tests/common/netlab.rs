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
pub const INTERNET_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

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

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn ip_out(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("running ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The test's namespaces: "host" (where VM networks hang off) and
/// "internet", joined by a veth pair; removed on drop.
pub struct Lab {
    pub prefix: String,
    pub host_ns: String,
    pub internet_ns: String,
    /// Other prefixes whose namespaces the drop removes too.
    pub also_remove: Vec<String>,
}

impl Lab {
    pub fn new() -> Lab {
        let prefix = format!("v{:x}", std::process::id() % 0xf_ffff);
        let lab = Lab {
            host_ns: format!("{prefix}h"),
            internet_ns: format!("{prefix}i"),
            prefix,
            also_remove: Vec::new(),
        };
        let (h, i) = (lab.host_ns.as_str(), lab.internet_ns.as_str());
        ip(&["netns", "add", h]);
        ip(&["netns", "add", i]);
        ip(&[
            "-n", h, "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", i,
        ]);
        ip(&["-n", h, "addr", "add", "203.0.113.1/24", "dev", "up0"]);
        ip(&["-n", i, "addr", "add", "203.0.113.2/24", "dev", "up1"]);
        for (ns, link) in [(h, "up0"), (i, "up1"), (h, "lo"), (i, "lo")] {
            ip(&["-n", ns, "link", "set", link, "up"]);
        }
        lab
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
    /// Also the VM namespaces a failed run left behind (its server, killed
    /// first by the host's drop, could not remove them).
    fn drop(&mut self) {
        let mut left = self.leftovers();
        for prefix in &self.also_remove {
            left.extend(self.leftovers_of(prefix));
        }
        let vm_namespaces = left
            .into_iter()
            .filter_map(|l| l.strip_prefix("namespace ").map(str::to_owned));
        let all: Vec<String> = vm_namespaces
            .chain([self.host_ns.clone(), self.internet_ns.clone()])
            .collect();
        for ns in all {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
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
