//! ext4 files: recognising one by its superblock, and making one from a
//! folder with `mkfs.ext4 -d` (no root, no loop devices, no mounts).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::tool::MKFS_EXT4;
use super::{io_error, ImageError};

/// The superblock starts 1024 bytes into the device.
const SUPERBLOCK_OFFSET: u64 = 1024;
const SUPERBLOCK_LEN: usize = 1024;
/// `s_magic` within the superblock (so byte 1080 of the file).
const MAGIC_OFFSET: usize = 56;
const EXT4_MAGIC: u16 = 0xEF53;
/// `s_volume_name[16]` within the superblock.
const LABEL_OFFSET: usize = 120;
const LABEL_LEN: usize = 16;

const MIB: u64 = 1024 * 1024;
const BLOCK: u64 = 4096;
const INODE_SIZE: u64 = 256;
/// Room for the journal, group descriptors and bitmaps of an image.
const METADATA_HEADROOM: u64 = 16 * MIB;
const MIN_IMAGE_SIZE: u64 = 16 * MIB;

/// Checks that `path` holds an ext2/3/4 filesystem (magic 0xEF53 at byte 1080).
pub fn check_ext4(path: &Path) -> Result<(), ImageError> {
    read_superblock(path).map(|_| ())
}

/// The volume label of the ext4 filesystem in `path`.
pub fn ext4_label(path: &Path) -> Result<String, ImageError> {
    let sb = read_superblock(path)?;
    let raw = &sb[LABEL_OFFSET..LABEL_OFFSET + LABEL_LEN];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(LABEL_LEN);
    Ok(String::from_utf8_lossy(&raw[..end]).into_owned())
}

fn read_superblock(path: &Path) -> Result<[u8; SUPERBLOCK_LEN], ImageError> {
    let file = File::open(path).map_err(io_error("open", path))?;
    let len = file.metadata().map_err(io_error("stat", path))?.len();
    if len == 0 {
        return Err(ImageError::EmptyFile {
            path: path.to_owned(),
        });
    }
    if len < SUPERBLOCK_OFFSET + SUPERBLOCK_LEN as u64 {
        return Err(ImageError::NotExt4 {
            path: path.to_owned(),
        });
    }
    let mut sb = [0u8; SUPERBLOCK_LEN];
    file.read_exact_at(&mut sb, SUPERBLOCK_OFFSET)
        .map_err(io_error("read the superblock of", path))?;
    let magic = u16::from_le_bytes([sb[MAGIC_OFFSET], sb[MAGIC_OFFSET + 1]]);
    if magic != EXT4_MAGIC {
        return Err(ImageError::NotExt4 {
            path: path.to_owned(),
        });
    }
    Ok(sb)
}

/// What a folder tree needs on an ext4 with 4 KiB blocks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TreeUsage {
    pub data_bytes: u64,
    pub inodes: u64,
}

impl TreeUsage {
    /// A filesystem size that holds the tree: data plus 15 %, inode
    /// tables, and headroom for the journal and metadata, in whole MiB.
    pub fn image_size(self) -> u64 {
        let raw = self.data_bytes
            + self.data_bytes * 15 / 100
            + self.inode_count() * INODE_SIZE
            + METADATA_HEADROOM;
        raw.div_ceil(MIB).max(MIN_IMAGE_SIZE / MIB) * MIB
    }

    /// Inodes to ask mkfs for: the tree's and a quarter more.
    pub fn inode_count(self) -> u64 {
        (self.inodes + self.inodes / 4).max(1024)
    }
}

/// Walks `dir` without following symlinks.
pub fn tree_usage(dir: &Path) -> Result<TreeUsage, ImageError> {
    let mut usage = TreeUsage::default();
    add_usage(dir, &mut usage)?;
    Ok(usage)
}

fn add_usage(path: &Path, usage: &mut TreeUsage) -> Result<(), ImageError> {
    let meta = std::fs::symlink_metadata(path).map_err(io_error("stat", path))?;
    usage.inodes += 1;
    let ft = meta.file_type();
    if ft.is_file() {
        usage.data_bytes += meta.len().div_ceil(BLOCK) * BLOCK;
    } else if ft.is_symlink() {
        // Targets of up to 59 bytes live in the inode ("fast" symlinks).
        if meta.len() > 59 {
            usage.data_bytes += BLOCK;
        }
    } else if ft.is_dir() {
        usage.data_bytes += BLOCK;
        for entry in std::fs::read_dir(path).map_err(io_error("list", path))? {
            let entry = entry.map_err(io_error("list", path))?;
            add_usage(&entry.path(), usage)?;
        }
    }
    Ok(())
}

/// Makes `out` an ext4 labelled `label` holding a copy of the tree `dir`
/// (owners, modes, device nodes and all), sized to fit. Returns its size.
pub fn make_ext4_from_dir(dir: &Path, out: &Path, label: &str) -> Result<u64, ImageError> {
    check_mkfs_supports_dir()?;
    let usage = tree_usage(dir)?;
    let size = usage.image_size();
    let mut cmd = MKFS_EXT4.command();
    cmd.args(["-q", "-F", "-b", "4096", "-L", label, "-N"])
        .arg(usage.inode_count().to_string())
        .args(["-E", "root_owner=0:0", "-d"])
        .arg(dir)
        .arg(out)
        .arg(format!("{}k", size / 1024));
    MKFS_EXT4.run(&mut cmd)?;
    Ok(size)
}

/// `mkfs.ext4 -d` appeared in e2fsprogs 1.43.
fn check_mkfs_supports_dir() -> Result<(), ImageError> {
    let mut cmd = MKFS_EXT4.command();
    cmd.arg("-V");
    let out = MKFS_EXT4.run(&mut cmd)?;
    match e2fsprogs_version(&out) {
        Some(v) if v >= (1, 43) => Ok(()),
        _ => Err(ImageError::MkfsTooOld {
            version: out.lines().next().unwrap_or_default().to_owned(),
        }),
    }
}

/// (major, minor) from `mke2fs 1.47.0 (5-Feb-2023)`.
fn e2fsprogs_version(text: &str) -> Option<(u32, u32)> {
    let word = text.split_whitespace().nth(1)?;
    let mut parts = word.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_read_from_mke2fs_banner() {
        assert_eq!(
            e2fsprogs_version("mke2fs 1.47.0 (5-Feb-2023)\n\tUsing EXT2FS Library"),
            Some((1, 47))
        );
        assert_eq!(
            e2fsprogs_version("mke2fs 1.42.9 (28-Dec-2013)"),
            Some((1, 42))
        );
        assert_eq!(e2fsprogs_version("garbage"), None);
    }

    #[test]
    fn image_size_covers_data_and_headroom_in_whole_mib() {
        let tiny = TreeUsage {
            data_bytes: 2 * MIB,
            inodes: 300,
        };
        assert_eq!(tiny.image_size(), 19 * MIB);
        let big = TreeUsage {
            data_bytes: 400 * MIB,
            inodes: 20_000,
        };
        assert!(big.image_size() > 460 * MIB && big.image_size().is_multiple_of(MIB));
        assert_eq!(TreeUsage::default().image_size(), 17 * MIB);
    }

    #[test]
    fn tree_usage_counts_blocks_and_inodes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        let usage = tree_usage(dir.path()).unwrap();
        assert_eq!(usage.inodes, 3);
        assert_eq!(usage.data_bytes, 2 * BLOCK);
    }

    #[test]
    fn made_filesystem_has_magic_and_label() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        std::fs::write(tree.join("hello"), b"hi\n").unwrap();
        let out = dir.path().join("fs.ext4");
        let size = make_ext4_from_dir(&tree, &out, "hearth-test").unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().len(), size);
        check_ext4(&out).unwrap();
        assert_eq!(ext4_label(&out).unwrap(), "hearth-test");
    }

    #[test]
    fn non_ext4_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.img");
        std::fs::write(&empty, b"").unwrap();
        let err = check_ext4(&empty).unwrap_err().to_string();
        assert!(err.contains("empty.img") && err.contains("empty"), "{err}");
        let junk = dir.path().join("junk.img");
        std::fs::write(&junk, vec![7u8; 4096]).unwrap();
        let err = check_ext4(&junk).unwrap_err().to_string();
        assert!(
            err.contains("junk.img") && err.contains("not an ext4"),
            "{err}"
        );
    }
}
