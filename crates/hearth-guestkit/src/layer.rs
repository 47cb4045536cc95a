//! Per-VM writable layers: the disk that holds everything a VM writes, so
//! that many VMs can share one read-only image.
//!
//! A layer is an empty ext4 labelled `hearth-layer` (the initramfs mounts
//! it as the overlay's upper layer). Running mkfs per VM would cost tens of
//! milliseconds and grow with the layer's size, so one sparse template is
//! made per size, once, and each VM gets a copy of it: a reflink where the
//! filesystem has them, else a copy of only the template's data extents
//! (about 600 KiB of a 1 GiB layer). The image itself is never copied.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use hearth_types::DiskKey;

use crate::image::{check_ext4, ImageError};
use crate::lock::{BuildLock, LockError};
use crate::DataDir;

/// The label the initramfs finds the layer by.
pub const LAYER_LABEL: &str = "hearth-layer";
/// The apparent size of a layer: what a VM can write before it is full.
pub const DEFAULT_LAYER_SIZE: u64 = 1024 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("could not make the layer template {path}")]
    Template {
        path: PathBuf,
        #[source]
        source: ImageError,
    },
    #[error("{path} already exists: a layer is only ever made for a new VM")]
    Exists { path: PathBuf },
    #[error("could not {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LayerError {
    let path = path.to_owned();
    move |source| LayerError::Io {
        action,
        path,
        source,
    }
}

/// Creates `dest` (which must not exist): an empty ext4 labelled
/// `hearth-layer` of [`DEFAULT_LAYER_SIZE`], in milliseconds.
pub fn create_layer(data: &DataDir, dest: &Path) -> Result<(), LayerError> {
    create_layer_of_size(data, dest, DEFAULT_LAYER_SIZE)
}

/// As [`create_layer`], with a chosen apparent size in bytes.
pub fn create_layer_of_size(data: &DataDir, dest: &Path, size: u64) -> Result<(), LayerError> {
    let template = ensure_layer_template(data, size)?;
    copy_sparse(&template, dest)
}

/// `cache/layer-template-<MiB>m.ext4`, made once (under a build lock).
pub fn ensure_layer_template(data: &DataDir, size: u64) -> Result<PathBuf, LayerError> {
    let name = format!("layer-template-{}m", size.div_ceil(1024 * 1024));
    let path = data.cache().join(format!("{name}.ext4"));
    // Installed by rename, so existing means complete: no lock needed.
    if path.exists() {
        return Ok(path);
    }
    let _lock = BuildLock::acquire(&data.build_lock(&name))?;
    if !path.exists() {
        make_template(&path, size)?;
    }
    Ok(path)
}

/// mkfs into a temporary name, then rename. Lazy inode-table and journal
/// initialisation leave almost every block unwritten, so the file is sparse.
fn make_template(path: &Path, size: u64) -> Result<(), LayerError> {
    let dir = path.parent().expect("the cache is a folder");
    std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let made = run_mkfs(&tmp, size).and_then(|()| check_ext4(&tmp));
    if let Err(source) = made {
        let _ = std::fs::remove_file(&tmp);
        return Err(LayerError::Template {
            path: path.to_owned(),
            source,
        });
    }
    std::fs::rename(&tmp, path).map_err(io_error("move into place", path))
}

fn run_mkfs(path: &Path, size: u64) -> Result<(), ImageError> {
    let tool = crate::image::MKFS_EXT4;
    let mut cmd = tool.command();
    cmd.args(["-q", "-F", "-L", LAYER_LABEL])
        .args(["-E", "lazy_itable_init=1,lazy_journal_init=1"])
        .arg(path)
        .arg(format!("{}k", size / 1024));
    tool.run(&mut cmd)?;
    Ok(())
}

/// Freezes a VM's layer for a snapshot: a sparse copy at `dest`, readable
/// by everyone (the hypervisors of restored VMs read it as its backing
/// file) and never written again. Take it while the VM is paused.
pub fn freeze_layer(layer: &Path, dest: &Path) -> Result<(), LayerError> {
    use std::os::unix::fs::PermissionsExt;
    copy_sparse(layer, dest)?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o444))
        .map_err(io_error("make read-only", dest))
}

/// A restored VM's own writable layer: a qcow2 overlay at `dest` over the
/// frozen layer (`qemu-img create -b`), so restoring copies nothing.
pub fn create_overlay(frozen: &Path, dest: &Path) -> Result<(), LayerError> {
    if dest.exists() {
        return Err(LayerError::Exists {
            path: dest.to_owned(),
        });
    }
    let out = std::process::Command::new(QEMU_IMG)
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(frozen)
        .arg(dest)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| LayerError::Io {
            action: "run qemu-img (install Debian's qemu-utils) for",
            path: dest.to_owned(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    let _ = std::fs::remove_file(dest);
    Err(LayerError::Io {
        action: "create the overlay",
        path: dest.to_owned(),
        source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
    })
}

/// A persistent VM's encrypted disk at `dest`: the empty ext4 `template`
/// (which holds no secret) converted to a qcow2 whose clusters QEMU
/// encrypts with LUKS under `key`. Clusters the guest never wrote stay
/// unallocated, so the file stays sparse; the guest sees the template's
/// filesystem, label included. The key reaches qemu-img on its standard
/// input, never in an argument. PBKDF stretching is set to its least:
/// the key is 32 random bytes, not a password to be guessed.
pub fn create_encrypted_disk(
    template: &Path,
    dest: &Path,
    key: &DiskKey,
) -> Result<(), LayerError> {
    use std::io::Write;
    if dest.exists() {
        return Err(LayerError::Exists {
            path: dest.to_owned(),
        });
    }
    let tmp = dest.with_extension(format!("tmp-{}", std::process::id()));
    let failed = |action: &'static str| {
        let tmp = tmp.clone();
        move |source: std::io::Error| {
            let _ = std::fs::remove_file(&tmp);
            LayerError::Io {
                action,
                path: tmp,
                source,
            }
        }
    };
    let mut child = std::process::Command::new(QEMU_IMG)
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .args(["--object", "secret,id=disk-key,format=raw,file=/dev/stdin"])
        .args([
            "-o",
            "encrypt.format=luks,encrypt.key-secret=disk-key,encrypt.iter-time=10",
        ])
        .arg(template)
        .arg(&tmp)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(failed("run qemu-img (install Debian's qemu-utils) for"))?;
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(key.passphrase()));
    let out = child
        .wait_with_output()
        .map_err(failed("wait for qemu-img making"))?;
    if let Some(Err(e)) = written {
        return Err(failed("give qemu-img the key of")(e));
    }
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(failed("make the encrypted disk")(std::io::Error::other(
            why,
        )));
    }
    std::fs::rename(&tmp, dest).map_err(failed("install the encrypted disk"))
}

/// A restored VM's own writable layer for a hypervisor that takes only
/// raw disks (Firecracker): a sparse copy of the frozen layer at `dest`,
/// writable by its owner. It costs the frozen layer's allocated blocks in
/// disk space and the time to copy them (no reflink on ext4).
pub fn copy_layer(frozen: &Path, dest: &Path) -> Result<(), LayerError> {
    use std::os::unix::fs::PermissionsExt;
    copy_sparse(frozen, dest)?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o600))
        .map_err(io_error("make writable", dest))
}

/// The QEMU disk tool, for overlays.
pub const QEMU_IMG: &str = "qemu-img";

/// Copies `src` to the new file `dest`, keeping holes as holes.
fn copy_sparse(src: &Path, dest: &Path) -> Result<(), LayerError> {
    let from = File::open(src).map_err(io_error("open", src))?;
    let to = match File::create_new(dest) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(LayerError::Exists {
                path: dest.to_owned(),
            })
        }
        Err(e) => return Err(io_error("create", dest)(e)),
    };
    let copied = reflink(&from, &to).or_else(|_| copy_extents(&from, &to));
    if let Err(source) = copied {
        let _ = std::fs::remove_file(dest);
        return Err(LayerError::Io {
            action: "copy the layer template to",
            path: dest.to_owned(),
            source,
        });
    }
    Ok(())
}

/// Shares all of `from`'s blocks with `to` (btrfs, XFS; not ext4).
fn reflink(from: &File, to: &File) -> std::io::Result<()> {
    // SAFETY: FICLONE takes the source descriptor as its argument; both
    // descriptors are owned by live `File`s for the duration of the call.
    let rc = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Copies each data extent (found with SEEK_DATA/SEEK_HOLE), then sets the
/// full length, so the holes stay unallocated.
fn copy_extents(from: &File, to: &File) -> std::io::Result<()> {
    let len = from.metadata()?.len();
    let mut offset = 0;
    while let Some((start, end)) = next_extent(from, offset, len)? {
        copy_range(from, to, start, end)?;
        offset = end;
    }
    to.set_len(len)
}

/// The next `(data start, hole start)` at or after `offset`.
fn next_extent(file: &File, offset: u64, len: u64) -> std::io::Result<Option<(u64, u64)>> {
    if offset >= len {
        return Ok(None);
    }
    let seek = |from: u64, whence| {
        // SAFETY: lseek(2) on a descriptor owned by a live `File`; the
        // offsets are within i64 because they are below the file length.
        let at = unsafe { libc::lseek(file.as_raw_fd(), from as libc::off_t, whence) };
        if at < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(at as u64)
        }
    };
    let start = match seek(offset, libc::SEEK_DATA) {
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(None),
        other => other?,
    };
    Ok(Some((start, seek(start, libc::SEEK_HOLE)?)))
}

/// copy_file_range(2) for `[start, end)`, or read/write where the kernel
/// cannot (another filesystem type, old kernel).
fn copy_range(from: &File, to: &File, start: u64, end: u64) -> std::io::Result<()> {
    let mut at = start;
    while at < end {
        let (mut off_in, mut off_out) = (at as libc::loff_t, at as libc::loff_t);
        // SAFETY: both descriptors are owned by live `File`s and the offset
        // pointers point at locals that outlive the call.
        let n = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                &mut off_in,
                to.as_raw_fd(),
                &mut off_out,
                (end - at) as usize,
                0,
            )
        };
        match n {
            n if n > 0 => at += n as u64,
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ => return copy_range_by_reading(from, to, at, end),
        }
    }
    Ok(())
}

fn copy_range_by_reading(from: &File, to: &File, start: u64, end: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1024 * 1024];
    let mut at = start;
    while at < end {
        let want = buf.len().min((end - at) as usize);
        from.read_exact_at(&mut buf[..want], at)?;
        to.write_all_at(&buf[..want], at)?;
        at += want as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_copy_keeps_data_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(b"middle", 32 << 20).unwrap();
        let dst = dir.path().join("dst");
        let to = File::create_new(&dst).unwrap();
        copy_extents(&File::open(&src).unwrap(), &to).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(&src).unwrap());
        let allocated = std::os::unix::fs::MetadataExt::blocks(&to.metadata().unwrap()) * 512;
        assert!(allocated < 1 << 20, "{allocated} bytes allocated");
    }

    #[test]
    fn existing_destination_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"x").unwrap();
        let err = copy_sparse(&src, &src).unwrap_err();
        assert!(matches!(err, LayerError::Exists { .. }), "{err}");
    }
}
