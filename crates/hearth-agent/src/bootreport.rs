//! The boot report: what the guest looks like to the agent, sent shortly
//! after it starts and again once the VM is ready, so a VM that never gets
//! ready still explains itself. Every command runs with a deadline; without
//! systemd the unit and job lists are simply empty.

use std::ffi::CStr;
use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hearth_types::guest::{BootReport, DiskUsage, FailedUnit, Interface};

use crate::reaper::reaper;

/// The longest any one command of the report may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(3);
/// Failed units reported at most (each costs a journalctl).
const MAX_FAILED_UNITS: usize = 20;

/// Collects the report; `agent_started_ms` is the kernel's uptime when the
/// agent started.
pub fn collect(agent_started_ms: u64) -> BootReport {
    let (memory_total_kib, memory_available_kib) = memory();
    BootReport {
        agent_started_ms,
        kernel: kernel_release(),
        failed_units: failed_units(),
        waiting_jobs: waiting_jobs(),
        listening: listening(),
        interfaces: interfaces(),
        memory_total_kib,
        memory_available_kib,
        disks: disks(),
        clock: crate::clock::report(),
    }
}

/// `systemctl is-system-running`: `starting`, `running`, `degraded`, ...;
/// `None` without systemd.
pub fn systemd_state() -> Option<String> {
    let state = output_of(&["systemctl", "is-system-running"]);
    let state = state.trim();
    (!state.is_empty()).then(|| state.to_owned())
}

/// What to do after reading systemd's state `elapsed` into the agent's life.
#[derive(Debug, PartialEq, Eq)]
pub enum Settle {
    /// Keep watching.
    Wait,
    /// Report now: the boot is still under way after `STUCK_AFTER` (its
    /// waiting jobs tell why); keep watching.
    ReportStuck,
    /// Report now: the boot is over (or no systemd, or given up); stop.
    ReportDone,
    /// No systemd: nothing to watch.
    Stop,
}

/// A boot still under way after this long is reported as it stands.
pub const STUCK_AFTER: Duration = Duration::from_secs(20);
/// Watching systemd ends after this long.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(600);

/// The next step of watching systemd's boot, given its state.
pub fn settle(state: Option<&str>, elapsed: Duration, stuck_reported: bool) -> Settle {
    match state {
        None => Settle::Stop,
        Some("initializing" | "starting") if elapsed >= GIVE_UP_AFTER => Settle::ReportDone,
        Some("initializing" | "starting") if elapsed >= STUCK_AFTER && !stuck_reported => {
            Settle::ReportStuck
        }
        Some("initializing" | "starting") => Settle::Wait,
        Some(_) => Settle::ReportDone,
    }
}

/// `uname -r`.
fn kernel_release() -> String {
    // SAFETY: an all-zero utsname is valid; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is valid and writable.
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    // SAFETY: uname NUL-terminates `release`.
    unsafe { CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn failed_units() -> Vec<FailedUnit> {
    let listed = output_of(&["systemctl", "--failed", "--plain", "--no-legend"]);
    unit_names(&listed)
        .into_iter()
        .take(MAX_FAILED_UNITS)
        .map(|unit| {
            let log = output_of(&[
                "journalctl",
                "-u",
                &unit,
                "-n",
                "10",
                "--no-pager",
                "-o",
                "cat",
            ]);
            FailedUnit {
                unit,
                last_lines: log.lines().map(str::to_owned).collect(),
            }
        })
        .collect()
}

/// The first word of each line of `systemctl --plain --no-legend`.
fn unit_names(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.contains('.'))
        .map(str::to_owned)
        .collect()
}

/// `systemctl list-jobs`: each line, spaces squeezed (`ID UNIT TYPE STATE`).
fn waiting_jobs() -> Vec<String> {
    output_of(&["systemctl", "list-jobs", "--plain", "--no-legend"])
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

/// The stdout of `argv`, empty when it cannot run or outlives its deadline.
fn output_of(argv: &[&str]) -> String {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env("SYSTEMD_COLORS", "0");
    let Ok(mut child) = reaper().spawn(&mut cmd) else {
        return String::new();
    };
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.take(1 << 20).read_to_string(&mut text);
        }
        text
    });
    let deadline = Instant::now() + COMMAND_DEADLINE;
    if reaper().wait(child.id(), Some(deadline)).is_none() {
        // SAFETY: kill(2) of our own child, whose status is unclaimed.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        reaper().wait(child.id(), None);
    }
    reader.join().unwrap_or_default()
}

fn listening() -> Vec<String> {
    let mut all = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        all.extend(listening_in(&text, v6));
    }
    all
}

/// The `addr:port` of each LISTEN (state 0A) socket of /proc/net/tcp{,6}.
fn listening_in(table: &str, v6: bool) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(3) != Some(&"0A") {
                return None;
            }
            let (addr, port) = f.get(1)?.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let addr = if v6 {
                format!("[{}]", parse_v6(addr)?)
            } else {
                parse_v4(addr)?.to_string()
            };
            Some(format!("{addr}:{port}"))
        })
        .collect()
}

/// The kernel prints the address as a native-endian (little) u32.
fn parse_v4(hex: &str) -> Option<Ipv4Addr> {
    let n = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(n.to_le_bytes()))
}

/// Four native-endian u32 words.
fn parse_v6(hex: &str) -> Option<Ipv6Addr> {
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for i in 0..4 {
        let word = u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok()?;
        bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
    }
    Some(Ipv6Addr::from(bytes))
}

fn interfaces() -> Vec<Interface> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let addresses = addresses();
    names
        .into_iter()
        .map(|name| {
            let flags = std::fs::read_to_string(format!("/sys/class/net/{name}/flags"))
                .ok()
                .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
                .unwrap_or(0);
            let addresses = addresses
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, a)| a.clone())
                .collect();
            Interface {
                up: flags & libc::IFF_UP as u32 != 0,
                name,
                addresses,
            }
        })
        .collect()
}

/// (interface, `addr/prefix`) of every IPv4 and IPv6 address.
fn addresses() -> Vec<(String, String)> {
    let mut list = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return list;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated name, per getifaddrs.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: the pointers come from getifaddrs and match their family.
        if let Some(a) = unsafe { address_of(ifa.ifa_addr, ifa.ifa_netmask) } {
            list.push((name, a));
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    list
}

/// `addr/prefix` of an AF_INET or AF_INET6 sockaddr and its netmask.
///
/// # Safety
/// `addr` must point to a valid sockaddr; `mask` must be null or point to a
/// sockaddr of the same family.
unsafe fn address_of(addr: *const libc::sockaddr, mask: *const libc::sockaddr) -> Option<String> {
    // SAFETY: the caller guarantees `addr` is valid.
    let family = i32::from(unsafe { (*addr).sa_family });
    let prefix = |bytes: &[u8]| bytes.iter().map(|b| b.count_ones()).sum::<u32>();
    match family {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let a = unsafe { &*(addr as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes());
            let bits = if mask.is_null() {
                32
            } else {
                // SAFETY: same family as `addr`, per the caller.
                let m = unsafe { &*(mask as *const libc::sockaddr_in) };
                prefix(&m.sin_addr.s_addr.to_ne_bytes())
            };
            Some(format!("{ip}/{bits}"))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let a = unsafe { &*(addr as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let bits = if mask.is_null() {
                128
            } else {
                // SAFETY: same family as `addr`, per the caller.
                let m = unsafe { &*(mask as *const libc::sockaddr_in6) };
                prefix(&m.sin6_addr.s6_addr)
            };
            Some(format!("{ip}/{bits}"))
        }
        _ => None,
    }
}

/// MemTotal and MemAvailable of /proc/meminfo, KiB.
fn memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

fn disks() -> Vec<DiskUsage> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    real_mounts(&mounts)
        .into_iter()
        .filter_map(|mount| {
            let (total_kib, available_kib) = statvfs(&mount)?;
            Some(DiskUsage {
                mount,
                total_kib,
                available_kib,
            })
        })
        .collect()
}

/// Mount points backed by a disk (or the root's overlay), once each.
fn real_mounts(mounts: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(source), Some(point), Some(fstype)) = (f.first(), f.get(1), f.get(2)) else {
            continue;
        };
        let real = source.starts_with("/dev/") || *fstype == "overlay";
        let point = point.replace("\\040", " ");
        if real && !seen.contains(&point) {
            seen.push(point);
        }
    }
    seen
}

fn statvfs(path: &str) -> Option<(u64, u64)> {
    let c = std::ffi::CString::new(path).ok()?;
    // SAFETY: an all-zero statvfs is valid; statvfs fills it.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated, `s` valid and writable.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let kib = |blocks: u64| blocks * s.f_frsize / 1024;
    Some((kib(s.f_blocks), kib(s.f_bavail)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_systemd_boot_is_reported_when_done_or_stuck() {
        let s = Duration::from_secs;
        assert_eq!(settle(None, s(1), false), Settle::Stop);
        assert_eq!(settle(Some("starting"), s(1), false), Settle::Wait);
        assert_eq!(settle(Some("starting"), s(21), false), Settle::ReportStuck);
        assert_eq!(settle(Some("starting"), s(22), true), Settle::Wait);
        assert_eq!(settle(Some("degraded"), s(5), false), Settle::ReportDone);
        assert_eq!(settle(Some("running"), s(30), true), Settle::ReportDone);
        assert_eq!(settle(Some("starting"), s(601), true), Settle::ReportDone);
        // Without systemd (this agent's own test host may have none) the
        // watch stops at once.
        if systemd_state().is_none() {
            assert_eq!(
                settle(systemd_state().as_deref(), s(0), false),
                Settle::Stop
            );
        }
    }

    #[test]
    fn listening_sockets_are_read_from_proc_net_tcp() {
        let v4 = "  sl  local_address rem_address   st\n\
                  0: 0100007F:1F90 00000000:0000 0A 0\n\
                  1: 00000000:0016 00000000:0000 0A 0\n\
                  2: 0100007F:9C40 0100007F:1F90 01 0\n";
        assert_eq!(listening_in(v4, false), ["127.0.0.1:8080", "0.0.0.0:22"]);
        let v6 = "  sl  local_address\n\
                  0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 0\n";
        assert_eq!(listening_in(v6, true), ["[::1]:80"]);
    }

    #[test]
    fn unit_names_and_real_mounts_are_picked_out() {
        let failed = "web.service loaded failed failed Web\nx.mount loaded failed failed X\n";
        assert_eq!(unit_names(failed), ["web.service", "x.mount"]);
        assert!(unit_names("").is_empty());
        let mounts = "/dev/vda / ext4 rw 0 0\nproc /proc proc rw 0 0\n\
                      overlay /merged overlay rw 0 0\n/dev/vdb /data\\040x ext4 rw 0 0\n\
                      /dev/vda / ext4 rw 0 0\n";
        assert_eq!(real_mounts(mounts), ["/", "/merged", "/data x"]);
    }

    #[test]
    fn a_report_of_this_machine_has_its_kernel_memory_and_root() {
        let r = collect(7);
        assert_eq!(r.agent_started_ms, 7);
        assert!(!r.kernel.is_empty());
        assert!(r.memory_total_kib > 0 && r.memory_available_kib <= r.memory_total_kib);
        assert!(
            r.interfaces
                .iter()
                .any(|i| i.name == "lo" && i.addresses.contains(&"127.0.0.1/8".to_string())),
            "{:?}",
            r.interfaces
        );
    }
}
