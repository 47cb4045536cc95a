//! A lab for hearth-net's tests: a namespace playing the host, another
//! playing the internet (203.0.113.0/24, with a TCP server that answers
//! each connection with the address it came from), joined by a veth pair.
//! Nothing is sent outside namespaces the lab made, and dropping the lab
//! removes them all.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hearth_net::{netns, NetHost, Network, Prefix, TransitPool, VmNic};
use hearth_store::SqliteStore;

use hearth_testkit::netlab::NamespacePair;
pub use hearth_testkit::netlab::{ip, HOST_ADDR, INTERNET_ADDR};

/// `None`, after one printed line, when this machine cannot run the tests.
pub fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let why = if !root {
        "not root"
    } else if !Path::new("/dev/net/tun").exists() {
        "no /dev/net/tun"
    } else if hearth_net::nft_binary().is_none() {
        "no nft binary (scripts/setup-host installs nftables)"
    } else {
        return true;
    };
    println!("skipped: hearth-net tests need root, /dev/net/tun and nft: {why}");
    false
}

#[derive(Debug)]
pub struct Lab {
    pub prefix: Prefix,
    pub host_ns: String,
    pub internet_ns: String,
    pub server_port: u16,
    /// A server of the same kind on the host's own address.
    pub host_port: u16,
    pub network: Network<SqliteStore>,
    /// Namespaces made by [`Lab::fake_guest`].
    guests: std::sync::Mutex<Vec<String>>,
    /// The host and internet namespaces, removed after the drop below.
    _pair: NamespacePair,
}

fn unique_prefix() -> Prefix {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tag = (std::process::id() * 16 + n) % 0xff_ffff;
    format!("t{tag:x}").parse().unwrap()
}

impl Lab {
    pub fn new() -> Lab {
        Lab::with_store(Arc::new(SqliteStore::open_in_memory().unwrap()))
    }

    /// A lab whose slots are kept in `store`.
    pub fn with_store(store: Arc<SqliteStore>) -> Lab {
        let prefix = unique_prefix();
        let pair = NamespacePair::new(prefix.as_str());
        let (host_ns, internet_ns) = (pair.host.clone(), pair.internet.clone());
        let server_port = serve_in(&internet_ns, INTERNET_ADDR);
        let host_port = serve_in(&host_ns, HOST_ADDR);
        let host = NetHost::new(prefix.clone(), TransitPool::default(), open_ns(&host_ns));
        Lab {
            prefix,
            host_ns,
            internet_ns,
            server_port,
            host_port,
            network: Network::new(host, store).with_slot_grace(Duration::ZERO),
            guests: std::sync::Mutex::new(Vec::new()),
            _pair: pair,
        }
    }

    /// The server's answer to a connection made from inside namespace
    /// `ns`: the address it saw the connection come from.
    pub fn ask_from(&self, ns: &str, to: Ipv4Addr) -> std::io::Result<String> {
        let port = if to == HOST_ADDR {
            self.host_port
        } else {
            self.server_port
        };
        let target = SocketAddr::from((to, port));
        in_ns(ns, move || {
            let mut stream = TcpStream::connect_timeout(&target, Duration::from_millis(500))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut seen = String::new();
            stream.read_to_string(&mut seen)?;
            Ok(seen)
        })
    }

    /// Stands a namespace in for the guest behind `nic`: its TAP is closed
    /// (so it vanishes) and a veth pair takes its place, named `tap0` in
    /// the VM's namespace with the gateway address, `eth0` in the guest's
    /// with the guest's address and default route. Answers the guest's
    /// namespace. At layer 3 this is the path a guest's packets take.
    pub fn fake_guest(&self, nic: VmNic) -> String {
        let guest = format!("{}g{}", self.prefix, nic.slot.get());
        let (vm_ns, addressing) = (nic.name.clone(), nic.guest.clone());
        drop(nic);
        ip(&["netns", "add", &guest]);
        self.guests.lock().unwrap().push(guest.clone());
        ip(&[
            "-n", &vm_ns, "link", "add", "tap0", "type", "veth", "peer", "name", "eth0", "netns",
            &guest,
        ]);
        let gateway = format!("{}/{}", addressing.gateway, addressing.prefix_len);
        ip(&["-n", &vm_ns, "addr", "add", &gateway, "dev", "tap0"]);
        ip(&["-n", &vm_ns, "link", "set", "tap0", "up"]);
        let address = format!("{}/{}", addressing.address, addressing.prefix_len);
        ip(&["-n", &guest, "addr", "add", &address, "dev", "eth0"]);
        ip(&["-n", &guest, "link", "set", "eth0", "up"]);
        ip(&["-n", &guest, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &guest,
            "route",
            "add",
            "default",
            "via",
            &addressing.gateway.to_string(),
        ]);
        guest
    }

    /// One more address of the internet namespace, with a server of the
    /// same kind on it; its port.
    pub fn internet_address(&self, addr: Ipv4Addr) -> u16 {
        let cidr = format!("{addr}/24");
        ip(&["-n", &self.internet_ns, "addr", "add", &cidr, "dev", "up1"]);
        serve_in(&self.internet_ns, addr)
    }

    /// [`Lab::ask_from`] to any port.
    pub fn ask_port(&self, ns: &str, to: Ipv4Addr, port: u16) -> std::io::Result<String> {
        let target = SocketAddr::from((to, port));
        in_ns(ns, move || {
            let mut stream = TcpStream::connect_timeout(&target, Duration::from_millis(500))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut seen = String::new();
            stream.read_to_string(&mut seen)?;
            Ok(seen)
        })
    }

    /// A server on the internet's address that sends `bytes` zero bytes to
    /// each client and closes; its port.
    pub fn bulk_server(&self, bytes: usize) -> u16 {
        let listener = in_ns(&self.internet_ns, move || {
            TcpListener::bind((INTERNET_ADDR, 0))
        })
        .unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let chunk = vec![0u8; 64 * 1024];
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if stream.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                    left -= n;
                }
            }
        });
        port
    }

    /// Reads everything the bulk server at `port` sends, from inside `ns`:
    /// how many bytes, and how long it took.
    pub fn download(&self, ns: &str, port: u16) -> std::io::Result<(usize, Duration)> {
        let target = SocketAddr::from((INTERNET_ADDR, port));
        in_ns(ns, move || {
            let started = std::time::Instant::now();
            let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            let mut total = 0;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = stream.read(&mut buf)?;
                if n == 0 {
                    return Ok((total, started.elapsed()));
                }
                total += n;
            }
        })
    }

    /// Our names in /run/netns.
    pub fn namespaces(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(netns::NETNS_DIR)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter(|n| n.starts_with(&format!("{}-", self.prefix)))
            .collect();
        names.sort();
        names
    }

    /// The links of the lab's host namespace.
    pub fn host_links(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-n", &self.host_ns, "-o", "link", "show"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut names: Vec<String> = text
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in self.namespaces() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
        let guests = std::mem::take(&mut *self.guests.lock().unwrap());
        for name in &guests {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

pub fn open_ns(name: &str) -> OwnedFd {
    netns::open(name).unwrap()
}

/// Runs `work` on a thread inside namespace `name`.
pub fn in_ns<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let fd = open_ns(name);
    std::thread::spawn(move || {
        netns::enter(&fd)?;
        work()
    })
    .join()
    .expect("the namespace thread panicked")
}

/// A TCP server on `addr` in namespace `name` that writes each client's
/// address and closes; answers its port.
fn serve_in(name: &str, addr: Ipv4Addr) -> u16 {
    let listener = in_ns(name, move || TcpListener::bind((addr, 0))).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            if let Ok(peer) = stream.peer_addr() {
                let _ = stream.write_all(peer.ip().to_string().as_bytes());
            }
        }
    });
    port
}

/// The number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
