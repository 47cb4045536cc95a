//! The agent as PID 1 of the minimal image: it mounts what the initramfs
//! did not, puts its stdio on the console, sets the hostname, turns
//! Ctrl-Alt-Del into SIGINT, reaps orphans (the reaper does), and powers the
//! guest off on SIGINT or SIGTERM after stopping the services. With
//! `hearth.argv=` on the kernel command line it runs that command once the
//! guest is ready, prints its exit status and powers off. PID 1 must never
//! exit (that is a kernel panic), so nothing here returns an error.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hearth_agent_proto::decode_data;
use hearth_types::console::{EXIT_STATUS, POWER_OFF};
use signal_hook::iterator::Signals;

use crate::guest::Guest;
use crate::not_started;
use crate::reaper::reaper;

/// How long services get between SIGTERM and SIGKILL at power-off.
const STOP_GRACE: Duration = Duration::from_secs(2);

pub fn is_pid1() -> bool {
    // SAFETY: getpid(2) has no preconditions.
    unsafe { libc::getpid() == 1 }
}

/// Everything PID 1 does before any thread starts.
pub fn prepare() {
    std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    std::env::set_var("HOME", "/root");
    mount_early();
    console_stdio();
    if let Ok(name) = std::fs::read_to_string("/etc/hostname") {
        let name = name.trim();
        // SAFETY: pointer and length describe `name`'s bytes.
        unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    }
    if let Err(e) = crate::loopback::bring_up() {
        eprintln!(
            "hearth-agent: bringing up lo failed, 127.0.0.1 is unreachable in the guest: {e}"
        );
    }
    let _ = std::env::set_current_dir("/root").or_else(|_| std::env::set_current_dir("/"));
    // SAFETY: reboot(2) with RB_DISABLE_CAD only changes what Ctrl-Alt-Del
    // does: the kernel sends PID 1 SIGINT instead of rebooting.
    unsafe { libc::reboot(libc::RB_DISABLE_CAD) };
    catch_stop_signals();
}

/// The threads of PID 1: one waiting for SIGINT/SIGTERM, one running
/// `hearth.argv` once the guest is ready.
pub fn start(guest: &Arc<Guest>) {
    // Orphans (of the initramfs, say) are reaped even before the agent
    // spawns anything itself.
    reaper();
    let g = guest.clone();
    std::thread::spawn(move || {
        wait_for_stop_signal();
        power_off(&g);
    });
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if let Some(encoded) = argv_word(&cmdline) {
        let g = guest.clone();
        std::thread::spawn(move || run_command(&g, &encoded));
    }
}

/// Mounts /proc, /sys, /dev, /dev/pts, /run and /tmp where nothing is yet.
fn mount_early() {
    mount_if_missing("proc", "/proc", "proc", "");
    mount_if_missing("sysfs", "/sys", "sysfs", "");
    mount_if_missing("devtmpfs", "/dev", "devtmpfs", "");
    let _ = std::fs::create_dir_all("/dev/pts");
    mount_if_missing(
        "devpts",
        "/dev/pts",
        "devpts",
        "gid=5,mode=620,ptmxmode=666",
    );
    mount_if_missing("tmpfs", "/run", "tmpfs", "mode=0755");
    mount_if_missing("tmpfs", "/tmp", "tmpfs", "mode=1777");
}

fn mount_if_missing(source: &str, target: &str, fstype: &str, data: &str) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if is_mounted(&mounts, target) {
        return;
    }
    let c = |s: &str| CString::new(s).expect("no NUL in a constant");
    let (src, tgt, fs, opts) = (c(source), c(target), c(fstype), c(data));
    // SAFETY: all four are NUL-terminated strings alive for the call.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fs.as_ptr(),
            libc::MS_NOSUID,
            opts.as_ptr().cast(),
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        eprintln!("hearth-agent: mounting {fstype} on {target} failed: {e}");
    }
}

fn is_mounted(mounts: &str, target: &str) -> bool {
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(target))
}

/// Stdin, stdout and stderr on /dev/console.
fn console_stdio() {
    let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors; `console` stays open
        // for the call.
        unsafe { libc::dup2(console.as_raw_fd(), fd) };
    }
}

/// SIGINT (Ctrl-Alt-Del) and SIGTERM, caught since [`prepare`].
static STOP_SIGNALS: Mutex<Option<Signals>> = Mutex::new(None);

/// Catches SIGINT and SIGTERM with handlers that queue them for
/// [`wait_for_stop_signal`]. Not by blocking them for sigwait: a blocked
/// mask is inherited by every thread and every child, and the standard
/// library does not clear it at spawn, so no service or exec could be
/// interrupted or stopped. Handlers are reset to the default at exec.
fn catch_stop_signals() {
    match Signals::new([libc::SIGINT, libc::SIGTERM]) {
        Ok(signals) => *lock_stop_signals() = Some(signals),
        Err(e) => eprintln!(
            "hearth-agent: cannot catch SIGINT/SIGTERM ({e}): Ctrl-Alt-Del and kill -TERM 1 will not power off"
        ),
    }
}

fn lock_stop_signals() -> std::sync::MutexGuard<'static, Option<Signals>> {
    STOP_SIGNALS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits for the first SIGINT or SIGTERM caught; forever when none can be.
fn wait_for_stop_signal() {
    let Some(mut signals) = lock_stop_signals().take() else {
        loop {
            std::thread::park();
        }
    };
    let sig = signals.forever().next().unwrap_or(0);
    eprintln!("hearth-agent: signal {sig}: powering off");
}

/// The value of `hearth.argv=` on the kernel command line.
pub fn argv_word(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("hearth.argv="))
        .next_back()
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Decodes `hearth.argv=` (each argument's standard base64, comma
/// separated); the error names the position of the bad word, not its text.
pub fn decode_argv(encoded: &str) -> Result<Vec<String>, String> {
    encoded
        .split(',')
        .enumerate()
        .map(|(i, word)| {
            decode_data(word)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    format!(
                        "hearth.argv word {} is not valid base64 of UTF-8 text",
                        i + 1
                    )
                })
        })
        .collect()
}

/// Once ready: runs the command on the console, prints its exit status,
/// powers off.
fn run_command(guest: &Arc<Guest>, encoded: &str) {
    let argv = match decode_argv(encoded) {
        Ok(argv) => argv,
        Err(e) => {
            println!("hearth: {e}");
            power_off(guest);
        }
    };
    guest.wait_ready();
    let status = run_on_console(&argv, &guest.env());
    // The marker must start a line even if the output did not end one.
    println!();
    println!("{EXIT_STATUS}{status}");
    power_off(guest);
}

/// The command's exit code as a shell reports it (128 + a signal).
fn run_on_console(argv: &[String], env: &[(String, String)]) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        return 0;
    };
    let mut cmd = Command::new(program);
    cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
    let child = match reaper().spawn(&mut cmd) {
        Ok(child) => child,
        Err(e) => {
            println!("hearth: {}", not_started::message(program, env, &e));
            return if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    let Some(status) = reaper().wait(child.id(), None) else {
        return 1;
    };
    if let Some(sig) = status.signal() {
        // What a shell says when its child dies of a signal (diagnosis
        // reads "Illegal instruction" as evidence).
        println!();
        println!("{}", signal_name(sig));
        return 128 + sig;
    }
    status.code().unwrap_or(1)
}

/// strsignal(3): "Illegal instruction", "Killed", ...
fn signal_name(sig: i32) -> String {
    // SAFETY: strsignal returns a pointer to a NUL-terminated string (or
    // null), valid until the next call; it is copied at once.
    let p = unsafe { libc::strsignal(sig) };
    if p.is_null() {
        return format!("signal {sig}");
    }
    // SAFETY: non-null and NUL-terminated, per strsignal.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}

/// Stops the services, syncs, says so, and resets the machine: the
/// hypervisors exit on a guest reset (QEMU `-no-reboot` with `reboot=t`,
/// Firecracker with `reboot=k`), as they did with busybox's `reboot -f`.
pub fn power_off(guest: &Guest) -> ! {
    guest.supervisor.stop_all(STOP_GRACE);
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    println!("{POWER_OFF}");
    let _ = std::io::stdout().flush();
    loop {
        // SAFETY: reboot(2) as PID 1; it does not return on success.
        unsafe { libc::reboot(libc::RB_AUTOBOOT) };
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use hearth_agent_proto::encode_data;

    use super::*;

    #[test]
    #[allow(clippy::zombie_processes)] // the reaper waits, not `Child::wait`
    fn stop_signals_are_caught_and_children_start_with_nothing_blocked() {
        catch_stop_signals();
        let mut cmd = Command::new("grep");
        cmd.args(["SigBlk", "/proc/self/status"])
            .stdout(std::process::Stdio::piped());
        let mut child = reaper().spawn(&mut cmd).unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        reaper().wait(child.id(), None).unwrap();
        assert_eq!(out.trim(), "SigBlk:\t0000000000000000");
        // SAFETY: raise(3) on this thread; the handler just installed
        // takes it (the default would end the test process).
        unsafe { libc::raise(libc::SIGTERM) };
        wait_for_stop_signal();
    }

    #[test]
    fn the_command_comes_from_the_kernel_command_line() {
        let words = ["sh", "-c", "printf '[%s]' \"$1\"", "two words, one arg", ""];
        let encoded: Vec<String> = words.iter().map(|w| encode_data(w.as_bytes())).collect();
        let cmdline = format!("console=ttyS0 hearth.argv={} quiet\n", encoded.join(","));
        let word = argv_word(&cmdline).unwrap();
        assert_eq!(decode_argv(&word).unwrap(), words);
        assert_eq!(argv_word("console=ttyS0 quiet"), None);
        let err = decode_argv("c2g=,!!!").unwrap_err();
        assert!(err.contains("word 2"), "{err}");
        assert!(!err.contains("!!!"), "the word itself is not shown");
    }

    #[test]
    fn a_signal_is_named_as_a_shell_names_it() {
        assert_eq!(signal_name(libc::SIGILL), "Illegal instruction");
        assert_eq!(signal_name(libc::SIGKILL), "Killed");
    }

    #[test]
    fn mounts_are_found_by_their_target() {
        let mounts = "proc /proc proc rw 0 0\ndevpts /dev/pts devpts rw 0 0\n";
        assert!(is_mounted(mounts, "/proc"));
        assert!(is_mounted(mounts, "/dev/pts"));
        assert!(!is_mounted(mounts, "/dev"));
    }
}
