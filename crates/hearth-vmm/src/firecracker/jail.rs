//! Firecracker through its jailer (`$HEARTH_JAILER`, see Firecracker's
//! `docs/jailer.md`): the jailer, started as root inside the VM's cgroup,
//! makes `<run_dir>/jail/firecracker/<vm-id>/root` the root of a new mount
//! namespace (pivot_root and chroot), makes `/dev/kvm` and `/dev/net/tun`
//! there for the VM's uid and gid, and execs Firecracker (same pid) as that
//! user. Firecracker then sees only the jail.
//!
//! What the jail holds, put there before the jailer runs (the jailer
//! leaves an existing jail directory as it is): the kernel, initramfs and
//! disks as hard links (copies when a link cannot be made, as across
//! filesystems), Firecracker's log and metrics files (hard links of the
//! run directory's, so the logs stay after the jail is gone), and the API
//! and vsock sockets Firecracker makes, reached from the run directory
//! through symbolic links at their usual names. hearth does not pass the
//! jailer `--cgroup`: the VM's cgroup is hearth's own (one code path for
//! both backends, nested as [`crate::isolation::cgroup`] says), and the
//! jailer is already in it.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use hearth_types::VmDescription;

use crate::isolation::files::own;
use crate::isolation::VmUser;
use crate::VmmError;

/// The environment variable naming the jailer binary.
pub const JAILER_ENV: &str = "HEARTH_JAILER";
/// The run directory's subdirectory given to the jailer as its chroot base.
pub const JAIL_DIR: &str = "jail";

/// Where Firecracker's files are as Firecracker sees them: on the host for
/// an unjailed Firecracker, inside the jail for a jailed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FcPaths {
    pub api_socket: PathBuf,
    pub log: PathBuf,
    pub metrics: PathBuf,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub disks: Vec<PathBuf>,
    pub vsock: Option<PathBuf>,
}

/// One VM's jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    /// The chroot base (`--chroot-base-dir`).
    pub base: PathBuf,
    /// What Firecracker sees as `/`.
    pub root: PathBuf,
}

impl Jail {
    /// The jail of `vm` for the firecracker binary `firecracker` (the
    /// jailer names the directory after the binary's file name).
    pub fn of(vm: &VmDescription, firecracker: &Path) -> Self {
        let base = vm.run_dir.join(JAIL_DIR);
        let name = firecracker
            .file_name()
            .unwrap_or_else(|| "firecracker".as_ref());
        let root = base.join(name).join(vm.id.as_str()).join("root");
        Jail { base, root }
    }

    /// The paths inside the jail, from Firecracker's side.
    pub fn inside(vm: &VmDescription) -> FcPaths {
        FcPaths {
            api_socket: "/firecracker.sock".into(),
            log: "/firecracker.log".into(),
            metrics: "/firecracker-metrics.json".into(),
            kernel: "/vmlinux".into(),
            initrd: vm.initramfs.as_ref().map(|_| "/initrd".into()),
            disks: (0..vm.disks.len())
                .map(|i| format!("/disk{i}").into())
                .collect(),
            vsock: vm.channels.first().map(|_| "/agent.sock".into()),
        }
    }

    /// Where a path inside the jail is on the host.
    pub fn host(&self, inside: &Path) -> PathBuf {
        self.root.join(inside.strip_prefix("/").unwrap_or(inside))
    }

    /// Puts the VM's files in the jail for `user`: `kernel` (an ELF), the
    /// initramfs and disks, the log and metrics files of the run directory,
    /// and links from the run directory's socket names to the jail's.
    pub fn populate(
        &self,
        vm: &VmDescription,
        kernel: &Path,
        host_files: &FcPaths,
        user: &VmUser,
    ) -> Result<FcPaths, VmmError> {
        let _ = std::fs::remove_dir_all(&self.base);
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let inside = Self::inside(vm);
        self.link(kernel, &inside.kernel, user, false)?;
        if let (Some(from), Some(to)) = (&vm.initramfs, &inside.initrd) {
            self.link(from, to, user, false)?;
        }
        for (disk, to) in vm.disks.iter().zip(&inside.disks) {
            self.link(&disk.path, to, user, !disk.read_only)?;
        }
        self.link(&host_files.log, &inside.log, user, true)?;
        self.link(&host_files.metrics, &inside.metrics, user, true)?;
        self.point(&host_files.api_socket, &inside.api_socket)?;
        if let (Some(host), Some(jailed)) = (&host_files.vsock, &inside.vsock) {
            self.point(host, jailed)?;
        }
        Ok(inside)
    }

    /// A hard link of `from` at `to` in the jail (a copy when linking is
    /// not possible); `writable` ones become the VM user's. A file others
    /// cannot read is copied for the VM's group instead of linked.
    fn link(&self, from: &Path, to: &Path, user: &VmUser, writable: bool) -> Result<(), VmmError> {
        let dest = self.host(to);
        let others_read = std::fs::metadata(from).is_ok_and(|m| m.mode() & 0o004 != 0);
        let linked = (writable || others_read) && std::fs::hard_link(from, &dest).is_ok();
        if !linked {
            std::fs::copy(from, &dest)
                .and_then(|_| own(&dest, 0, user.gid, 0o640))
                .map_err(io(&dest))?;
        }
        if writable {
            own(&dest, user.uid, user.gid, 0o600).map_err(io(&dest))?;
        }
        Ok(())
    }

    /// A symbolic link at the host path `host` to the jail's `inside`.
    fn point(&self, host: &Path, inside: &Path) -> Result<(), VmmError> {
        let _ = std::fs::remove_file(host);
        std::os::unix::fs::symlink(self.host(inside), host).map_err(io(host))
    }
}

/// The jail holds no libraries: the firecracker binary the jailer copies
/// in must be statically linked (as Firecracker's releases are), or its
/// exec fails with a bare "No such file or directory".
pub fn check_static(firecracker: &Path) -> Result<(), VmmError> {
    if hearth_guestkit::agent::is_static_elf_file(firecracker) {
        return Ok(());
    }
    Err(VmmError::Isolation {
        step: "run Firecracker in its jail",
        source: std::io::Error::other(format!(
            "{} is not a statically linked ELF, and the jail has no libraries for it: give \
             HEARTH_FIRECRACKER a static firecracker (a release build, or one linked with \
             musl or static glibc), or unset HEARTH_JAILER",
            firecracker.display()
        )),
    })
}

/// The VM whose jail under `vms_dir` process `pid` runs in: a jailed
/// Firecracker's command line names only paths inside its jail, so it is
/// known by its `--id` and by its root being that VM's jail directory.
pub fn jailed_vm(pid: u32, vms_dir: &Path) -> Option<hearth_types::VmId> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut args = cmdline.split(|b| *b == 0);
    args.find(|a| *a == b"--id")?;
    let id: hearth_types::VmId = std::str::from_utf8(args.next()?).ok()?.parse().ok()?;
    let root = std::fs::metadata(format!("/proc/{pid}/root/")).ok()?;
    let jails = std::fs::read_dir(vms_dir.join(id.as_str()).join(JAIL_DIR)).ok()?;
    let same = |p: PathBuf| {
        std::fs::metadata(p).is_ok_and(|m| (m.dev(), m.ino()) == (root.dev(), root.ino()))
    };
    jails
        .flatten()
        .any(|binary| same(binary.path().join(id.as_str()).join("root")))
        .then_some(id)
}

/// The jailer's command line (after the program): the VM's id, the
/// firecracker binary, the user, the chroot base, then Firecracker's own
/// arguments after `--` (the jailer adds `--id` itself).
pub fn jailer_args(
    vm: &VmDescription,
    firecracker: &Path,
    user: &VmUser,
    jail: &Jail,
    netns: Option<&Path>,
    firecracker_args: Vec<OsString>,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "--id".into(),
        vm.id.as_str().into(),
        "--exec-file".into(),
        firecracker.into(),
        "--uid".into(),
        user.uid.to_string().into(),
        "--gid".into(),
        user.gid.to_string().into(),
        "--chroot-base-dir".into(),
        jail.base.clone().into(),
    ];
    if let Some(netns) = netns {
        a.push("--netns".into());
        a.push(netns.into());
    }
    a.push("--".into());
    a.extend(firecracker_args);
    a
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VmmError + '_ {
    move |source| VmmError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use hearth_types::{Channel, Disk};

    use super::*;

    fn vm(dir: &Path) -> VmDescription {
        VmDescription {
            id: "vm-0123456789ab".parse().unwrap(),
            kernel: dir.join("bzImage"),
            initramfs: Some(dir.join("initrd.cpio.gz")),
            disks: vec![
                Disk {
                    path: dir.join("root.ext4"),
                    read_only: true,
                    key: None,
                },
                Disk {
                    path: dir.join("vm/layer.ext4"),
                    read_only: false,
                    key: None,
                },
            ],
            vcpus: 1,
            memory_mib: 128,
            cmdline: "console=ttyS0".into(),
            run_dir: dir.join("vm"),
            console_log: dir.join("vm/console.log"),
            channels: vec![Channel {
                name: "hearth.agent".into(),
                socket: dir.join("vm/agent.sock"),
            }],
            memory: None,
        }
    }

    fn user() -> VmUser {
        VmUser {
            uid: 2_000_000_042,
            gid: 2_000_000_042,
            groups: Vec::new(),
        }
    }

    #[test]
    fn a_dynamically_linked_firecracker_is_refused_for_the_jail() {
        // This test binary is dynamically linked, as a plain firecracker
        // build is.
        let me = std::env::current_exe().unwrap();
        if hearth_guestkit::agent::is_static_elf_file(&me) {
            return;
        }
        let err = check_static(&me).unwrap_err();
        let chain = hearth_types::error_chain(&err);
        assert!(
            chain.contains("not a statically linked") && chain.contains("HEARTH_JAILER"),
            "{chain}"
        );
    }

    #[test]
    fn the_jail_is_where_the_jailer_makes_it() {
        let vm = vm(Path::new("/data"));
        let jail = Jail::of(&vm, Path::new("/opt/fc/firecracker-v1.16"));
        assert_eq!(jail.base, Path::new("/data/vm/jail"));
        assert_eq!(
            jail.root,
            Path::new("/data/vm/jail/firecracker-v1.16/vm-0123456789ab/root")
        );
        assert_eq!(
            jail.host(Path::new("/firecracker.sock")),
            jail.root.join("firecracker.sock")
        );
    }

    #[test]
    fn the_jailer_gets_id_binary_user_and_base_then_firecrackers_own_arguments() {
        let vm = vm(Path::new("/data"));
        let jail = Jail::of(&vm, Path::new("/usr/bin/firecracker"));
        let fc_args = vec!["--api-sock".into(), "/firecracker.sock".into()];
        let line = |netns: Option<&Path>| {
            let fc = Path::new("/usr/bin/firecracker");
            let args = jailer_args(&vm, fc, &user(), &jail, netns, fc_args.clone());
            let words: Vec<String> = args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            words.join(" ")
        };
        assert_eq!(
            line(None),
            "--id vm-0123456789ab --exec-file /usr/bin/firecracker --uid 2000000042 \
             --gid 2000000042 --chroot-base-dir /data/vm/jail -- --api-sock /firecracker.sock"
        );
        assert_eq!(
            line(Some(Path::new("/run/netns/hearth-s3"))),
            "--id vm-0123456789ab --exec-file /usr/bin/firecracker --uid 2000000042 \
             --gid 2000000042 --chroot-base-dir /data/vm/jail --netns /run/netns/hearth-s3 \
             -- --api-sock /firecracker.sock",
            "a NIC's namespace, which the jailer enters before it drops to the user"
        );
    }

    #[test]
    fn populating_links_the_files_in_and_points_the_sockets_at_the_jail() {
        // SAFETY: geteuid(2) cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped: a jail gives files to another user, which needs root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let vm = vm(t.path());
        std::fs::create_dir(&vm.run_dir).unwrap();
        for (path, mode) in [
            (t.path().join("vmlinux.elf"), 0o644),
            (t.path().join("initrd.cpio.gz"), 0o600),
            (t.path().join("root.ext4"), 0o644),
            (vm.run_dir.join("layer.ext4"), 0o644),
            (vm.run_dir.join("firecracker.log"), 0o644),
            (vm.run_dir.join("firecracker-metrics.json"), 0o644),
        ] {
            std::fs::write(&path, path.display().to_string()).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let host = FcPaths {
            api_socket: vm.run_dir.join("firecracker.sock"),
            log: vm.run_dir.join("firecracker.log"),
            metrics: vm.run_dir.join("firecracker-metrics.json"),
            kernel: t.path().join("vmlinux.elf"),
            initrd: vm.initramfs.clone(),
            disks: vm.disks.iter().map(|d| d.path.clone()).collect(),
            vsock: Some(vm.channels[0].socket.clone()),
        };
        let jail = Jail::of(&vm, Path::new("/usr/bin/firecracker"));
        let inside = jail.populate(&vm, &host.kernel, &host, &user()).unwrap();
        assert_eq!(inside, Jail::inside(&vm));
        assert_eq!(inside.disks, [Path::new("/disk0"), Path::new("/disk1")]);
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(
            ino(&jail.host(&inside.kernel)),
            ino(&host.kernel),
            "a hard link"
        );
        assert_eq!(ino(&jail.host(&inside.disks[1])), ino(&vm.disks[1].path));
        assert_eq!(ino(&jail.host(&inside.log)), ino(&host.log));
        let initrd = jail.host(inside.initrd.as_ref().unwrap());
        assert_ne!(
            ino(&initrd),
            ino(vm.initramfs.as_ref().unwrap()),
            "others cannot read it: a copy"
        );
        assert_eq!(
            std::fs::read(&initrd).unwrap(),
            std::fs::read(vm.initramfs.as_ref().unwrap()).unwrap()
        );
        assert_eq!(
            std::fs::read_link(&host.api_socket).unwrap(),
            jail.root.join("firecracker.sock")
        );
        assert_eq!(
            std::fs::read_link(&vm.channels[0].socket).unwrap(),
            jail.root.join("agent.sock")
        );
        let layer = std::fs::metadata(jail.host(&inside.disks[1])).unwrap();
        assert_eq!((layer.uid(), layer.mode() & 0o777), (user().uid, 0o600));
        assert_eq!(std::fs::metadata(&initrd).unwrap().gid(), user().gid);
    }
}
