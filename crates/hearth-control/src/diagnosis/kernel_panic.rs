//! `kernel_panic`: `Kernel panic - not syncing: ...`, with the panic line
//! and the lines before it. Two panics get their own words: `VFS: Unable
//! to mount root fs` (the kernel found no root file system) and `Attempted
//! to kill init` (PID 1 ended: its last output says why).

use hearth_types::api::Finding;

use super::log::{journal, message, Log};
use super::{finding, Input};

const PANIC: &str = "Kernel panic - not syncing";
/// Lines quoted before the panic.
const BEFORE: usize = 5;

pub(super) fn check(input: &Input) -> Vec<Finding> {
    let log = &input.console;
    let Some(at) = log.position(|l| l.contains(PANIC)) else {
        return Vec::new();
    };
    let line = &log.lines()[at];
    let why = line
        .split_once(PANIC)
        .map_or("", |(_, r)| r.trim_start_matches(':').trim());
    let mut evidence = log.before(at, BEFORE);
    evidence.push(line.clone());
    let (cause, fix) = if why.starts_with("VFS: Unable to mount root fs") {
        unable_to_mount_root(why)
    } else if why.starts_with("Attempted to kill init") {
        let output = init_output(log, at);
        let (cause, fix) = init_died(why);
        evidence = output
            .into_iter()
            .chain(std::iter::once(line.clone()))
            .collect();
        (cause, fix)
    } else {
        other(why)
    };
    vec![finding("kernel_panic", cause, evidence, fix)]
}

fn unable_to_mount_root(why: &str) -> (String, String) {
    (
        format!(
            "the kernel found no root file system it could mount ({why}): it ran without \
             hearth's initramfs, or its root= names a device or file system it cannot read"
        ),
        "boot through hearth, whose initramfs mounts the image; with an initramfs of your \
         own, check root= and that the disk driver (virtio_blk) and the file system are \
         built in or loaded"
            .to_owned(),
    )
}

/// The last lines before the panic that are not the kernel's: what init
/// and its children printed last.
fn init_output(log: &Log, panic_at: usize) -> Vec<String> {
    let lines = &log.lines()[..panic_at];
    let mut out: Vec<String> = lines
        .iter()
        .rev()
        .filter(|l| !l.trim().is_empty() && (message(l) == l.trim_start() || journal(l).is_some()))
        .take(BEFORE)
        .cloned()
        .collect();
    out.reverse();
    out
}

fn init_died(why: &str) -> (String, String) {
    let how = why
        .split_once("exitcode=")
        .and_then(|(_, code)| u32::from_str_radix(code.trim().trim_start_matches("0x"), 16).ok())
        .map(describe_wait_status)
        .unwrap_or_else(|| "ended".to_owned());
    (
        format!(
            "the guest's init (PID 1) {how}, and the kernel cannot run without it; its last \
             output is shown"
        ),
        "PID 1 must never exit: fix what its last output complains about; an image's init \
         must keep running, or power the guest off, instead of returning (hearth's images \
         print `hearth: power off` and reboot)"
            .to_owned(),
    )
}

/// A wait status (`exitcode=0x00000100`) in words.
fn describe_wait_status(status: u32) -> String {
    let signal = status & 0x7f;
    if signal == 0 {
        return format!("exited with status {}", (status >> 8) & 0xff);
    }
    let name = match signal {
        4 => " (SIGILL: an instruction the CPU lacks)",
        6 => " (SIGABRT)",
        7 => " (SIGBUS)",
        9 => " (SIGKILL: the OOM killer, or a kill)",
        11 => " (SIGSEGV: a crash)",
        15 => " (SIGTERM)",
        _ => "",
    };
    format!("was killed by signal {signal}{name}")
}

fn other(why: &str) -> (String, String) {
    let (cause, fix) = if why.contains("sysrq triggered crash") {
        (
            "a crash was requested on purpose: something wrote `c` to /proc/sysrq-trigger",
            "nothing is wrong with the kernel: stop whatever triggers the crash",
        )
    } else if why.contains("No working init found") || why.contains("Requested init") {
        (
            "the kernel found no init program it could run",
            "the image needs an executable init for x86-64 (/sbin/init): `error -8` means an \
             exec format error (wrong architecture), `error -2` a missing file or interpreter",
        )
    } else if why.contains("Out of memory") || why.contains("deadlocked on memory") {
        (
            "the guest ran out of memory with nothing left to kill",
            "give the VM more memory (--memory, or memory_mib in the API)",
        )
    } else {
        (
            "the kernel hit a fatal error",
            "the lines before the panic (and the call trace after it) name the failing code or \
             driver; try the kernel `hearth kernel fetch` stores, and report it with the console \
             log if it persists",
        )
    };
    (format!("{cause}: kernel panic ({why})"), fix.to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::diagnose_console as found;
    use super::describe_wait_status;

    /// From a real run: `-- sh -c 'echo c > /proc/sysrq-trigger'`.
    const SYSRQ: &str = "[    8.294336] EXT4-fs (vdb): mounted filesystem with ordered data mode. Quota mode: none.\r
[    8.758525] Not activating Mandatory Access Control as /sbin/tomoyo-init does not exist.\r
hearth: ready\r
[    9.826360] sysrq: Trigger a crash\r
[    9.826826] Kernel panic - not syncing: sysrq triggered crash\r
[    9.827185] CPU: 0 PID: 131 Comm: sh Not tainted 6.1.0-56-cloud-amd64 #1  Debian 6.1.192-2\r
[    9.828468] Call Trace:\r
[    9.829353] Rebooting in 1 seconds..\r
";

    #[test]
    fn a_panic_quotes_its_line_and_the_five_before() {
        let f = found(SYSRQ);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].rule, "kernel_panic");
        assert!(f[0].cause.contains("/proc/sysrq-trigger"), "{:?}", f[0]);
        assert_eq!(f[0].evidence.len(), 5);
        assert_eq!(
            f[0].evidence.last().unwrap(),
            "[    9.826826] Kernel panic - not syncing: sysrq triggered crash"
        );
        assert!(f[0].evidence[3].contains("sysrq: Trigger a crash"));
    }

    #[test]
    fn no_root_fs_is_explained() {
        let f = found("[    2.9] VFS: Cannot open root device \"vda\" or unknown-block(0,0): error -6\n\
             [    2.9] Please append a correct \"root=\" boot option; here are the available partitions:\n\
             [    2.9] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n");
        assert!(f[0].cause.contains("no root file system"), "{:?}", f[0]);
        assert!(f[0].evidence[0].contains("Cannot open root device"));
        assert!(f[0].fix.contains("initramfs"));
    }

    #[test]
    fn a_dead_init_shows_its_last_output_and_how_it_ended() {
        let f = found("[    6.4] Not activating Mandatory Access Control as /sbin/tomoyo-init does not exist.\n\
             /sbin/init: line 12: /usr/lib/hearth/run-command: not found\n\
             [    6.5] traps: init[1] general protection fault ip:4011a2 sp:7ffd2c9e1f40 error:0 in busybox[401000+1d5000]\n\
             [    6.5] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b\n\
             [    6.5] CPU: 0 PID: 1 Comm: init Not tainted 6.1.0-56-cloud-amd64 #1  Debian 6.1.192-2\n");
        let p = &f[0];
        assert_eq!(p.rule, "kernel_panic");
        assert!(
            p.cause
                .contains("init (PID 1) was killed by signal 11 (SIGSEGV"),
            "{p:?}"
        );
        assert_eq!(
            p.evidence[0],
            "/sbin/init: line 12: /usr/lib/hearth/run-command: not found"
        );
        assert!(p.evidence[1].contains("Attempted to kill init"));
        assert!(p.fix.contains("PID 1 must never exit"));
    }

    #[test]
    fn wait_statuses_are_decoded() {
        assert_eq!(describe_wait_status(0x100), "exited with status 1");
        assert_eq!(describe_wait_status(0x0), "exited with status 0");
        assert!(describe_wait_status(0x4).contains("SIGILL"));
    }
}
