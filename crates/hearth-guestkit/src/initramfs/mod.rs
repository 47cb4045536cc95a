//! The initramfs hearth boots every guest with, built in Rust without root
//! or mounts: static busybox, the kernel modules the guest needs (in load
//! order), and an init that mounts the shared image read-only under a
//! per-VM writable layer with overlayfs, then switches to the image's init.
//!
//! It is built once per kernel and cached; a change of the init script, the
//! module list or busybox makes a new one.

pub mod cpio;
pub mod modules;

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use self::cpio::CpioWriter;
use self::modules::{ModuleError, ModuleIndex, GUEST_MODULES};
use crate::kernel::KernelModules;
use crate::{BuildLock, DataDir};

/// The early init, a busybox shell script.
pub const INIT_SCRIPT: &str = include_str!("init.sh");

/// The static busybox from Debian's busybox-static package.
pub const BUSYBOX: &str = "/bin/busybox";

/// Applets the init script calls.
const APPLETS: &[&str] = &[
    "sh",
    "mount",
    "mkdir",
    "insmod",
    "findfs",
    "sleep",
    "cat",
    "echo",
    "sync",
    "reboot",
    "switch_root",
];

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error(transparent)]
    Module(#[from] ModuleError),
    #[error("{path} is missing or not a static busybox: install it with `apt-get install busybox-static`")]
    Busybox { path: PathBuf },
    #[error("could not write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not take the build lock")]
    Lock(#[from] crate::lock::LockError),
}

/// Returns the cached initramfs for this kernel, building it if its inputs
/// changed. `modules_root` holds `lib/modules/<version>/`.
pub fn ensure_initramfs(
    data: &DataDir,
    version: &str,
    modules_root: &Path,
) -> Result<PathBuf, InitramfsError> {
    let dir = modules_root.join("lib/modules").join(version);
    ensure_initramfs_with(data, version, &KernelModules::Dir(dir))
}

/// [`ensure_initramfs`] for modules from anywhere (`lib/modules/<version>/`
/// of the kernel), or none when the kernel builds its drivers in.
pub fn ensure_initramfs_with(
    data: &DataDir,
    version: &str,
    modules: &KernelModules,
) -> Result<PathBuf, InitramfsError> {
    let _lock = BuildLock::acquire(&data.build_lock(&format!("initramfs-{version}")))?;
    let busybox = read_static_busybox(Path::new(BUSYBOX))?;
    let chosen = match modules {
        KernelModules::Dir(dir) => {
            let index = ModuleIndex::load_dir(dir, version)?;
            let order = index.load_order(GUEST_MODULES)?;
            order
                .iter()
                .map(|m| Ok((m.name.clone(), index.read_module(m)?)))
                .collect::<Result<Vec<_>, ModuleError>>()?
        }
        KernelModules::BuiltIn => Vec::new(),
    };
    let key = input_key(version, &busybox, &chosen);
    let path = data
        .kernel(version)
        .join(format!("initramfs-{key}.cpio.gz"));
    if path.exists() {
        return Ok(path);
    }
    let archive = build_archive(&chosen, &busybox);
    write_atomically(&path, &gzip(&archive))?;
    Ok(path)
}

fn read_static_busybox(path: &Path) -> Result<Vec<u8>, InitramfsError> {
    let bytes = std::fs::read(path).map_err(|_| InitramfsError::Busybox {
        path: path.to_owned(),
    })?;
    // A dynamically linked ELF has a PT_INTERP naming its loader.
    if !bytes.starts_with(b"\x7fELF") || contains(&bytes, b"/lib64/ld-linux") {
        return Err(InitramfsError::Busybox {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A short hash of everything that goes into the archive: a module of
/// the same name from another build makes another initramfs.
fn input_key(version: &str, busybox: &[u8], modules: &[(String, Vec<u8>)]) -> String {
    let mut h = Sha256::new();
    h.update(version);
    h.update(INIT_SCRIPT);
    h.update(Sha256::digest(busybox));
    for (name, bytes) in modules {
        h.update(name);
        h.update(Sha256::digest(bytes));
    }
    hex::encode(&h.finalize()[..8])
}

/// The archive: busybox and its applets, the init, and `modules` (name,
/// decompressed bytes) in load order.
fn build_archive(modules: &[(String, Vec<u8>)], busybox: &[u8]) -> Vec<u8> {
    let mut w = CpioWriter::new();
    for dir in [
        "bin",
        "dev",
        "etc",
        "etc/hearth",
        "lib",
        "lib/modules",
        "proc",
        "sys",
        "lower",
        "layer",
        "newroot",
    ] {
        w.dir(dir, 0o755);
    }
    w.char_device("dev/console", 0o600, 5, 1);
    w.file("bin/busybox", 0o755, busybox);
    for applet in APPLETS {
        w.symlink(&format!("bin/{applet}"), "busybox");
    }
    w.file("init", 0o755, INIT_SCRIPT.as_bytes());
    let mut list = String::new();
    for (name, bytes) in modules {
        let file = format!("{name}.ko");
        w.file(&format!("lib/modules/{file}"), 0o644, bytes);
        list.push_str(&format!("{name} {file}\n"));
    }
    w.file("etc/hearth/modules", 0o644, list.as_bytes());
    w.finish()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), InitramfsError> {
    let err = |source| InitramfsError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_prints_the_markers_the_host_recognises() {
        use hearth_types::console::{MISSING_MODULE, POWER_OFF, ROOT_NOT_MOUNTABLE};
        for marker in [MISSING_MODULE, POWER_OFF, ROOT_NOT_MOUNTABLE] {
            assert!(
                INIT_SCRIPT.contains(marker.trim_end()),
                "init.sh lacks {marker:?}"
            );
        }
    }

    /// Every command the init script runs must be a linked applet or a
    /// shell builtin: the initramfs has nothing else.
    #[test]
    fn init_only_calls_applets_it_links() {
        const SHELL: &[&str] = &[
            "if", "then", "else", "fi", "for", "in", "do", "done", "while", "case", "esac", "exec",
            "fail", "[", "]", "read", "return", "local", "set", "break", "continue", "export", "{",
            "}", ";;",
        ];
        let mut unknown = Vec::new();
        for line in INIT_SCRIPT.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.ends_with("() {") {
                continue;
            }
            let parts = line
                .split(['|', ';'])
                .flat_map(|p| p.split("&&"))
                .flat_map(|p| p.split("$("));
            for part in parts {
                let word = part
                    .split_whitespace()
                    .find(|w| !w.contains('=') || w.starts_with('-'));
                let Some(word) = word else { continue };
                let known = APPLETS.contains(&word)
                    || SHELL.contains(&word)
                    || word.starts_with(['"', '$', '-', ')', '*']);
                if !known && word.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    unknown.push(word.to_owned());
                }
            }
        }
        assert!(
            unknown.is_empty(),
            "init.sh calls commands the initramfs lacks: {unknown:?}"
        );
    }

    #[test]
    fn a_dynamic_busybox_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("busybox");
        std::fs::write(&p, b"\x7fELF....../lib64/ld-linux-x86-64.so.2").unwrap();
        assert!(matches!(
            read_static_busybox(&p),
            Err(InitramfsError::Busybox { .. })
        ));
    }
}
