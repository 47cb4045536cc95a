//! A VM's NIC on the QEMU microvm command line: the TAP that `hearth-net`
//! made is handed over as an inherited file descriptor (QEMU never opens
//! `/dev/net/tun` or needs the right to), on a virtio-mmio network device
//! with the guest MAC the agent finds it by. vhost is off: under TCG it
//! buys nothing, and it would need `/dev/vhost-net` in the sandbox.

use std::ffi::OsString;
use std::os::fd::RawFd;

/// The arguments for a NIC on the TAP at `fd` (which the spawn must leave
/// open across exec) with MAC `mac` (`02:68:74:00:00:02`).
pub fn nic_args(fd: RawFd, mac: &str) -> Vec<OsString> {
    vec![
        "-netdev".into(),
        format!("tap,id=net0,fd={fd},vhost=off").into(),
        "-device".into(),
        format!("virtio-net-device,netdev=net0,mac={mac}").into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tap_is_given_by_descriptor_with_the_guest_mac() {
        let line: Vec<String> = nic_args(7, "02:68:74:00:00:02")
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            line.join(" "),
            "-netdev tap,id=net0,fd=7,vhost=off -device virtio-net-device,netdev=net0,mac=02:68:74:00:00:02"
        );
    }
}
