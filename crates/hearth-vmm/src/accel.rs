//! Which acceleration can really run a guest here. `/dev/kvm` existing is not
//! enough: kvm-pvm (a software hypervisor exposing /dev/kvm) fails stock
//! Linux guests with emulation errors, so it is detected and TCG chosen.

use std::path::{Path, PathBuf};

use hearth_types::Accel;

/// The facts acceleration is decided from, read from a root directory so
/// tests can lay out a fake /dev and /sys.
#[derive(Debug, Clone)]
pub struct HostProbe {
    root: PathBuf,
}

/// The decision and the reason for it, in plain words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

impl Default for HostProbe {
    fn default() -> Self {
        HostProbe {
            root: PathBuf::from("/"),
        }
    }
}

impl HostProbe {
    pub fn at(root: impl Into<PathBuf>) -> Self {
        HostProbe { root: root.into() }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    fn exists(&self, p: &str) -> bool {
        self.path(p).exists()
    }

    /// Decides between KVM and TCG.
    pub fn detect(&self) -> AccelChoice {
        let tcg = |reason: &str| AccelChoice {
            accel: Accel::Tcg,
            reason: reason.to_owned(),
        };
        if !self.exists("/dev/kvm") {
            return tcg(
                "/dev/kvm does not exist (no KVM module loaded, or nested virtualization is off)",
            );
        }
        if !can_open_rw(&self.path("/dev/kvm")) {
            return tcg("/dev/kvm exists but cannot be opened read-write by this user (add it to the kvm group)");
        }
        if self.exists("/sys/module/kvm_pvm") {
            return tcg("/dev/kvm is kvm-pvm, a software hypervisor on which stock Linux guests fail with emulation errors");
        }
        if !(self.exists("/sys/module/kvm_intel") || self.exists("/sys/module/kvm_amd")) {
            return tcg("/dev/kvm is present but neither kvm_intel nor kvm_amd is loaded, so no hardware virtualization backs it");
        }
        AccelChoice {
            accel: Accel::Kvm,
            reason: "/dev/kvm is usable and backed by hardware virtualization".to_owned(),
        }
    }
}

fn can_open_rw(path: &Path) -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_host(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"").unwrap();
        }
        dir
    }

    #[test]
    fn kvm_pvm_falls_back_to_tcg() {
        let host = fake_host(&["dev/kvm", "sys/module/kvm_pvm/x", "sys/module/kvm_intel/x"]);
        let choice = HostProbe::at(host.path()).detect();
        assert_eq!(choice.accel, Accel::Tcg);
        assert!(choice.reason.contains("kvm-pvm"), "{}", choice.reason);
    }

    #[test]
    fn hardware_kvm_is_used() {
        let host = fake_host(&["dev/kvm", "sys/module/kvm_amd/x"]);
        assert_eq!(HostProbe::at(host.path()).detect().accel, Accel::Kvm);
    }

    #[test]
    fn no_kvm_device_means_tcg() {
        let host = fake_host(&[]);
        let choice = HostProbe::at(host.path()).detect();
        assert_eq!(choice.accel, Accel::Tcg);
        assert!(choice.reason.contains("does not exist"));
    }

    #[test]
    fn this_host_is_detected_without_error() {
        let choice = HostProbe::default().detect();
        if Path::new("/sys/module/kvm_pvm").exists() {
            assert_eq!(choice.accel, Accel::Tcg, "{}", choice.reason);
        }
    }
}
