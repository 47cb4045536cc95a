//! Hypervisors are not root: real `hearth serve` VMs under QEMU, checked
//! from the host's side. Each hypervisor runs as a uid of its own (not 0)
//! with QEMU's seccomp sandbox, cannot read another VM's writable layer,
//! and sits in a cgroup of its own carrying the VM's limits while it runs,
//! gone once the VM is destroyed. A hypervisor pushed over its memory
//! limit is killed by its cgroup, and the VM fails with the
//! `memory_limit` diagnosis.
//!
//! Needs root and cgroups (v1 or v2); elsewhere each test prints one line
//! and passes, as hearth itself runs without isolation there.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::serve::Host;
use hearth_types::api::{Diagnosis, VmEvent};
use hearth_types::{VmId, VmState};
use hearth_vmm::isolation::{CgroupHost, Controller, UidRange};
use hearth_vmm::qemu::{OVERHEAD_MIB, TCG_CACHE_MIB};

const DESTROY: Duration = Duration::from_secs(30);
const MEMORY_MIB: u32 = 256;

/// The cgroups of this host, or why the test cannot run here.
fn isolating_host() -> Option<CgroupHost> {
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!(
            "skipped: hypervisors get users and cgroups of their own only when hearth is root"
        );
        return None;
    }
    match CgroupHost::detect() {
        Ok(host) => Some(host),
        Err(why) => {
            println!("skipped: {why}");
            None
        }
    }
}

/// A host whose data directory VM users can reach (a test's temporary
/// directory is its owner's alone; hearth opens the data directory
/// itself, not what is above it).
fn reachable_host() -> Host {
    let host = Host::new(&[]);
    let work = host.data().parent().unwrap().to_owned();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o711)).unwrap();
    host
}

/// Field `name` of /proc/PID/status.
fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// The VM's cgroup directory of `controller`.
fn cgroup_dir(cgroups: &CgroupHost, id: &str, controller: Controller) -> PathBuf {
    let cgroup = cgroups.vm(&id.parse::<VmId>().unwrap());
    let paths = cgroup.paths();
    match cgroups {
        CgroupHost::V2 { .. } => paths[0].clone(),
        CgroupHost::V1 { parents } => {
            let i = parents.iter().position(|(c, _)| *c == controller).unwrap();
            paths[i].clone()
        }
    }
}

/// Whether `uid` (and its own gid; std drops root's other groups) may
/// read `path`: the test opens it as that user.
fn can_read_as(uid: u32, path: &Path) -> Result<(), String> {
    let out = Command::new("/usr/bin/head")
        .arg("-c")
        .arg("16")
        .arg(path)
        .uid(uid)
        .gid(uid)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

fn events(host: &mut Host, id: &str) -> Vec<String> {
    let events: Vec<VmEvent> = host
        .api()
        .json("GET", &format!("/v1/vms/{id}/events"), None, 200);
    events.into_iter().map(|e| e.message).collect()
}

fn destroy(host: &mut Host, id: &str) {
    host.vm_ok(&["rm", id]);
    host.wait_state(id, VmState::Destroyed, DESTROY);
}

#[test]
fn vm_hypervisors_run_as_their_own_users_sandboxed_in_cgroups_with_the_vms_limits() {
    let Some(cgroups) = isolating_host() else {
        return;
    };
    let mut host = reachable_host();
    host.start();
    let memory = MEMORY_MIB.to_string();
    let ids: Vec<String> = (0..2)
        .map(|_| host.create(&["--memory", &memory, "--wait", "ready"]))
        .collect();
    let mut uids = Vec::new();
    for id in &ids {
        let pid = host.hypervisor_of(id).expect("the VM's hypervisor");
        let fields: Vec<u32> = status_field(pid, "Uid")
            .split_whitespace()
            .map(|u| u.parse().unwrap())
            .collect();
        let uid = fields[0];
        assert_ne!(uid, 0, "QEMU of {id} runs as root");
        assert!(
            fields.iter().all(|u| *u == uid),
            "real, effective, saved and fs uid: {fields:?}"
        );
        assert!(UidRange::default().contains(uid), "{uid} is not a VM uid");
        assert_eq!(
            status_field(pid, "Gid").split_whitespace().next(),
            Some(uid.to_string().as_str())
        );
        assert_eq!(status_field(pid, "Groups"), "", "no supplementary group");
        assert_eq!(
            status_field(pid, "Seccomp"),
            "2",
            "QEMU's sandbox is a seccomp filter"
        );
        uids.push(uid);

        let booted = events(&mut host, id);
        let line = booted.iter().find(|m| m.starts_with("booting:")).unwrap();
        assert!(
            line.contains(&format!(
                "isolation: uid {uid}, cgroup v{}",
                cgroups.version()
            )),
            "{line}"
        );
        assert!(line.contains("seccomp"), "{line}");

        let expected = (u64::from(MEMORY_MIB) + u64::from(OVERHEAD_MIB + TCG_CACHE_MIB)) << 20;
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let mem = cgroup_dir(&cgroups, id, Controller::Memory);
        match &cgroups {
            CgroupHost::V1 { .. } => {
                assert_eq!(
                    read(mem.join("memory.limit_in_bytes")),
                    expected.to_string()
                );
                let cpu = cgroup_dir(&cgroups, id, Controller::Cpu);
                assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "100000", "one vCPU");
                let pids = cgroup_dir(&cgroups, id, Controller::Pids);
                assert_eq!(read(pids.join("pids.max")), "97");
                for dir in [&mem, &cpu, &pids] {
                    assert!(read(dir.join("cgroup.procs"))
                        .lines()
                        .any(|p| p == pid.to_string()));
                }
            }
            CgroupHost::V2 { .. } => {
                assert_eq!(read(mem.join("memory.max")), expected.to_string());
                assert_eq!(read(mem.join("cpu.max")), "100000 100000");
                assert_eq!(read(mem.join("pids.max")), "97");
            }
        }
        assert!(own.contains(&format!("/hearth/{id}\n")), "{own}");
    }
    assert_ne!(uids[0], uids[1], "each VM has a user of its own");

    // Each user reads its own layer, and not the other VM's files.
    let dir = |id: &str| host.vms_dir().join(id);
    can_read_as(uids[0], &dir(&ids[0]).join("layer.ext4"))
        .expect("a VM's user reads its own layer");
    for file in ["layer.ext4", "console.log", "isolation.json"] {
        let err = can_read_as(uids[0], &dir(&ids[1]).join(file))
            .expect_err("one VM's user read another VM's file");
        assert!(err.contains("Permission denied"), "{file}: {err}");
    }

    // A controller killed and started again adopts them, cgroups and all.
    host.kill_serve();
    host.start();
    for id in &ids {
        assert_eq!(host.vm(id).state, VmState::Ready, "{id} after the restart");
    }
    let cgroup_paths: Vec<PathBuf> = ids
        .iter()
        .flat_map(|id| cgroups.vm(&id.parse::<VmId>().unwrap()).paths())
        .collect();
    assert!(cgroup_paths.iter().all(|p| p.exists()));
    for id in &ids {
        destroy(&mut host, id);
    }
    for path in &cgroup_paths {
        assert!(!path.exists(), "{} is left after destroy", path.display());
    }
    host.assert_clean();
}

#[test]
fn vm_a_hypervisor_over_its_memory_limit_is_killed_and_the_vm_fails_diagnosed_as_such() {
    let Some(cgroups) = isolating_host() else {
        return;
    };
    if hearth_testkit::static_agent().is_none() {
        println!("skipped: no static guest agent to run the guest's allocation with");
        return;
    }
    let mut host = reachable_host();
    host.start();
    let memory = MEMORY_MIB.to_string();
    let id = host.create(&["--memory", &memory, "--wait", "ready"]);
    // The test's hook: the limit shrunk to just above what QEMU uses now,
    // so the guest's next allocation takes QEMU over it.
    let mem = cgroup_dir(&cgroups, &id, Controller::Memory);
    let (usage, limit) = match &cgroups {
        CgroupHost::V1 { .. } => ("memory.usage_in_bytes", "memory.limit_in_bytes"),
        CgroupHost::V2 { .. } => ("memory.current", "memory.max"),
    };
    let now: u64 = read(mem.join(usage)).parse().unwrap();
    std::fs::write(mem.join(limit), (now + (8 << 20)).to_string()).unwrap();
    let api = host.api();
    let mut hog = host
        .hearth(&[
            "vm",
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "x=a; while :; do x=$x$x; done",
        ])
        .env("HEARTH_URL", &api.url)
        .env("HEARTH_TOKEN", &api.token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let failed = host.wait_vm(&id, Duration::from_secs(60), |vm| !vm.state.is_active());
    let _ = hog.kill();
    let _ = hog.wait();
    assert_eq!(failed.state, VmState::Failed, "{failed:?}");
    let failure = failed.failure.expect("a failure");
    println!("failure: {}", failure.message);
    assert!(failure.message.contains("memory limit"), "{failure:?}");

    let diagnosis: Diagnosis = api.json("GET", &format!("/v1/vms/{id}/diagnosis"), None, 200);
    let first = diagnosis.findings.first().expect("a finding");
    println!("diagnosis: {first:#?}");
    assert_eq!(first.rule, "memory_limit", "{diagnosis:#?}");
    assert!(first.evidence[0].contains("oom_kill 1"), "{first:#?}");
    // The test lowered the limit itself, and the diagnosis says so.
    assert!(
        first.cause.contains("memory limit") && first.cause.contains("lowered"),
        "{first:#?}"
    );

    let paths = cgroups.vm(&id.parse::<VmId>().unwrap()).paths();
    assert!(
        paths.iter().all(|p| !p.exists()),
        "the cgroup stays after the exit"
    );
    destroy(&mut host, &id);
    let archived: Diagnosis = api.json("GET", &format!("/v1/vms/{id}/diagnosis"), None, 200);
    assert_eq!(
        archived.findings[0].rule, "memory_limit",
        "the archive keeps the counters"
    );
    host.assert_clean();
}

/// A cgroup no VM of the store accounts for is removed at start once it is
/// empty and older than the orphan grace (and a minute, whatever the
/// grace); one with a process stays, and so does a young one.
#[test]
fn orphaned_vm_cgroups_are_swept_when_empty_and_kept_while_busy() {
    let Some(cgroups) = isolating_host() else {
        return;
    };
    let orphan: VmId = "vm-0rphan0swept".parse().unwrap();
    let busy: VmId = "vm-0rphan0busy0".parse().unwrap();
    let young: VmId = "vm-0rphan0young".parse().unwrap();
    let limits = hearth_vmm::isolation::Limits::for_guest(64, 1, 0);
    for id in [&orphan, &busy, &young] {
        cgroups.vm(id).create(&limits).expect("a cgroup");
    }
    for id in [&orphan, &busy] {
        for path in cgroups.vm(id).paths() {
            let aged = Command::new("touch")
                .arg("-d")
                .arg("2 minutes ago")
                .arg(&path)
                .status();
            assert!(aged.unwrap().success(), "{}", path.display());
        }
    }
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    for path in cgroups.vm(&busy).paths() {
        std::fs::write(path.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    }
    let mut host = Host::new(&["--orphan-grace", "0"]);
    host.start();
    let exists = |id: &VmId| {
        cgroups
            .vm(id)
            .paths()
            .iter()
            .map(|p| p.exists())
            .collect::<Vec<_>>()
    };
    let (orphan_left, busy_left, young_left) = (exists(&orphan), exists(&busy), exists(&young));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    for id in [&orphan, &young, &busy] {
        cgroups.vm(id).remove().expect("an empty cgroup is removed");
    }
    assert!(
        orphan_left.iter().all(|e| !e),
        "an empty orphaned cgroup stays:\n{}",
        host.serve_logs()
    );
    assert!(
        busy_left.iter().all(|e| *e),
        "a cgroup with a process in it was removed"
    );
    assert!(
        young_left.iter().all(|e| *e),
        "a cgroup younger than a minute was removed"
    );
}
