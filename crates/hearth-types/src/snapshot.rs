//! Snapshots of running VMs: their names, the API bodies, and the manifest
//! that says what a restore must match. The comparison is a pure function
//! here, so the refusal's words are tested without a VM.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{BackendKind, TenantId, Timestamp, VmId};

/// A snapshot's name: 1 to 63 lowercase letters, digits and `-`, starting
/// with a letter. It names a directory on the host, so it is checked once.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[a-z][a-z0-9-]{0,62}$"))]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("snapshot name {0:?} is malformed: give 1 to 63 lowercase letters, digits or `-`, starting with a letter (`base-1`)")]
pub struct SnapshotNameError(String);

impl SnapshotName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SnapshotName {
    type Err = SnapshotNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(SnapshotName(s.to_owned()))
        } else {
            Err(SnapshotNameError(s.to_owned()))
        }
    }
}

impl TryFrom<String> for SnapshotName {
    type Error = SnapshotNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SnapshotName> for String {
    fn from(n: SnapshotName) -> String {
        n.0
    }
}

impl fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `POST /v1/snapshots`: of a running VM, or of an image (a template: the
/// image is booted, snapshotted once its agent is up, before any VM's
/// configuration is sent, and stopped). Exactly one of `vm` and `image`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    pub name: SnapshotName,
    #[serde(default)]
    pub vm: Option<VmId>,
    #[serde(default)]
    pub image: Option<String>,
}

/// A snapshot as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub name: SnapshotName,
    pub tenant: TenantId,
    pub created_at: Timestamp,
    pub manifest: SnapshotManifest,
    /// Bytes the snapshot's files take on the host's disk.
    pub disk_bytes: u64,
}

/// A file a restore must find unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FileFacts {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub path: PathBuf,
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
}

/// A shared template's memory (QEMU): the file that is the template's RAM,
/// which every VM restored from it maps copy-on-write, and what the save
/// and the restores must agree on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SharedMemory {
    pub file: FileFacts,
    /// The migration capability the state was saved with, which a load
    /// sets too (`x-ignore-shared`: the RAM is not in the state file).
    pub capability: String,
    /// The `memory-backend-file` options a restored VM maps the file with.
    pub restore_backend: String,
}

/// Everything a restore must match, recorded when the snapshot was taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SnapshotManifest {
    /// The VM it was taken of (gone once a template is done).
    pub source_vm: VmId,
    /// Set for a template: the image it was booted from, no VM's
    /// configuration in it.
    pub template: bool,
    pub backend: BackendKind,
    /// The hypervisor's binary and what it says its version is.
    pub hypervisor: String,
    /// The hypervisor arguments that matter beyond the ones below
    /// (machine, acceleration, CPU model).
    pub machine: String,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub kernel: FileFacts,
    pub initramfs: Option<FileFacts>,
    pub image: String,
    pub image_file: FileFacts,
    /// The kernel command line the guest booted with (a restore passes the
    /// same).
    pub cmdline: String,
    /// The devices, in order: `virtio-blk:ro`, `virtio-blk:rw`,
    /// `virtserialport:hearth.agent`, `nic`.
    pub devices: Vec<String>,
    /// Set for a shared template: its RAM is this file, not in the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_memory: Option<SharedMemory>,
}

impl SnapshotManifest {
    /// What differs between this snapshot and what a restore would use
    /// (`now`), one line per field, naming both; empty when they match.
    pub fn differences(&self, now: &SnapshotManifest) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |what: &str, then: String, now: String| {
            if then != now {
                out.push(format!(
                    "{what}: the snapshot has {then}, this restore {now}"
                ));
            }
        };
        check("backend", self.backend.to_string(), now.backend.to_string());
        check(
            "hypervisor",
            self.hypervisor.clone(),
            now.hypervisor.clone(),
        );
        check("machine", self.machine.clone(), now.machine.clone());
        check("vcpus", self.vcpus.to_string(), now.vcpus.to_string());
        check(
            "memory",
            format!("{} MiB", self.memory_mib),
            format!("{} MiB", now.memory_mib),
        );
        check("kernel", facts(&self.kernel), facts(&now.kernel));
        check(
            "initramfs",
            self.initramfs.as_ref().map_or("none".into(), facts),
            now.initramfs.as_ref().map_or("none".into(), facts),
        );
        check("image", self.image.clone(), now.image.clone());
        check(
            "image file",
            facts(&self.image_file),
            facts(&now.image_file),
        );
        check("devices", self.devices.join(","), now.devices.join(","));
        check(
            "shared memory",
            shared(self.shared_memory.as_ref()),
            shared(now.shared_memory.as_ref()),
        );
        out
    }
}

fn shared(m: Option<&SharedMemory>) -> String {
    m.map_or("none".into(), |m| {
        format!(
            "{} with {}, mapped {}",
            facts(&m.file),
            m.capability,
            m.restore_backend
        )
    })
}

fn facts(f: &FileFacts) -> String {
    format!(
        "{} ({} bytes, modified {} ns)",
        f.path.display(),
        f.size,
        f.mtime_ns
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> SnapshotManifest {
        let file = |p: &str| FileFacts {
            path: p.into(),
            size: 10,
            mtime_ns: 1,
        };
        SnapshotManifest {
            source_vm: "vm-1".parse().unwrap(),
            template: false,
            backend: BackendKind::Qemu,
            hypervisor: "qemu 10.0.2".into(),
            machine: "microvm tcg max".into(),
            vcpus: 1,
            memory_mib: 256,
            kernel: file("/k/vmlinuz"),
            initramfs: Some(file("/k/initrd")),
            image: "minimal".into(),
            image_file: file("/i/rootfs.ext4"),
            cmdline: "console=ttyS0".into(),
            devices: vec!["virtio-blk:ro".into()],
            shared_memory: None,
        }
    }

    #[test]
    fn names_are_checked() {
        assert!("base-1".parse::<SnapshotName>().is_ok());
        for bad in ["", "1abc", "Abc", "a/b", "a..b", &"a".repeat(64)] {
            let err = bad.parse::<SnapshotName>().unwrap_err().to_string();
            assert!(err.contains("lowercase letters"), "{err}");
        }
    }

    #[test]
    fn a_match_has_no_differences_and_each_mismatch_is_named() {
        let then = manifest();
        assert!(then.differences(&then).is_empty());
        let mut now = manifest();
        now.memory_mib = 512;
        now.kernel.path = "/other/vmlinuz".into();
        let diff = then.differences(&now);
        assert_eq!(diff.len(), 2, "{diff:?}");
        assert_eq!(
            diff[0],
            "memory: the snapshot has 256 MiB, this restore 512 MiB"
        );
        assert!(
            diff[1].starts_with("kernel: the snapshot has /k/vmlinuz")
                && diff[1].contains("this restore /other/vmlinuz"),
            "{}",
            diff[1]
        );
    }

    #[test]
    fn a_changed_or_missing_shared_memory_is_named() {
        let file = |size| FileFacts {
            path: "/s/t/memory".into(),
            size,
            mtime_ns: 1,
        };
        let mut then = manifest();
        then.shared_memory = Some(SharedMemory {
            file: file(268_435_456),
            capability: "x-ignore-shared".into(),
            restore_backend: "share=off,readonly=on,rom=off".into(),
        });
        assert!(then.differences(&then).is_empty());
        let mut now = then.clone();
        now.shared_memory.as_mut().unwrap().file = file(0);
        let diff = then.differences(&now);
        assert_eq!(diff.len(), 1, "{diff:?}");
        assert!(
            diff[0].starts_with("shared memory: the snapshot has /s/t/memory (268435456 bytes")
                && diff[0].contains("this restore /s/t/memory (0 bytes"),
            "{}",
            diff[0]
        );
        now.shared_memory = None;
        assert!(then.differences(&now)[0].ends_with("this restore none"));
    }
}
