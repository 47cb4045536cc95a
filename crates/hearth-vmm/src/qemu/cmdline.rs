//! The QEMU microvm command line, as a pure function of the VM description
//! and the host's facts, so it is tested without starting QEMU.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use hearth_types::{Accel, MemoryMapping, VmDescription};

/// Host facts the command line depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuHost {
    pub accel: Accel,
    /// qboot, which microvm needs with option ROMs off.
    pub bios: PathBuf,
    /// The host TSC frequency; under TCG the guest kernel is told it, or
    /// about one boot in ten hangs calibrating it.
    pub tsc_khz: Option<u64>,
    /// QEMU's seccomp sandbox ([`SANDBOX`]) is on.
    pub sandbox: bool,
}

/// QEMU's seccomp sandbox, everything denied that a running microvm never
/// needs: obsolete system calls, changing user or group, starting
/// programs, and changing scheduling or CPU affinity.
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// The QMP socket of a VM.
pub fn qmp_socket(vm: &VmDescription) -> PathBuf {
    vm.run_dir.join("qmp.sock")
}

/// The second QMP socket of a VM, for snapshots: the first is held by the
/// VM's watcher for its whole life, and QMP serves one client at a time.
pub fn snapshot_socket(vm: &VmDescription) -> PathBuf {
    vm.run_dir.join("qmp-snapshot.sock")
}

/// The id of the memory backend object of a VM whose RAM is a file.
const RAM_ID: &str = "ram";

/// The `memory-backend-file` options of each way of mapping a memory file
/// (besides its id, path and size). A restored VM maps the template's file
/// private: `readonly=on` opens it read-only, `rom=off` still lets the
/// guest write (QEMU >= 8.2), each write copying the page for this VM.
pub fn memory_backend_options(mapping: MemoryMapping) -> &'static str {
    match mapping {
        MemoryMapping::Template => "share=on",
        MemoryMapping::CopyOnWrite => "share=off,readonly=on,rom=off",
    }
}

/// `-object memory-backend-file,...` for a VM whose RAM is a file (the
/// machine's `memory-backend` names it); none for anonymous RAM.
fn memory_object(vm: &VmDescription) -> Option<OsString> {
    let file = vm.memory.as_ref()?;
    let mut object = OsString::from(format!(
        "memory-backend-file,id={RAM_ID},size={}M,{}",
        vm.memory_mib,
        memory_backend_options(file.mapping)
    ));
    object.push(opt(",mem-path=", &file.path));
    Some(object)
}

/// A disk's format, from its name: hearth's layers are raw ext4, and a
/// restored VM's layer is a qcow2 overlay over its snapshot's frozen one.
fn disk_format(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("qcow2") => "qcow2",
        _ => "raw",
    }
}

/// The kernel command line QEMU passes: the description's, plus what this
/// host and machine need. microvm has no i8042 keyboard controller, so a
/// `reboot=k` reset spins for seconds (and was seen to hang) before falling
/// back; `reboot=t` resets by triple fault at once, which `-no-reboot` turns
/// into QEMU exiting.
///
/// Under TCG the guest's TSC comes from the host's clock, but with 2 vCPUs
/// the kernel's TSC sync check fails (the emulated CPUs run unevenly) and
/// it falls back to `refined-jiffies`, whose time is lost whenever timer
/// ticks are late: a busy browser VM's clock lost 5-6 s in 30 s.
/// `tsc=reliable` keeps the TSC as the clocksource.
pub fn kernel_cmdline(vm: &VmDescription, host: &QemuHost) -> String {
    let mut line = format!("{} reboot=t", vm.cmdline);
    if let (Accel::Tcg, Some(khz)) = (host.accel, host.tsc_khz) {
        line.push_str(&format!(" tsc_early_khz={khz} tsc=reliable"));
    }
    line
}

/// Arguments after the program name, for a VM without encrypted disks.
pub fn args(vm: &VmDescription, host: &QemuHost) -> Vec<OsString> {
    args_with_keys(vm, host, &[])
}

/// Arguments after the program name. `key_fds` holds, for each encrypted
/// disk (by its index), the descriptor QEMU inherits its key from: the key
/// is read from `/dev/fd/N` by a `secret` object, never put on the command
/// line (anyone on the host can read `/proc/PID/cmdline`).
pub fn args_with_keys(
    vm: &VmDescription,
    host: &QemuHost,
    key_fds: &[(usize, i32)],
) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
    if host.sandbox {
        push(&["-sandbox", SANDBOX]);
    }
    let mut machine = String::from("microvm,x-option-roms=off,isa-serial=on,rtc=off");
    if vm.memory.is_some() {
        machine.push_str(&format!(",memory-backend={RAM_ID}"));
    }
    push(&["-M", &machine]);
    match host.accel {
        Accel::Tcg => push(&["-accel", "tcg", "-cpu", "max"]),
        // Plain `-cpu host` trips over MSR 0x10a (arch-capabilities).
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host,-arch-capabilities"]),
    }
    push(&[
        "-m",
        &vm.memory_mib.to_string(),
        "-smp",
        &vm.vcpus.to_string(),
    ]);
    if let Some(object) = memory_object(vm) {
        a.push("-object".into());
        a.push(object);
    }
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
    push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    push(&["-serial", "stdio", "-name", vm.id.as_str()]);
    a.push("-bios".into());
    a.push(host.bios.clone().into());
    a.push("-kernel".into());
    a.push(vm.kernel.clone().into());
    if let Some(initrd) = &vm.initramfs {
        a.push("-initrd".into());
        a.push(initrd.clone().into());
    }
    a.push("-append".into());
    a.push(kernel_cmdline(vm, host).into());
    for (i, fd) in key_fds {
        a.push("-object".into());
        a.push(format!("secret,id=disk{i}-key,format=raw,file=/dev/fd/{fd}").into());
    }
    for (i, disk) in vm.disks.iter().enumerate() {
        let ro = if disk.read_only { ",readonly=on" } else { "" };
        let format = match disk.key {
            Some(_) => format!("qcow2,encrypt.format=luks,encrypt.key-secret=disk{i}-key"),
            None => disk_format(&disk.path).to_owned(),
        };
        a.push("-drive".into());
        a.push(opt(
            &format!("id=disk{i},format={format},if=none{ro},file="),
            &disk.path,
        ));
        a.push("-device".into());
        a.push(format!("virtio-blk-device,drive=disk{i}").into());
    }
    a.extend(channel_args(vm));
    let mut qmp = opt("unix:", &qmp_socket(vm));
    qmp.push(",server=on,wait=off");
    a.push("-qmp".into());
    a.push(qmp);
    let mut snap = opt("unix:", &snapshot_socket(vm));
    snap.push(",server=on,wait=off");
    a.push("-qmp".into());
    a.push(snap);
    a
}

/// One virtio-serial controller and a port per channel, each backed by a
/// Unix socket QEMU listens on. `wait=off`: the guest boots without a host
/// client; until one connects, guest writes block and reads see end-of-file.
fn channel_args(vm: &VmDescription) -> Vec<OsString> {
    if vm.channels.is_empty() {
        return Vec::new();
    }
    let mut a: Vec<OsString> = vec!["-device".into(), "virtio-serial-device".into()];
    for (i, ch) in vm.channels.iter().enumerate() {
        let mut chardev = opt("socket,path=", &ch.socket);
        chardev.push(format!(",server=on,wait=off,id=ch{i}"));
        a.push("-chardev".into());
        a.push(chardev);
        a.push("-device".into());
        let name = ch.name.replace(',', ",,");
        a.push(format!("virtserialport,chardev=ch{i},name={name}").into());
    }
    a
}

/// `prefix` followed by a path, with the commas QEMU's option parser would
/// split on doubled.
fn opt(prefix: &str, path: &Path) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(path.as_os_str().to_string_lossy().replace(',', ",,"));
    s
}

/// The host TSC frequency in kHz, from sysfs or /proc/cpuinfo.
pub fn host_tsc_khz() -> Option<u64> {
    if let Ok(s) = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz") {
        if let Ok(khz) = s.trim().parse() {
            return Some(khz);
        }
    }
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0) as u64)
}

#[cfg(test)]
mod tests {
    use hearth_types::{Channel, Disk};

    use super::*;

    fn vm() -> VmDescription {
        VmDescription {
            id: "vm-1".parse().unwrap(),
            kernel: "/k/vmlinuz".into(),
            initramfs: Some("/k/initrd".into()),
            disks: vec![
                Disk {
                    path: "/img/root,1.ext4".into(),
                    read_only: true,
                    key: None,
                },
                Disk {
                    path: "/vm/layer.ext4".into(),
                    read_only: false,
                    key: None,
                },
            ],
            vcpus: 2,
            memory_mib: 256,
            cmdline: "console=ttyS0".into(),
            run_dir: "/vm".into(),
            console_log: "/vm/console.log".into(),
            channels: Vec::new(),
            memory: None,
        }
    }

    fn host(accel: Accel) -> QemuHost {
        QemuHost {
            accel,
            bios: "/q/qboot.rom".into(),
            tsc_khz: Some(2_596_148),
            sandbox: false,
        }
    }

    fn joined(a: Vec<OsString>) -> String {
        a.iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn tcg_line_has_cpu_max_and_the_tsc_hint() {
        let line = joined(args(&vm(), &host(Accel::Tcg)));
        assert!(line.contains("-accel tcg -cpu max"), "{line}");
        assert!(
            line.contains("-append console=ttyS0 reboot=t tsc_early_khz=2596148 tsc=reliable"),
            "{line}"
        );
        assert!(line.contains("-m 256 -smp 2"), "{line}");
        assert!(line.contains("-no-reboot"), "{line}");
    }

    #[test]
    fn kvm_line_masks_arch_capabilities_and_skips_the_tsc_hint() {
        let line = joined(args(&vm(), &host(Accel::Kvm)));
        assert!(
            line.contains("-accel kvm -cpu host,-arch-capabilities"),
            "{line}"
        );
        assert!(!line.contains("tsc_early_khz"), "{line}");
    }

    #[test]
    fn disks_keep_order_and_read_only_and_commas_are_escaped() {
        let a = args(&vm(), &host(Accel::Tcg));
        let drives: Vec<_> = a
            .windows(2)
            .filter(|w| w[0] == "-drive")
            .map(|w| w[1].to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            drives[0],
            "id=disk0,format=raw,if=none,readonly=on,file=/img/root,,1.ext4"
        );
        assert_eq!(drives[1], "id=disk1,format=raw,if=none,file=/vm/layer.ext4");
        let line = joined(a);
        assert!(line.contains("-qmp unix:/vm/qmp.sock,server=on,wait=off"));
        assert!(line.contains("-qmp unix:/vm/qmp-snapshot.sock,server=on,wait=off"));
    }

    #[test]
    fn a_qcow2_layer_is_given_as_qcow2() {
        let mut vm = vm();
        vm.disks[1].path = "/vm/layer.qcow2".into();
        let line = joined(args(&vm, &host(Accel::Tcg)));
        assert!(
            line.contains("id=disk1,format=qcow2,if=none,file=/vm/layer.qcow2"),
            "{line}"
        );
    }

    #[test]
    fn an_encrypted_disk_gets_its_key_from_a_descriptor_never_the_line() {
        let mut vm = vm();
        vm.disks[1].path = "/vm/disk.qcow2".into();
        vm.disks[1].key = hearth_types::DiskKey::from_bytes(&[0xab; 32]);
        let line = joined(args_with_keys(&vm, &host(Accel::Tcg), &[(1, 7)]));
        assert!(
            line.contains("-object secret,id=disk1-key,format=raw,file=/dev/fd/7 -drive id=disk0"),
            "{line}"
        );
        assert!(
            line.contains(
                "id=disk1,format=qcow2,encrypt.format=luks,encrypt.key-secret=disk1-key,if=none,file=/vm/disk.qcow2"
            ),
            "{line}"
        );
        assert!(
            !line.contains("abab"),
            "the key is on the command line: {line}"
        );
    }

    #[test]
    fn the_sandbox_comes_first_when_on() {
        assert!(!joined(args(&vm(), &host(Accel::Tcg))).contains("-sandbox"));
        let sandboxed = QemuHost {
            sandbox: true,
            ..host(Accel::Tcg)
        };
        let line = joined(args(&vm(), &sandboxed));
        assert!(
            line.starts_with(
                "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny -M "
            ),
            "{line}"
        );
    }

    #[test]
    fn a_memory_file_is_the_machine_ram_mapped_as_its_role_says() {
        assert!(!joined(args(&vm(), &host(Accel::Tcg))).contains("memory-backend"));
        let mut vm = vm();
        vm.memory = Some(hearth_types::MemoryFile {
            path: "/snap/t,1/memory".into(),
            mapping: MemoryMapping::Template,
        });
        let line = joined(args(&vm, &host(Accel::Tcg)));
        assert!(
            line.contains("-M microvm,x-option-roms=off,isa-serial=on,rtc=off,memory-backend=ram "),
            "{line}"
        );
        assert!(
            line.contains(
                "-m 256 -smp 2 -object memory-backend-file,id=ram,size=256M,share=on,mem-path=/snap/t,,1/memory "
            ),
            "{line}"
        );
        vm.memory.as_mut().unwrap().mapping = MemoryMapping::CopyOnWrite;
        let line = joined(args(&vm, &host(Accel::Tcg)));
        assert!(
            line.contains("size=256M,share=off,readonly=on,rom=off,mem-path=/snap/t,,1/memory "),
            "{line}"
        );
    }

    #[test]
    fn no_channels_means_no_virtio_serial() {
        assert!(!joined(args(&vm(), &host(Accel::Tcg))).contains("virtio-serial"));
    }

    #[test]
    fn each_channel_is_a_socket_backed_port_on_one_controller() {
        let mut vm = vm();
        vm.channels = vec![
            Channel {
                name: "hearth.agent".into(),
                socket: "/vm/agent,1.sock".into(),
            },
            Channel {
                name: "other".into(),
                socket: "/vm/other.sock".into(),
            },
        ];
        let line = joined(args(&vm, &host(Accel::Tcg)));
        assert_eq!(line.matches("virtio-serial-device").count(), 1, "{line}");
        assert!(
            line.contains(
                "-device virtio-serial-device \
                 -chardev socket,path=/vm/agent,,1.sock,server=on,wait=off,id=ch0 \
                 -device virtserialport,chardev=ch0,name=hearth.agent \
                 -chardev socket,path=/vm/other.sock,server=on,wait=off,id=ch1 \
                 -device virtserialport,chardev=ch1,name=other"
            ),
            "{line}"
        );
    }

    #[test]
    fn tsc_frequency_is_read_on_this_host() {
        if let Some(khz) = host_tsc_khz() {
            assert!(khz > 100_000, "implausible TSC frequency {khz} kHz");
        }
    }
}
