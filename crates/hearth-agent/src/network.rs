//! The guest's NIC, configured by the agent from the host's
//! [`GuestNetwork`] before any service starts: the Debian kernel ignores
//! `ip=`, and a unit waiting on network-online.target would wait on
//! nothing. Done with the classic socket ioctls, which need no netlink
//! library in a static binary, on the interface found by its MAC.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use hearth_types::guest::GuestNetwork;

/// Where the resolver configuration goes.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("no network interface has MAC {0}: is the virtio-net driver loaded?")]
    NoInterface(String),
    #[error("configuring the network: {step} on {interface}")]
    Step {
        step: &'static str,
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error("writing {path}")]
    Resolver {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Configures `net` on its interface and brings it and `lo` up, adds the
/// default route and writes the resolver file; answers the interface.
pub fn apply(net: &GuestNetwork, resolv_conf: &Path) -> Result<String, NetworkError> {
    let sock = Socket::open().map_err(step("opening a socket", "-"))?;
    let name = find_by_mac(&sock, &net.mac)?;
    let on = |what| step(what, &name);
    sock.set_up("lo").map_err(step("bringing up", "lo"))?;
    sock.set_addr(&name, libc::SIOCSIFADDR, net.address)
        .map_err(on("setting the address"))?;
    let mask = Ipv4Addr::from(u32::MAX << (32 - u32::from(net.prefix_len)));
    sock.set_addr(&name, libc::SIOCSIFNETMASK, mask)
        .map_err(on("setting the netmask"))?;
    sock.set_up(&name).map_err(on("bringing up"))?;
    sock.default_route(net.gateway)
        .map_err(on("adding the default route"))?;
    if !net.dns.is_empty() {
        write_resolver(&net.dns, resolv_conf)?;
    }
    Ok(name)
}

fn step(step: &'static str, interface: &str) -> impl FnOnce(io::Error) -> NetworkError {
    let interface = interface.to_owned();
    move |source| NetworkError::Step {
        step,
        interface,
        source,
    }
}

fn write_resolver(dns: &[Ipv4Addr], path: &Path) -> Result<(), NetworkError> {
    let text: String = dns.iter().map(|a| format!("nameserver {a}\n")).collect();
    let fail = |source| NetworkError::Resolver {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("hearth-tmp");
    std::fs::write(&tmp, text).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// The interface whose hardware address is `mac` (any case).
fn find_by_mac(sock: &Socket, mac: &str) -> Result<String, NetworkError> {
    let wanted = mac.to_ascii_lowercase();
    let names = interface_names().map_err(step("listing interfaces", "-"))?;
    names
        .into_iter()
        .find(|n| sock.mac_of(n).is_ok_and(|m| m == wanted))
        .ok_or_else(|| NetworkError::NoInterface(mac.to_owned()))
}

fn interface_names() -> io::Result<Vec<String>> {
    // SAFETY: if_nameindex returns a list ended by a zero entry, or null.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(io::Error::last_os_error());
    }
    let mut names = Vec::new();
    let mut at = list;
    // SAFETY: every entry up to the zero one is valid, with a NUL-ended
    // name; the list is freed once, after the last read.
    unsafe {
        while (*at).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*at).if_name);
            names.push(name.to_string_lossy().into_owned());
            at = at.add(1);
        }
        libc::if_freenameindex(list);
    }
    Ok(names)
}

/// An `AF_INET` datagram socket, for the interface ioctls.
struct Socket(OwnedFd);

/// The kernel's `struct rtentry` (`linux/route.h`), absent from libc for glibc.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn sockaddr_of(addr: Ipv4Addr) -> libc::sockaddr {
    let inet = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes of plain data;
    // this is the cast the socket API is designed around.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(inet) }
}

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: socket takes no pointers.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor nothing else owns.
        Ok(Socket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn request(name: &str) -> io::Result<libc::ifreq> {
        // SAFETY: ifreq is plain data; all-zero is valid.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        if name.len() >= req.ifr_name.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "interface name too long",
            ));
        }
        for (slot, &b) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
            *slot = b as libc::c_char;
        }
        Ok(req)
    }

    /// One ioctl on an `ifreq` (or `rtentry`) that lives for the call.
    fn ioctl<T>(&self, op: libc::Ioctl, arg: &mut T) -> io::Result<()> {
        // SAFETY: every caller passes the struct its `op` reads and writes,
        // borrowed for the whole call.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), op, arg as *mut T) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn mac_of(&self, name: &str) -> io::Result<String> {
        let mut req = Socket::request(name)?;
        self.ioctl(libc::SIOCGIFHWADDR, &mut req)?;
        // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
        let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
        let parts: Vec<String> = data[..6]
            .iter()
            .map(|&b| format!("{:02x}", b as u8))
            .collect();
        Ok(parts.join(":"))
    }

    fn set_addr(&self, name: &str, op: libc::Ioctl, addr: Ipv4Addr) -> io::Result<()> {
        let mut req = Socket::request(name)?;
        req.ifr_ifru.ifru_addr = sockaddr_of(addr);
        self.ioctl(op, &mut req)
    }

    fn set_up(&self, name: &str) -> io::Result<()> {
        let mut req = Socket::request(name)?;
        self.ioctl(libc::SIOCGIFFLAGS, &mut req)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        self.ioctl(libc::SIOCSIFFLAGS, &mut req)
    }

    /// The default route through `gateway`; one already there is kept.
    fn default_route(&self, gateway: Ipv4Addr) -> io::Result<()> {
        let mut route = RtEntry {
            rt_pad1: 0,
            rt_dst: sockaddr_of(Ipv4Addr::UNSPECIFIED),
            rt_gateway: sockaddr_of(gateway),
            rt_genmask: sockaddr_of(Ipv4Addr::UNSPECIFIED),
            rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
            rt_pad2: 0,
            rt_pad3: 0,
            rt_pad4: std::ptr::null_mut(),
            rt_metric: 0,
            rt_dev: std::ptr::null_mut(),
            rt_mtu: 0,
            rt_window: 0,
            rt_irtt: 0,
        };
        match self.ioctl(libc::SIOCADDRT, &mut route) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn ip(args: &[&str]) -> String {
        let out = Command::new("ip").args(args).output().expect("running ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Removes the test's namespace however the test ends.
    struct Removed(String);

    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    /// Runs `apply` inside a namespace the test makes, on a veth link
    /// with the guest's MAC, and reads the result back with `ip`.
    #[test]
    fn the_nic_gets_its_address_route_and_resolver() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped: configuring a NIC in a test namespace needs root");
            return;
        }
        let ns = format!("hagent{}", std::process::id());
        ip(&["netns", "add", &ns]);
        let _gone = Removed(ns.clone());
        ip(&[
            "-n",
            &ns,
            "link",
            "add",
            "nic7",
            "address",
            "02:68:74:00:00:02",
            "type",
            "veth",
            "peer",
            "name",
            "nic8",
        ]);
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        let net = GuestNetwork {
            mac: "02:68:74:00:00:02".into(),
            address: Ipv4Addr::new(172, 31, 0, 2),
            prefix_len: 30,
            gateway: Ipv4Addr::new(172, 31, 0, 1),
            dns: vec![Ipv4Addr::new(172, 31, 0, 1)],
        };
        let fd = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        let path = resolv.clone();
        let applied = std::thread::spawn(move || {
            // SAFETY: fd is an open namespace file; only this thread moves.
            let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "entering the test namespace");
            apply(&net, &path)
        })
        .join()
        .unwrap();
        let addrs = ip(&["-n", &ns, "-4", "addr", "show", "nic7"]);
        let routes = ip(&["-n", &ns, "route", "show", "default"]);
        assert_eq!(applied.unwrap(), "nic7");
        assert!(addrs.contains("inet 172.31.0.2/30"), "{addrs}");
        assert!(
            routes.contains("default via 172.31.0.1 dev nic7"),
            "{routes}"
        );
        let text = std::fs::read_to_string(&resolv).unwrap();
        assert_eq!(text, "nameserver 172.31.0.1\n");
    }

    #[test]
    fn a_missing_nic_is_named_by_its_mac() {
        let net = GuestNetwork {
            mac: "02:00:00:00:00:99".into(),
            address: Ipv4Addr::new(172, 31, 0, 2),
            prefix_len: 30,
            gateway: Ipv4Addr::new(172, 31, 0, 1),
            dns: vec![],
        };
        let err = apply(&net, Path::new("/nonexistent/resolv.conf")).unwrap_err();
        assert!(err.to_string().contains("02:00:00:00:00:99"), "{err}");
    }
}
