//! How far a guest got, read from its console: nothing printed, the boot
//! loader, the kernel, hearth's initramfs, the image's init, ready. It
//! tells where a VM that stopped or timed out stopped.

use hearth_types::console::{classify, ConsoleEvent};

use super::log::{message, Log};

/// The furthest boot stage a console shows, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Stage {
    /// Not one line.
    Nothing,
    /// Output before the kernel's first line (the bzImage's setup code).
    Loader,
    /// `Linux version ...`: the kernel runs.
    Kernel,
    /// `Run /init as init process`: hearth's initramfs runs.
    Initramfs,
    /// The image's init was started (systemd's first lines, or the
    /// kernel's note on executing /sbin/init).
    ImageInit,
    /// `hearth: ready`.
    Ready,
}

impl Stage {
    pub fn of(console: &Log) -> Stage {
        console
            .lines()
            .iter()
            .map(|l| stage_of_line(l))
            .max()
            .unwrap_or(Stage::Nothing)
    }

    /// Where the guest stopped, for a person.
    pub fn describe(self) -> &'static str {
        match self {
            Stage::Nothing => "the guest printed nothing: the kernel never started",
            Stage::Loader => {
                "the kernel's loader ran but the kernel itself printed nothing: it never started"
            }
            Stage::Kernel => "the kernel was booting and had not yet started hearth's initramfs",
            Stage::Initramfs => {
                "hearth's initramfs was running (loading modules, mounting the image) and had not yet started the image's init"
            }
            Stage::ImageInit => {
                "the image's init was running and had not yet reported `hearth: ready`"
            }
            Stage::Ready => "the guest had reported `hearth: ready`",
        }
    }
}

fn stage_of_line(line: &str) -> Stage {
    let msg = message(line);
    if classify(line) == Some(ConsoleEvent::Ready) {
        Stage::Ready
    } else if msg.starts_with("systemd[1]:")
        || msg.starts_with("Welcome to ")
        || msg.starts_with("Not activating Mandatory Access Control")
    {
        Stage::ImageInit
    } else if msg.starts_with("Run /init as init process") {
        Stage::Initramfs
    } else if msg.starts_with("Linux version ") {
        Stage::Kernel
    } else if !msg.is_empty() {
        Stage::Loader
    } else {
        Stage::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(text: &str) -> Stage {
        Stage::of(&Log::new(text))
    }

    #[test]
    fn each_boot_stage_is_recognised_by_its_line() {
        assert_eq!(stage(""), Stage::Nothing);
        assert_eq!(
            stage("Probing EDD (edd=off to disable)... ok\n"),
            Stage::Loader
        );
        let kernel = "[    0.000000] Linux version 6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org)\n[    3.856913] Loading compiled-in X.509 certificates\n";
        assert_eq!(stage(kernel), Stage::Kernel);
        let initramfs = format!("{kernel}[    5.411796] Run /init as init process\n");
        assert_eq!(stage(&initramfs), Stage::Initramfs);
        let minimal = format!("{initramfs}[    6.439261] Not activating Mandatory Access Control as /sbin/tomoyo-init does not exist.\n");
        assert_eq!(stage(&minimal), Stage::ImageInit);
        let debian =
            format!("{initramfs}[    5.137837] systemd[1]: Detected architecture x86-64.\n");
        assert_eq!(stage(&debian), Stage::ImageInit);
        assert_eq!(stage(&format!("{minimal}hearth: ready\r\n")), Stage::Ready);
    }
}
