//! Per-VM cgroups: which cgroup version this host offers and where, the
//! limits a VM's cgroup carries, and its counters when the hypervisor
//! ends. The version-specific files are in [`super::cgroup_v1`] and
//! [`super::cgroup_v2`]; this module decides between them and names the
//! directories.
//!
//! Where a VM's cgroup goes:
//! - v1: `<hierarchy>/<hearth's own cgroup>/hearth/<vm-id>` in the memory,
//!   cpu and pids hierarchies, so a VM stays inside whatever contains
//!   hearth (a service's accounting, a container);
//! - v2: `<mount>/hearth/<vm-id>`, at the top of the hierarchy: v2 lets no
//!   cgroup that holds processes (as hearth's own does) hand controllers to
//!   children, and the root is exempt.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_types::VmId;
use serde::{Deserialize, Serialize};

use super::{cgroup_v1, cgroup_v2};

/// The directory under a parent that holds every VM's cgroup.
pub const HEARTH_DIR: &str = "hearth";
/// The period of the CPU quota.
pub const CPU_PERIOD_US: u64 = 100_000;
/// How long removing a cgroup waits for its last process to leave it.
const REMOVE_WAIT: Duration = Duration::from_millis(500);

/// The controllers a VM's limits need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Controller {
    Memory,
    Cpu,
    Pids,
}

impl Controller {
    pub const ALL: [Controller; 3] = [Controller::Memory, Controller::Cpu, Controller::Pids];

    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
        }
    }
}

/// A VM's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The guest's memory plus what the hypervisor itself needs.
    pub memory_bytes: u64,
    /// CPU time per [`CPU_PERIOD_US`]: one period per vCPU.
    pub cpu_quota_us: u64,
    /// Tasks (processes and threads) the hypervisor may have.
    pub pids: u64,
}

impl Limits {
    /// Threads a hypervisor may have beyond one per vCPU: QEMU's I/O
    /// thread pool alone may grow to 64, plus its main loop, RCU and
    /// worker threads.
    pub const SPARE_TASKS: u64 = 96;

    /// Limits for a guest of `memory_mib` and `vcpus` whose hypervisor
    /// needs `overhead_mib` of its own.
    pub fn for_guest(memory_mib: u32, vcpus: u8, overhead_mib: u32) -> Self {
        Limits {
            memory_bytes: (u64::from(memory_mib) + u64::from(overhead_mib)) << 20,
            cpu_quota_us: u64::from(vcpus.max(1)) * CPU_PERIOD_US,
            pids: u64::from(vcpus) + Self::SPARE_TASKS,
        }
    }
}

/// What a VM's cgroup counted, read when its hypervisor ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Processes the memory controller's OOM killer killed in the cgroup.
    pub oom_kills: u64,
    /// Times the memory use reached the limit.
    pub memory_limit_hits: u64,
    /// The highest memory use, where the kernel keeps it.
    pub memory_peak_bytes: Option<u64>,
    /// The memory limit in force at the end (someone may have changed the
    /// one hearth set); none when unlimited or unknown.
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
    /// Times a new task was refused at the pids limit.
    pub pids_limit_hits: u64,
}

/// The cgroup hierarchy this host offers hearth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupHost {
    /// The unified hierarchy mounted at `mount`, with the controllers its
    /// root offers (of those hearth uses).
    V2 {
        mount: PathBuf,
        controllers: Vec<Controller>,
    },
    /// One hierarchy per controller: hearth's own cgroup directory in each
    /// of those mounted.
    V1 { parents: Vec<(Controller, PathBuf)> },
}

impl CgroupHost {
    /// This host's cgroups, or why there are none hearth can use.
    pub fn detect() -> Result<Self, String> {
        let read =
            |p: &str| std::fs::read_to_string(p).map_err(|e| format!("cannot read {p}: {e}"));
        let mountinfo = read("/proc/self/mountinfo")?;
        let own = read("/proc/self/cgroup")?;
        Self::from_host(&mountinfo, &own, |dir| {
            std::fs::read_to_string(dir.join("cgroup.controllers")).ok()
        })
    }

    /// Decides from the mount table, the process's own cgroups and a way
    /// to read a v2 directory's `cgroup.controllers`. v2 wins when its root
    /// offers the memory controller; else v1 when a memory hierarchy is
    /// mounted.
    pub fn from_host(
        mountinfo: &str,
        own_cgroups: &str,
        v2_controllers: impl Fn(&Path) -> Option<String>,
    ) -> Result<Self, String> {
        let mounts = parse_mounts(mountinfo);
        let v2 = mounts.iter().find(|m| m.fstype == "cgroup2");
        if let Some(m) = v2 {
            let offered = v2_controllers(&m.point).unwrap_or_default();
            let controllers = known_controllers(offered.split_whitespace());
            if controllers.contains(&Controller::Memory) {
                return Ok(CgroupHost::V2 {
                    mount: m.point.clone(),
                    controllers,
                });
            }
        }
        let parents = v1_parents(&mounts, own_cgroups);
        if parents.iter().any(|(c, _)| *c == Controller::Memory) {
            return Ok(CgroupHost::V1 { parents });
        }
        Err(match v2 {
            Some(m) => format!(
                "no cgroup hierarchy offers the memory controller (cgroup v2 at {} has none, and \
                 no v1 memory hierarchy is mounted)",
                m.point.display()
            ),
            None => "no cgroup hierarchy is mounted (neither cgroup2 nor a v1 memory \
                     hierarchy in /proc/self/mountinfo)"
                .to_owned(),
        })
    }

    pub fn version(&self) -> u8 {
        match self {
            CgroupHost::V2 { .. } => 2,
            CgroupHost::V1 { .. } => 1,
        }
    }

    /// The controllers a VM's cgroup gets here.
    pub fn controllers(&self) -> Vec<Controller> {
        match self {
            CgroupHost::V2 { controllers, .. } => controllers.clone(),
            CgroupHost::V1 { parents } => parents.iter().map(|(c, _)| *c).collect(),
        }
    }

    /// The directories that hold VM cgroups (`.../hearth`), one per
    /// hierarchy.
    pub fn hearth_dirs(&self) -> Vec<PathBuf> {
        match self {
            CgroupHost::V2 { mount, .. } => vec![mount.join(HEARTH_DIR)],
            CgroupHost::V1 { parents } => parents.iter().map(|(_, p)| p.join(HEARTH_DIR)).collect(),
        }
    }

    /// The cgroup of VM `id` (not created yet).
    pub fn vm(&self, id: &VmId) -> VmCgroup {
        match self {
            CgroupHost::V2 { mount, controllers } => VmCgroup::V2 {
                mount: mount.clone(),
                dir: mount.join(HEARTH_DIR).join(id.as_str()),
                controllers: controllers.clone(),
            },
            CgroupHost::V1 { parents } => VmCgroup::V1 {
                dirs: parents
                    .iter()
                    .map(|(c, p)| (*c, p.join(HEARTH_DIR).join(id.as_str())))
                    .collect(),
            },
        }
    }

    /// The VMs that have a cgroup here, whatever their state.
    pub fn vm_ids(&self) -> Vec<VmId> {
        let mut ids: Vec<VmId> = self
            .hearth_dirs()
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flat_map(|entries| entries.flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// The cgroup of one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmCgroup {
    V2 {
        mount: PathBuf,
        dir: PathBuf,
        controllers: Vec<Controller>,
    },
    V1 {
        dirs: Vec<(Controller, PathBuf)>,
    },
}

impl VmCgroup {
    /// Its directories, one per hierarchy.
    pub fn paths(&self) -> Vec<PathBuf> {
        match self {
            VmCgroup::V2 { dir, .. } => vec![dir.clone()],
            VmCgroup::V1 { dirs } => dirs.iter().map(|(_, d)| d.clone()).collect(),
        }
    }

    pub fn version(&self) -> u8 {
        match self {
            VmCgroup::V2 { .. } => 2,
            VmCgroup::V1 { .. } => 1,
        }
    }

    /// Creates it with `limits` (an existing one gets them again).
    pub fn create(&self, limits: &Limits) -> std::io::Result<()> {
        match self {
            VmCgroup::V2 {
                mount,
                dir,
                controllers,
            } => cgroup_v2::create(mount, dir, controllers, limits),
            VmCgroup::V1 { dirs } => dirs
                .iter()
                .try_for_each(|(c, d)| cgroup_v1::create(*c, d, limits)),
        }
    }

    /// The files a process writes its pid to, to join it: opened now, by
    /// hearth, so the hypervisor's child can write them before exec.
    pub fn procs_files(&self) -> std::io::Result<Vec<File>> {
        self.paths()
            .iter()
            .map(|d| open_for_write(&d.join("cgroup.procs")))
            .collect()
    }

    /// The counters so far (zeros where a file is missing).
    pub fn counters(&self) -> Counters {
        match self {
            VmCgroup::V2 { dir, .. } => cgroup_v2::counters(dir),
            VmCgroup::V1 { dirs } => cgroup_v1::counters(dirs),
        }
    }

    /// Whether any process is in it.
    pub fn has_processes(&self) -> bool {
        self.paths().iter().any(|d| {
            std::fs::read_to_string(d.join("cgroup.procs")).is_ok_and(|s| !s.trim().is_empty())
        })
    }

    /// Removes it; a missing one is fine. Waits briefly for a process that
    /// is still leaving; one that stays is an error (`EBUSY`).
    pub fn remove(&self) -> std::io::Result<()> {
        self.paths().iter().try_for_each(|d| remove_dir(d))
    }
}

fn remove_dir(dir: &Path) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + REMOVE_WAIT;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                if std::time::Instant::now() >= deadline {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

pub(super) fn open_for_write(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new().write(true).open(path)
}

/// Writes `value` to a cgroup file, naming the file on failure. The
/// kernel makes a cgroup's files with its directory and refuses new ones,
/// so creating here only matters for a plain directory standing in for
/// a cgroup in tests.
pub(super) fn write_file(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| named(path, e))?;
    file.write_all(value.as_bytes()).map_err(|e| named(path, e))
}

/// Writes `value` when the file exists (optional knobs such as swap).
pub(super) fn write_if_present(path: &Path, value: &str) -> std::io::Result<()> {
    if path.exists() {
        write_file(path, value)
    } else {
        Ok(())
    }
}

fn named(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The number after `key` in a flat-keyed file (`oom_kill 1`).
pub(super) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

pub(super) fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// One line of /proc/self/mountinfo, the fields hearth needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    /// The directory of the filesystem mounted (`/` unless a bind mount).
    root: String,
    point: PathBuf,
    fstype: String,
    super_options: Vec<String>,
}

fn parse_mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo.lines().filter_map(parse_mount).collect()
}

/// `36 35 98:0 /root /point rw,noatime shared:1 - cgroup cgroup rw,memory`
fn parse_mount(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let right: Vec<&str> = right.split(' ').collect();
    Some(Mount {
        root: unescape(left.get(3)?),
        point: PathBuf::from(unescape(left.get(4)?)),
        fstype: (*right.first()?).to_owned(),
        super_options: right.get(2)?.split(',').map(str::to_owned).collect(),
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn known_controllers<'a>(names: impl Iterator<Item = &'a str>) -> Vec<Controller> {
    let names: Vec<&str> = names.collect();
    Controller::ALL
        .into_iter()
        .filter(|c| names.contains(&c.name()))
        .collect()
}

/// hearth's own cgroup directory in each mounted v1 hierarchy of a
/// controller it uses.
fn v1_parents(mounts: &[Mount], own_cgroups: &str) -> Vec<(Controller, PathBuf)> {
    Controller::ALL
        .into_iter()
        .filter_map(|c| {
            let mount = mounts
                .iter()
                .find(|m| m.fstype == "cgroup" && m.super_options.iter().any(|o| o == c.name()))?;
            let own = own_v1_path(own_cgroups, c)?;
            Some((c, under_mount(mount, &own)?))
        })
        .collect()
}

/// The path of `/proc/self/cgroup`'s line for `c` (`4:memory:/a/b`).
fn own_v1_path(own_cgroups: &str, c: Controller) -> Option<String> {
    own_cgroups.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
        list.split(',')
            .any(|n| n == c.name())
            .then(|| path.to_owned())
    })
}

/// Where the cgroup `path` of a hierarchy is in the mount's directory
/// tree; None when the mount does not show it.
fn under_mount(mount: &Mount, path: &str) -> Option<PathBuf> {
    let root = mount.root.trim_end_matches('/');
    let rest = path.strip_prefix(root)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    Some(mount.point.join(rest.trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's mount table: v1 per controller, an empty v2 beside.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const OWN: &str = "8:pids:/\n4:memory:/process_api/c2\n2:cpuacct:/\n1:cpu:/\n0::/\n";

    #[test]
    fn a_v2_without_memory_falls_back_to_v1_under_our_own_cgroups() {
        let host = CgroupHost::from_host(HYBRID, OWN, |_| Some("hugetlb\n".into())).unwrap();
        assert_eq!(
            host,
            CgroupHost::V1 {
                parents: vec![
                    (
                        Controller::Memory,
                        "/sys/fs/cgroup/memory/process_api/c2".into()
                    ),
                    (Controller::Cpu, "/sys/fs/cgroup/cpu".into()),
                    (Controller::Pids, "/sys/fs/cgroup/pids".into()),
                ]
            }
        );
        let id: VmId = "vm-1".parse().unwrap();
        assert_eq!(
            host.vm(&id).paths()[0],
            Path::new("/sys/fs/cgroup/memory/process_api/c2/hearth/vm-1")
        );
    }

    #[test]
    fn v2_with_memory_wins_and_puts_vms_at_its_top() {
        let unified = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let host = CgroupHost::from_host(unified, "0::/system.slice/hearth.service\n", |p| {
            assert_eq!(p, Path::new("/sys/fs/cgroup"));
            Some("cpuset cpu io memory hugetlb pids rdma misc\n".into())
        })
        .unwrap();
        assert_eq!(host.version(), 2);
        assert_eq!(host.controllers(), Controller::ALL.to_vec());
        let id: VmId = "vm-1".parse().unwrap();
        assert_eq!(
            host.vm(&id).paths(),
            [Path::new("/sys/fs/cgroup/hearth/vm-1")]
        );
    }

    #[test]
    fn no_memory_controller_anywhere_says_so() {
        let err = CgroupHost::from_host(
            "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
            "0::/\n",
            |_| Some("hugetlb".into()),
        )
        .unwrap_err();
        assert!(
            err.contains("memory controller") && err.contains("/sys/fs/cgroup/unified"),
            "{err}"
        );
        let err = CgroupHost::from_host("", "", |_| None).unwrap_err();
        assert!(err.contains("no cgroup hierarchy is mounted"), "{err}");
    }

    #[test]
    fn comounted_controllers_and_bind_mounted_roots_are_understood() {
        let mounts = "\
1 0 0:1 / /cg/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
2 0 0:2 /outer /cg/mem\\040x rw - cgroup cgroup rw,memory
";
        let own = "3:cpu,cpuacct:/a\n2:memory:/outer/inner\n";
        let CgroupHost::V1 { parents } = CgroupHost::from_host(mounts, own, |_| None).unwrap()
        else {
            panic!("v1 expected");
        };
        assert_eq!(
            parents,
            vec![
                (Controller::Memory, PathBuf::from("/cg/mem x/inner")),
                (Controller::Cpu, PathBuf::from("/cg/cpu,cpuacct/a")),
            ]
        );
    }

    #[test]
    fn limits_add_the_overhead_and_give_a_period_per_vcpu() {
        let l = Limits::for_guest(256, 2, 128);
        assert_eq!(l.memory_bytes, 384 << 20);
        assert_eq!(l.cpu_quota_us, 200_000);
        assert_eq!(l.pids, 98);
    }

    #[test]
    fn keyed_files_are_read_by_key() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(keyed(text, "oom_kill"), Some(2));
        assert_eq!(keyed(text, "oom"), None);
    }
}
