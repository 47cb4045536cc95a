//! The doctor's isolation checks: which confinement this host gives each
//! VM's hypervisor (its own user, a cgroup with the VM's limits, QEMU's
//! seccomp sandbox, Firecracker's jailer) and, for each part it lacks,
//! why and what to do. Lacking one is a warning: hearth boots VMs anyway,
//! and says in each VM's events what it ran without.

use std::path::{Path, PathBuf};

use hearth_guestkit::DataDir;
use hearth_types::Accel;
use hearth_vmm::accel::HostProbe;
use hearth_vmm::firecracker::jail::JAILER_ENV;
use hearth_vmm::firecracker::Firecracker;
use hearth_vmm::isolation::{files, user, CgroupHost, Controller, UidRange, KVM_DEVICE};
use hearth_vmm::qemu::{sandbox_support, QEMU};

use super::{fail, ok, warn, Check};

fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Per-VM users: root, a valid range, a data directory VM users can
/// reach, and /dev/kvm open to them where KVM is used.
pub(super) fn users(data: &DataDir) -> Check {
    if !is_root() {
        return warn(
            "isolation: hearth is not root here, so hypervisors run as this user, in its cgroup",
            "run `hearth serve` as root to give each VM's hypervisor a user and a cgroup of its own",
        );
    }
    let range = match UidRange::from_env() {
        Ok(range) => range,
        Err(why) => return fail(format!("isolation: {why}"), "fix or unset the variable"),
    };
    if let Some(blocker) = data.root().parent().and_then(files::unsearchable) {
        return warn(
            format!(
                "isolation: VM users cannot reach the data directory ({} is not searchable by \
                 others), so hypervisors run as root",
                blocker.display()
            ),
            format!(
                "chmod o+x {}, or keep the data directory elsewhere",
                blocker.display()
            ),
        );
    }
    if HostProbe::default().detect().accel == Accel::Kvm {
        if let Err(why) = user::kvm_group(Path::new(KVM_DEVICE)) {
            return warn(
                format!("isolation: {why}"),
                "add /dev/kvm to the kvm group (udev does)",
            );
        }
    }
    ok(format!(
        "isolation: each hypervisor runs as a uid of its own ({}-{})",
        range.first,
        range.last()
    ))
}

/// A cgroup per VM: which version, which controllers, whether hearth can
/// make cgroups there.
pub(super) fn cgroups() -> Check {
    let host = match CgroupHost::detect() {
        Ok(host) => host,
        Err(why) => {
            return warn(
                format!("isolation: {why}: VMs get no memory, CPU or task limits"),
                "mount cgroup v2 (boot with systemd.unified_cgroup_hierarchy=1), or the v1 \
                 memory, cpu and pids hierarchies",
            )
        }
    };
    let have: Vec<&str> = host
        .controllers()
        .into_iter()
        .map(Controller::name)
        .collect();
    let missing: Vec<&str> = Controller::ALL
        .into_iter()
        .map(Controller::name)
        .filter(|c| !have.contains(c))
        .collect();
    let what = format!(
        "isolation: cgroup v{} ({}) for each VM's limits, under {}",
        host.version(),
        have.join(", "),
        show(&host.hearth_dirs())
    );
    if !is_root() {
        return warn(
            format!("{what}, but only root may make cgroups there"),
            "run `hearth serve` as root",
        );
    }
    if missing.is_empty() {
        ok(what)
    } else {
        warn(
            format!(
                "{what}; no {} controller, so that limit is not set",
                missing.join(" or ")
            ),
            format!(
                "enable the {} controller(s) of the cgroup hierarchy",
                missing.join(", ")
            ),
        )
    }
}

fn show(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// QEMU's seccomp sandbox.
pub(super) fn seccomp() -> Check {
    match sandbox_support(Path::new(QEMU)) {
        Ok(()) => ok("isolation: QEMU's seccomp sandbox (-sandbox on, spawning and privilege changes denied)"),
        Err(why) => warn(format!("isolation: {why}"), "QEMU VMs run without a seccomp filter until then"),
    }
}

/// The firecracker binary hearth would jail, if there is one, must be
/// static.
fn firecracker_for_jail() -> Result<(), String> {
    let Ok(fc) = Firecracker::from_env(PathBuf::new()) else {
        return Ok(());
    };
    hearth_vmm::firecracker::jail::check_static(fc.binary())
        .map_err(|e| hearth_types::error_chain(&e))
}

/// Firecracker's jailer, where Firecracker is used.
pub(super) fn jailer() -> Check {
    match Firecracker::jailer_from_env() {
        Ok(Some(jailer)) => match firecracker_for_jail() {
            Err(why) => fail(format!("isolation: {why}"), "Firecracker VMs would not start"),
            Ok(()) => ok(format!(
                "isolation: Firecracker runs through its jailer ({}): chroot, the VM's uid and gid",
                jailer.display()
            )),
        },
        Ok(None) => warn(
            format!("isolation: {JAILER_ENV} is not set, so Firecracker VMs run without the jailer (as their own users, without a chroot)"),
            format!("set {JAILER_ENV} to the jailer binary built with your Firecracker"),
        ),
        Err(e) => fail(format!("isolation: {e}"), format!("point {JAILER_ENV} at an executable jailer, or unset it")),
    }
}
