//! The lines hearth's guest-side scripts print on the serial console, and
//! their classification on the host. Both sides use the constants here, so a
//! marker can never be renamed on one side only.
//!
//! Every marker starts with `hearth:` at the beginning of a line. Kernel
//! messages that matter (panics) are recognised here too, so that one pure
//! function turns a console line into what it means.

/// Printed by an image's init once the guest is up and about to run its work.
pub const READY: &str = "hearth: ready";
/// Printed after the requested command ends: `hearth: exit status N`.
pub const EXIT_STATUS: &str = "hearth: exit status ";
/// Printed by the init just before it powers the guest off on purpose.
pub const POWER_OFF: &str = "hearth: power off";
/// Printed by the initramfs when a kernel module cannot be loaded:
/// `hearth: missing module NAME`.
pub const MISSING_MODULE: &str = "hearth: missing module ";
/// Printed by the initramfs when the root or writable disk cannot be used:
/// `hearth: root not mountable: WHY`.
pub const ROOT_NOT_MOUNTABLE: &str = "hearth: root not mountable: ";

/// What one console line tells the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsoleEvent {
    Ready,
    ExitStatus(i32),
    PowerOff,
    MissingModule(String),
    RootNotMountable(String),
    KernelPanic(String),
}

/// Classifies one console line (without its line ending). Lines that mean
/// nothing to hearth give `None`.
pub fn classify(line: &str) -> Option<ConsoleEvent> {
    let line = line.trim_end_matches('\r');
    if let Some(i) = line.find("Kernel panic - not syncing") {
        return Some(ConsoleEvent::KernelPanic(line[i..].to_owned()));
    }
    let marker = strip_kernel_timestamp(line);
    if marker == READY {
        return Some(ConsoleEvent::Ready);
    }
    if marker == POWER_OFF {
        return Some(ConsoleEvent::PowerOff);
    }
    if let Some(code) = marker.strip_prefix(EXIT_STATUS) {
        return code.trim().parse().ok().map(ConsoleEvent::ExitStatus);
    }
    if let Some(name) = marker.strip_prefix(MISSING_MODULE) {
        return Some(ConsoleEvent::MissingModule(name.trim().to_owned()));
    }
    if let Some(why) = marker.strip_prefix(ROOT_NOT_MOUNTABLE) {
        return Some(ConsoleEvent::RootNotMountable(why.trim().to_owned()));
    }
    None
}

/// Markers written through /dev/kmsg carry `[ 1.234567] ` in front.
fn strip_kernel_timestamp(line: &str) -> &str {
    let trimmed = line.trim_start();
    if let Some(rest) = trimmed.strip_prefix('[') {
        if let Some((_, after)) = rest.split_once(']') {
            return after.trim_start();
        }
    }
    trimmed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_recognised() {
        assert_eq!(classify("hearth: ready\r"), Some(ConsoleEvent::Ready));
        assert_eq!(
            classify("hearth: exit status 3"),
            Some(ConsoleEvent::ExitStatus(3))
        );
        assert_eq!(classify("hearth: power off"), Some(ConsoleEvent::PowerOff));
        assert_eq!(
            classify("[    2.5] hearth: missing module virtio_blk"),
            Some(ConsoleEvent::MissingModule("virtio_blk".into()))
        );
        assert_eq!(
            classify("hearth: root not mountable: no disk appeared"),
            Some(ConsoleEvent::RootNotMountable("no disk appeared".into()))
        );
    }

    #[test]
    fn kernel_panics_are_recognised_anywhere_in_the_line() {
        let line = "[    1.1] Kernel panic - not syncing: VFS: Unable to mount root fs";
        match classify(line) {
            Some(ConsoleEvent::KernelPanic(msg)) => assert!(msg.contains("Unable to mount")),
            other => panic!("got {other:?}"),
        }
    }

    #[test]
    fn ordinary_lines_and_lookalikes_mean_nothing() {
        for line in [
            "Linux version 6.1",
            "echo hearth: ready",
            "hearth: exit status x",
            "",
        ] {
            assert_eq!(classify(line), None, "{line:?}");
        }
    }
}
