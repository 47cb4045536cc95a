//! The one typed description every hypervisor backend boots from. The CLI,
//! and later the server, build it; the backends only translate it into a
//! command line (QEMU) or API requests (Firecracker).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::VmId;

/// Which hypervisor runs a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Qemu,
    Firecracker,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Qemu => "qemu",
            BackendKind::Firecracker => "firecracker",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "qemu" => Ok(BackendKind::Qemu),
            "firecracker" => Ok(BackendKind::Firecracker),
            other => Err(SpecError::UnknownBackend(other.to_owned())),
        }
    }
}

/// How QEMU executes guest code. Firecracker always uses KVM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// QEMU's software emulator: slow, but runs anywhere.
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

impl FromStr for Accel {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(SpecError::UnknownAccel(other.to_owned())),
        }
    }
}

/// A block device given to the guest, in the order the guest should see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub path: PathBuf,
    /// Shared images are attached read-only so several VMs can use one file.
    pub read_only: bool,
    /// The key of a disk the hypervisor decrypts (a qcow2 with LUKS
    /// encryption). Never serialized: a description kept on disk has no
    /// key, and the key is read again from the vault at each boot.
    #[serde(skip)]
    pub key: Option<DiskKey>,
}

/// A disk's encryption key: 32 random bytes, held as their 64 lowercase
/// hex digits (the LUKS passphrase QEMU and qemu-img are given through a
/// file descriptor, never an argument). Wiped when dropped; `Debug` shows
/// nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct DiskKey(zeroize::Zeroizing<String>);

impl DiskKey {
    /// The key of `bytes`, which must be 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<DiskKey> {
        if bytes.len() != 32 {
            return None;
        }
        let mut hex = zeroize::Zeroizing::new(String::with_capacity(64));
        for b in bytes {
            hex.push(char::from_digit(u32::from(b >> 4), 16)?);
            hex.push(char::from_digit(u32::from(b & 15), 16)?);
        }
        Some(DiskKey(hex))
    }

    /// The passphrase to hand to the hypervisor, through a descriptor.
    pub fn passphrase(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for DiskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DiskKey(..)")
    }
}

/// A named byte channel between the host and the guest: the guest agent's
/// line to the host. QEMU exposes it as a virtio-serial port named `name`
/// whose host end is a Unix socket QEMU listens on at `socket`. The
/// Firecracker backend ignores channels for now (vsock will carry them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    pub name: String,
    pub socket: PathBuf,
}

/// Guest RAM backed by a file instead of anonymous memory: a shared
/// template's (docs/snapshots.md). QEMU only: hearth gives one to QEMU
/// VMs alone, and the Firecracker backend does not read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryFile {
    pub path: PathBuf,
    pub mapping: MemoryMapping,
}

/// How a [`MemoryFile`] is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryMapping {
    /// The template VM: its RAM is the file (`share=on`), so the file
    /// holds the guest's memory when it is paused for the snapshot.
    Template,
    /// A VM restored from a template: the file mapped private and
    /// read-only (`share=off,readonly=on,rom=off`), its pages read from
    /// the page cache every such VM shares and copied on a write.
    CopyOnWrite,
}

/// Everything a backend needs to boot one VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDescription {
    pub id: VmId,
    /// ELF vmlinux or bzImage; the Firecracker backend extracts an ELF from a
    /// bzImage by itself.
    pub kernel: PathBuf,
    pub initramfs: Option<PathBuf>,
    pub disks: Vec<Disk>,
    pub vcpus: u8,
    pub memory_mib: u32,
    /// The full kernel command line.
    pub cmdline: String,
    /// Sockets, the hypervisor's own log and other per-VM runtime files.
    pub run_dir: PathBuf,
    /// Every byte of the guest's serial console is appended here.
    pub console_log: PathBuf,
    /// Host <-> guest channels, such as the agent's; absent in older
    /// descriptions, hence the default.
    #[serde(default)]
    pub channels: Vec<Channel>,
    /// The file the guest's RAM is, for a shared template and the VMs
    /// restored from it; none (anonymous RAM) otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryFile>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("unknown backend {0:?}: use `qemu` or `firecracker`")]
    UnknownBackend(String),
    #[error("unknown acceleration {0:?}: use `kvm` or `tcg`")]
    UnknownAccel(String),
    #[error("{0} vCPUs requested: give between 1 and {max}", max = VmDescription::MAX_VCPUS)]
    Vcpus(u8),
    #[error("{0} MiB of memory requested: give between {min} and {max} MiB", min = VmDescription::MIN_MEMORY_MIB, max = VmDescription::MAX_MEMORY_MIB)]
    Memory(u32),
    #[error("the kernel command line is {0} bytes long; x86 kernels accept at most {max}", max = VmDescription::MAX_CMDLINE)]
    CmdlineTooLong(usize),
}

impl VmDescription {
    pub const MAX_VCPUS: u8 = 32;
    pub const MIN_MEMORY_MIB: u32 = 32;
    pub const MAX_MEMORY_MIB: u32 = 256 * 1024;
    /// COMMAND_LINE_SIZE on x86, less the terminating NUL.
    pub const MAX_CMDLINE: usize = 2047;

    /// Checks the numbers a user typed before anything is created on disk.
    pub fn validate_resources(vcpus: u8, memory_mib: u32) -> Result<(), SpecError> {
        if vcpus == 0 || vcpus > Self::MAX_VCPUS {
            return Err(SpecError::Vcpus(vcpus));
        }
        if !(Self::MIN_MEMORY_MIB..=Self::MAX_MEMORY_MIB).contains(&memory_mib) {
            return Err(SpecError::Memory(memory_mib));
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        Self::validate_resources(self.vcpus, self.memory_mib)?;
        if self.cmdline.len() > Self::MAX_CMDLINE {
            return Err(SpecError::CmdlineTooLong(self.cmdline.len()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_memory_and_vcpus_are_refused_with_the_range() {
        let err = VmDescription::validate_resources(1, 0).unwrap_err();
        assert_eq!(err, SpecError::Memory(0));
        assert!(err.to_string().contains("between 32 and"));
        assert_eq!(
            VmDescription::validate_resources(0, 128),
            Err(SpecError::Vcpus(0))
        );
        assert_eq!(VmDescription::validate_resources(2, 256), Ok(()));
    }

    #[test]
    fn backend_names_round_trip_and_unknown_ones_are_named() {
        for kind in [BackendKind::Qemu, BackendKind::Firecracker] {
            assert_eq!(kind.as_str().parse::<BackendKind>(), Ok(kind));
        }
        let err = "xen".parse::<BackendKind>().unwrap_err().to_string();
        assert!(err.contains("\"xen\"") && err.contains("qemu"), "{err}");
    }

    #[test]
    fn descriptions_reject_unknown_fields() {
        let json = r#"{"id":"vm-1","kernel":"k","initramfs":null,"disks":[],"vcpus":1,
            "memory_mib":64,"cmdline":"","run_dir":"r","console_log":"c","extra":1}"#;
        let err = serde_json::from_str::<VmDescription>(json).unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
    }

    #[test]
    fn descriptions_without_channels_still_parse() {
        let json = r#"{"id":"vm-1","kernel":"k","initramfs":null,"disks":[],"vcpus":1,
            "memory_mib":64,"cmdline":"","run_dir":"r","console_log":"c"}"#;
        let vm = serde_json::from_str::<VmDescription>(json).unwrap();
        assert!(vm.channels.is_empty());
    }
}

/// A hypervisor process, identified so that a reused pid is never mistaken
/// for it: the pid and the process's start time (field 22 of
/// /proc/PID/stat, in clock ticks since boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessRef {
    pub pid: u32,
    pub start_ticks: u64,
}
