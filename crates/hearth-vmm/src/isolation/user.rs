//! The unprivileged user a VM's hypervisor runs as: a uid of its own per
//! VM, with a gid of the same number, from a range no account uses (as
//! Firecracker's jailer is meant to be run). Files of one VM belong to its
//! uid or gid, so another VM's hypervisor cannot read them.
//!
//! A uid is free when no process runs as it. Picking one and starting the
//! hypervisor as it happen under a host-wide lock, so two hearths (or two
//! VMs of one) never pick the same; the files a VM leaves behind are given
//! back to root when its hypervisor ends ([`super::files::reclaim`]), so a
//! later VM given the same uid finds nothing of it.

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use hearth_types::VmId;

/// The environment variable that names the range: `FIRST-LAST`.
pub const RANGE_ENV: &str = "HEARTH_VM_UIDS";
/// The default range: above the ids systemd hands to containers
/// (524288-1879048191) and below 2^31, which some tools mishandle.
pub const DEFAULT_FIRST: u32 = 2_000_000_000;
pub const DEFAULT_COUNT: u32 = 65_536;
/// Serialises picking uids across processes.
pub const LOCK_FILE: &str = "/run/hearth/vm-uids.lock";

/// The uids (and gids) VMs may be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UidRange {
    pub first: u32,
    pub count: u32,
}

impl Default for UidRange {
    fn default() -> Self {
        UidRange {
            first: DEFAULT_FIRST,
            count: DEFAULT_COUNT,
        }
    }
}

impl UidRange {
    /// `$HEARTH_VM_UIDS`, else the default.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(RANGE_ENV) {
            Ok(s) if !s.is_empty() => Self::parse(&s),
            _ => Ok(Self::default()),
        }
    }

    /// `FIRST-LAST`, both included; 0 (root) is never in a range.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{RANGE_ENV}={s:?} is not a uid range: give FIRST-LAST, such as \
                 {DEFAULT_FIRST}-{}",
                DEFAULT_FIRST + DEFAULT_COUNT - 1
            )
        };
        let (first, last) = s.split_once('-').ok_or_else(bad)?;
        let first: u32 = first.trim().parse().map_err(|_| bad())?;
        let last: u32 = last.trim().parse().map_err(|_| bad())?;
        if first == 0 || last < first || last == u32::MAX {
            return Err(bad());
        }
        Ok(UidRange {
            first,
            count: last - first + 1,
        })
    }

    pub fn last(&self) -> u32 {
        self.first + (self.count - 1)
    }

    pub fn contains(&self, uid: u32) -> bool {
        (self.first..=self.last()).contains(&uid)
    }

    /// The first uid not in `used`, looking from a place the VM's id picks
    /// (so a VM usually gets the same uid whichever hearth starts it).
    pub fn pick(&self, id: &VmId, used: &HashSet<u32>) -> Option<u32> {
        let start = fnv1a(id.as_str()) % u64::from(self.count);
        (0..u64::from(self.count))
            .map(|k| self.first + ((start + k) % u64::from(self.count)) as u32)
            .find(|uid| !used.contains(uid))
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Who a hypervisor runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the group that may open /dev/kvm); nothing
    /// else of the host's.
    pub groups: Vec<u32>,
}

/// A uid picked for a VM, kept from every other picker until the
/// hypervisor runs as it (then the process itself marks it taken).
#[derive(Debug)]
pub struct UidLease {
    pub user: VmUser,
    _lock: File,
}

/// Picks a free uid of `range` for `id` and holds the lock until the lease
/// is dropped.
pub fn lease(range: &UidRange, id: &VmId, groups: Vec<u32>) -> std::io::Result<UidLease> {
    let lock = lock_file(Path::new(LOCK_FILE))?;
    let used = uids_in_use(range);
    let uid = range.pick(id, &used).ok_or_else(|| {
        std::io::Error::other(format!(
            "every uid of {}-{} runs a hypervisor already: give {RANGE_ENV} a larger range",
            range.first,
            range.last()
        ))
    })?;
    Ok(UidLease {
        user: VmUser {
            uid,
            gid: uid,
            groups,
        },
        _lock: lock,
    })
}

fn lock_file(path: &Path) -> std::io::Result<File> {
    let named =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(named)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(named)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(named)?;
    // SAFETY: flock(2) on a descriptor we own; it blocks until granted.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(named(std::io::Error::last_os_error()));
    }
    Ok(file)
}

/// The uids of `range` some process runs as (real uid, from
/// /proc/PID/status).
pub fn uids_in_use(range: &UidRange) -> HashSet<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return HashSet::new();
    };
    procs
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter_map(|status| real_uid(&status))
        .filter(|uid| range.contains(*uid))
        .collect()
}

/// The real uid of a /proc/PID/status text (`Uid: real effective ...`).
pub fn real_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The supplementary group a VM user needs to open `/dev/kvm`: none when
/// everyone may, its group when the group may; an error when only its
/// owner may.
pub fn kvm_group(device: &Path) -> Result<Option<u32>, String> {
    let meta = std::fs::metadata(device).map_err(|e| format!("{}: {e}", device.display()))?;
    let mode = meta.mode();
    if mode & 0o006 == 0o006 {
        Ok(None)
    } else if mode & 0o060 == 0o060 {
        Ok(Some(meta.gid()))
    } else {
        Err(format!(
            "{} opens only for its owner (mode {:o}), so a VM's own user cannot use it: give it \
             a group that may (udev's kvm group, mode 0660)",
            device.display(),
            mode & 0o777
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_refuse_root_and_nonsense() {
        let r = UidRange::parse("100000-100009").unwrap();
        assert_eq!((r.first, r.count, r.last()), (100_000, 10, 100_009));
        for bad in ["0-10", "10-5", "x-y", "100", "5-4294967295"] {
            let err = UidRange::parse(bad).unwrap_err();
            assert!(
                err.contains(RANGE_ENV) && err.contains("FIRST-LAST"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_pick_avoids_uids_in_use_and_wraps_around() {
        let r = UidRange::parse("10-13").unwrap();
        let id: VmId = "vm-abc".parse().unwrap();
        let first = r.pick(&id, &HashSet::new()).unwrap();
        assert!(r.contains(first));
        assert_eq!(
            r.pick(&id, &HashSet::new()),
            Some(first),
            "the same id picks the same uid"
        );
        let mut used: HashSet<u32> = [first].into();
        let second = r.pick(&id, &used).unwrap();
        assert_ne!(second, first);
        used.extend([10, 11, 12, 13]);
        assert_eq!(r.pick(&id, &used), None);
    }

    #[test]
    fn the_real_uid_is_read_from_status() {
        let status = "Name:\tqemu\nUid:\t2000000001\t2000000001\t2000000001\t2000000001\n";
        assert_eq!(real_uid(status), Some(2_000_000_001));
        assert_eq!(real_uid("Name: x\n"), None);
    }

    #[test]
    fn uids_in_use_sees_this_process() {
        // SAFETY: getuid(2) cannot fail.
        let me = unsafe { libc::getuid() };
        let r = UidRange {
            first: me.max(1),
            count: 1,
        };
        if me > 0 {
            assert!(uids_in_use(&r).contains(&me));
        }
    }

    #[test]
    fn kvm_access_needs_a_group_or_everyone() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("kvm");
        std::fs::write(&dev, "").unwrap();
        let set =
            |mode| std::fs::set_permissions(&dev, std::fs::Permissions::from_mode(mode)).unwrap();
        set(0o666);
        assert_eq!(kvm_group(&dev), Ok(None));
        set(0o660);
        assert_eq!(
            kvm_group(&dev),
            Ok(Some(std::fs::metadata(&dev).unwrap().gid()))
        );
        set(0o600);
        assert!(kvm_group(&dev).unwrap_err().contains("mode 600"));
    }
}
