//! Keeping each VM's hypervisor away from the host and from other VMs: it
//! runs as a user of its own ([`user`]) that can read only its own files
//! and the shared read-only ones ([`files`]), in a cgroup of its own that
//! carries the VM's memory, CPU and task limits ([`cgroup`]: v2 where the
//! host has it, else v1), joined before the hypervisor runs its first
//! instruction ([`spawn`]). QEMU adds its seccomp sandbox and Firecracker
//! its jailer; those are the backends' (see `docs/isolation.md`).
//!
//! [`Isolation`] is what this host allows, decided once; it keeps working
//! when hearth is not root or the host has no cgroups, and says why each
//! part is off. Per VM it gives a [`Confinement`] that the backend applies
//! to the hypervisor's command, and whose [`IsolationReport`] stays in the
//! VM's run directory. When the hypervisor ends, [`Isolation::release`]
//! records the cgroup's counters (an OOM kill at the memory limit), removes
//! the cgroup and gives the VM's files back to root.

pub mod cgroup;
mod cgroup_v1;
mod cgroup_v2;
pub mod files;
pub mod report;
mod spawn;
pub mod user;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hearth_types::{VmDescription, VmId};

pub use self::cgroup::{CgroupHost, Controller, Counters, Limits, VmCgroup};
pub use self::report::{CgroupReport, IsolationReport, REPORT_FILE};
pub use self::user::{UidRange, VmUser};
use crate::process::ExitHook;
use crate::VmmError;

/// Where QEMU and Firecracker open KVM.
pub const KVM_DEVICE: &str = "/dev/kvm";

/// What this host lets hearth do to confine hypervisors.
#[derive(Debug, Clone)]
pub struct Isolation {
    users: Result<UidRange, String>,
    cgroups: Result<CgroupHost, String>,
}

/// What a backend asks for one VM.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    /// The hypervisor's own memory on top of the guest's.
    pub overhead_mib: u32,
    /// The hypervisor opens /dev/kvm itself (QEMU with KVM, unjailed
    /// Firecracker).
    pub opens_kvm: bool,
    /// The hypervisor opens the VM's files at their host paths (not in a
    /// jail of their own), so the VM's user must be able to reach them.
    pub host_paths: bool,
}

impl Isolation {
    /// Nothing confined: hypervisors run as hearth, in hearth's cgroup.
    pub fn off(why: &str) -> Self {
        Isolation {
            users: Err(why.to_owned()),
            cgroups: Err(why.to_owned()),
        }
    }

    /// What this host allows: per-VM users and cgroups when hearth is
    /// root and the host mounts cgroups it can write.
    pub fn for_host() -> Self {
        // SAFETY: geteuid(2) cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Self::off(
                "hearth is not running as root, so hypervisors run as hearth's own user, in its cgroup",
            );
        }
        Isolation {
            users: UidRange::from_env(),
            cgroups: CgroupHost::detect().and_then(writable),
        }
    }

    /// The uids VMs get, or why they run as hearth.
    pub fn users(&self) -> Result<&UidRange, &str> {
        self.users.as_ref().map_err(String::as_str)
    }

    /// The cgroups VMs get, or why they have none.
    pub fn cgroups(&self) -> Result<&CgroupHost, &str> {
        self.cgroups.as_ref().map_err(String::as_str)
    }

    /// Picks VM `vm`'s user and creates its cgroup with its limits.
    pub fn confine(&self, vm: &VmDescription, request: Request) -> Result<Confinement, VmmError> {
        let mut report = IsolationReport::default();
        let lease = self.lease(vm, request, &mut report)?;
        let cgroup = self.cgroup(vm, request, &mut report)?;
        Ok(Confinement {
            report,
            lease,
            cgroup,
            run_dir: vm.run_dir.clone(),
            users_on_host: self.users.is_ok(),
        })
    }

    fn lease(
        &self,
        vm: &VmDescription,
        request: Request,
        report: &mut IsolationReport,
    ) -> Result<Option<user::UidLease>, VmmError> {
        let range = match &self.users {
            Ok(range) => range,
            Err(why) => {
                report.off.push(format!("user: {why}"));
                return Ok(None);
            }
        };
        // Any uid of the range stands for the VM's here: only "others"
        // and the VM's own group count, which no other uid has.
        let reached = match request.host_paths {
            true => files::check_reachable(vm, range.first),
            false => Ok(()),
        };
        if let Err(why) = reached {
            report
                .off
                .push(format!("user: {}", hearth_types::error_chain(&why)));
            return Ok(None);
        }
        let groups = if request.opens_kvm {
            match user::kvm_group(Path::new(KVM_DEVICE)) {
                Ok(group) => group.into_iter().collect(),
                Err(why) => {
                    report.off.push(format!("user: {why}"));
                    return Ok(None);
                }
            }
        } else {
            Vec::new()
        };
        let lease = user::lease(range, &vm.id, groups).map_err(|source| VmmError::Isolation {
            step: "pick the VM's user",
            source,
        })?;
        report.uid = Some(lease.user.uid);
        Ok(Some(lease))
    }

    fn cgroup(
        &self,
        vm: &VmDescription,
        request: Request,
        report: &mut IsolationReport,
    ) -> Result<Option<VmCgroup>, VmmError> {
        let host = match &self.cgroups {
            Ok(host) => host,
            Err(why) => {
                report.off.push(format!("cgroup: {why}"));
                return Ok(None);
            }
        };
        let missing: Vec<&str> = Controller::ALL
            .into_iter()
            .filter(|c| !host.controllers().contains(c))
            .map(Controller::name)
            .collect();
        if !missing.is_empty() {
            report.off.push(format!(
                "cgroup: no {} controller on this host, so that limit is not set",
                missing.join(" or ")
            ));
        }
        let limits = Limits::for_guest(vm.memory_mib, vm.vcpus, request.overhead_mib);
        let cgroup = host.vm(&vm.id);
        cgroup.create(&limits).map_err(|source| {
            let _ = cgroup.remove();
            VmmError::Isolation {
                step: "create the VM's cgroup",
                source,
            }
        })?;
        report.cgroup = Some(CgroupReport {
            version: cgroup.version(),
            paths: cgroup.paths(),
            limits,
            overhead_mib: request.overhead_mib,
        });
        Ok(Some(cgroup))
    }

    /// The hypervisor of VM `id` has ended (or was found gone): its
    /// cgroup's counters go into the report in `run_dir`, the cgroup is
    /// removed, and the run directory goes back to root. Safe to repeat.
    pub fn release(&self, id: &VmId, run_dir: &Path) -> Option<Counters> {
        let mut report = IsolationReport::read(run_dir);
        let cgroup = self.cgroups.as_ref().ok().map(|host| host.vm(id));
        let counters = cgroup
            .as_ref()
            .filter(|c| c.paths().iter().any(|p| p.exists()))
            .map(VmCgroup::counters);
        if let Some(cgroup) = &cgroup {
            if let Err(e) = cgroup.remove() {
                tracing::warn!(vm = %id, error = %e, "could not remove the VM's cgroup; the orphan sweep tries again");
            }
        }
        if let Some(report) = report
            .as_mut()
            .filter(|r| r.exit.is_none() && counters.is_some())
        {
            report.exit = counters;
            if let Err(e) = report.write(run_dir) {
                tracing::warn!(vm = %id, error = %e, "could not record the cgroup's counters");
            }
        }
        if report.as_ref().is_some_and(|r| r.uid.is_some()) {
            if let Err(e) = files::reclaim(run_dir) {
                tracing::warn!(vm = %id, error = %e, "could not give the VM's files back to root");
            }
        }
        report.and_then(|r| r.exit).or(counters)
    }

    /// [`Isolation::release`] for `vm`, to run when its hypervisor ends.
    pub fn exit_hook(self: &Arc<Self>, vm: &VmDescription) -> ExitHook {
        let (me, id, dir) = (Arc::clone(self), vm.id.clone(), vm.run_dir.clone());
        Box::new(move || {
            me.release(&id, &dir);
        })
    }

    /// Removes the cgroup of VM `id` if no process is left in it (destroy,
    /// and the orphan sweep). Safe to repeat.
    pub fn remove_cgroup(&self, id: &VmId) -> std::io::Result<()> {
        let Ok(host) = &self.cgroups else {
            return Ok(());
        };
        let cgroup = host.vm(id);
        if cgroup.has_processes() {
            return Err(std::io::Error::other(format!(
                "the cgroup of {id} still has processes"
            )));
        }
        cgroup.remove()
    }

    /// The VMs that have a cgroup on this host (of any hearth).
    pub fn cgroup_vm_ids(&self) -> Vec<VmId> {
        self.cgroups
            .as_ref()
            .map(CgroupHost::vm_ids)
            .unwrap_or_default()
    }
}

/// Makes sure hearth can make cgroups where it would put VMs.
fn writable(host: CgroupHost) -> Result<CgroupHost, String> {
    for dir in host.hearth_dirs() {
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    Ok(host)
}

/// One VM's user and cgroup, ready to be applied to its hypervisor.
#[derive(Debug)]
pub struct Confinement {
    pub report: IsolationReport,
    lease: Option<user::UidLease>,
    cgroup: Option<VmCgroup>,
    run_dir: PathBuf,
    /// The host gives VMs users (so hearth opened its data directory),
    /// even if this VM has none.
    users_on_host: bool,
}

impl Confinement {
    pub fn user(&self) -> Option<&VmUser> {
        self.lease.as_ref().map(|l| &l.user)
    }

    pub fn cgroup(&self) -> Option<&VmCgroup> {
        self.cgroup.as_ref()
    }

    /// Gives the VM's user its run directory and writable disks, and makes
    /// sure it can read the rest; returns the description with any copies
    /// (a kernel or initramfs others cannot read). A VM without a user of
    /// its own on a host whose data directory is open to VM users gets a
    /// run directory only root may enter.
    pub fn grant(&self, vm: &VmDescription) -> Result<VmDescription, VmmError> {
        let Some(user) = self.user() else {
            if self.users_on_host {
                self.close_run_dir()?;
            }
            return Ok(vm.clone());
        };
        let mut vm = vm.clone();
        files::grant_run_dir(&vm.run_dir, user.gid)?;
        vm.kernel = files::readable_copy(&vm.kernel, &vm.run_dir, "kernel", user.gid)?;
        if let Some(initrd) = &vm.initramfs {
            vm.initramfs = Some(files::readable_copy(
                initrd,
                &vm.run_dir,
                "initramfs",
                user.gid,
            )?);
        }
        for disk in &vm.disks {
            if disk.read_only {
                files::check_shared_disk(&disk.path)?;
            } else {
                files::grant_file(&disk.path, user.uid, user.gid)?;
            }
        }
        Ok(vm)
    }

    /// Makes the run directory root's alone (a jailed hypervisor never sees
    /// it; one without a user of its own runs as root).
    pub fn close_run_dir(&self) -> Result<(), VmmError> {
        files::own(&self.run_dir, 0, 0, files::RECLAIMED_MODE).map_err(|source| VmmError::Io {
            path: self.run_dir.clone(),
            source,
        })
    }

    /// Makes the child of `cmd` join the cgroup and, with `as_user`, become
    /// the VM's user (a jailer, which drops to it itself, stays root). The
    /// report is written now, while nothing runs as the VM's user who could
    /// have planted a link where it goes.
    pub fn apply(&self, cmd: &mut tokio::process::Command, as_user: bool) -> Result<(), VmmError> {
        self.report
            .write(&self.run_dir)
            .map_err(|source| VmmError::Isolation {
                step: "write the isolation report",
                source,
            })?;
        let procs = match &self.cgroup {
            Some(c) => c.procs_files().map_err(|source| VmmError::Isolation {
                step: "open the cgroup's process list",
                source,
            })?,
            None => Vec::new(),
        };
        spawn::confine(cmd, procs, self.user().filter(|_| as_user).cloned());
        Ok(())
    }

    /// The hypervisor runs as its user: the uid's lock is let go.
    pub fn started(self) -> IsolationReport {
        self.report
    }

    /// The start failed: the cgroup goes, the files go back to root.
    pub fn abandon(self) {
        if let Some(c) = &self.cgroup {
            let _ = c.remove();
        }
        if self.lease.is_some() {
            let _ = files::reclaim(&self.run_dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use hearth_types::Disk;

    use super::*;

    fn users_only() -> Isolation {
        Isolation {
            users: Ok(UidRange::parse("2000100000-2000100009").unwrap()),
            cgroups: Err("not in this test".into()),
        }
    }

    fn vm_in(dir: &Path) -> VmDescription {
        let run_dir = dir.join("vms/vm-1");
        std::fs::create_dir_all(&run_dir).unwrap();
        for (path, mode) in [
            (dir.join("image.ext4"), 0o644),
            (run_dir.join("layer.ext4"), 0o644),
        ] {
            std::fs::write(&path, "").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let kernel = dir.join("vmlinuz");
        std::fs::write(&kernel, "k").unwrap();
        VmDescription {
            id: "vm-1".parse().unwrap(),
            kernel,
            initramfs: None,
            disks: vec![
                Disk {
                    path: dir.join("image.ext4"),
                    read_only: true,
                    key: None,
                },
                Disk {
                    path: run_dir.join("layer.ext4"),
                    read_only: false,
                    key: None,
                },
            ],
            vcpus: 1,
            memory_mib: 64,
            cmdline: String::new(),
            console_log: run_dir.join("console.log"),
            run_dir,
            channels: Vec::new(),
            memory: None,
        }
    }

    const REQUEST: Request = Request {
        overhead_mib: 0,
        opens_kvm: false,
        host_paths: true,
    };

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_vm_gets_a_user_its_directory_and_layer_and_gives_them_back() {
        // SAFETY: geteuid(2) cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped: giving files to another user needs root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        set_mode(t.path(), 0o711);
        let vm = vm_in(t.path());
        set_mode(&t.path().join("vms"), 0o711);
        let confinement = users_only().confine(&vm, REQUEST).unwrap();
        let uid = confinement.user().unwrap().uid;
        assert_eq!(confinement.report.uid, Some(uid));
        assert!(confinement.report.off[0].starts_with("cgroup: not in this test"));
        let granted = confinement.grant(&vm).unwrap();
        assert_eq!(
            granted.kernel, vm.kernel,
            "a kernel others can read is used in place"
        );
        let dir = std::fs::metadata(&vm.run_dir).unwrap();
        assert_eq!(
            (dir.uid(), dir.gid(), dir.mode() & 0o7777),
            (0, uid, 0o1770)
        );
        assert_eq!(std::fs::metadata(&vm.disks[1].path).unwrap().uid(), uid);
        let report = confinement.started();
        report.write(&vm.run_dir).unwrap();
        users_only().release(&vm.id, &vm.run_dir);
        let dir = std::fs::metadata(&vm.run_dir).unwrap();
        assert_eq!((dir.uid(), dir.gid(), dir.mode() & 0o7777), (0, 0, 0o700));
        assert_eq!(std::fs::metadata(&vm.disks[1].path).unwrap().uid(), 0);
    }

    #[test]
    fn a_vm_its_user_could_not_reach_runs_without_one_and_says_why() {
        // SAFETY: geteuid(2) cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped: the run directory is closed with chown, which needs root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        set_mode(t.path(), 0o700);
        let vm = vm_in(t.path());
        let confinement = users_only().confine(&vm, REQUEST).unwrap();
        assert_eq!(confinement.user(), None);
        let why = &confinement.report.off[0];
        assert!(
            why.starts_with("user: the VM's user cannot reach") && why.contains("o+x"),
            "{why}"
        );
        confinement.grant(&vm).unwrap();
        let mode = std::fs::metadata(&vm.run_dir).unwrap().mode() & 0o7777;
        assert_eq!(
            mode, 0o700,
            "a VM running as root keeps its directory to root"
        );
    }
}
