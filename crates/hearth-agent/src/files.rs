//! Copying files out of and into the guest for `hearth vm cp`.
//!
//! Reading: regular files only, refused above the host's `max_bytes` before
//! anything is sent, then chunks of 64 KiB and `file_done` with the size and
//! SHA-256. Writing: into a temporary file beside the target, never more
//! than the announced size; at `file_end` the size and checksum must match,
//! then it is renamed into place. On any error the temporary file goes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hearth_agent_proto::{decode_data, encode_data, GuestMessage};
use sha2::{Digest, Sha256};

use crate::config::temp_beside;
use crate::outbox::Link;

pub const CHUNK: usize = 64 * 1024;

/// Sends the file at `path` on its own thread.
pub fn read(id: u64, path: String, max_bytes: u64, link: Link) {
    std::thread::spawn(move || {
        let reply = match send_file(id, Path::new(&path), max_bytes, &link) {
            Ok(done) => done,
            Err(message) => GuestMessage::FileError { id, message },
        };
        let _ = link.send(reply);
    });
}

fn send_file(id: u64, path: &Path, max: u64, link: &Link) -> Result<GuestMessage, String> {
    let shown = path.display();
    let mut file = File::open(path).map_err(|e| format!("cannot open {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    if meta.len() > max {
        return Err(too_big(path, meta.len(), max));
    }
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading {shown} failed: {e}")),
        };
        size += n as u64;
        if size > max {
            return Err(too_big(path, size, max));
        }
        hasher.update(&buf[..n]);
        let chunk = GuestMessage::FileChunk {
            id,
            data: encode_data(&buf[..n]),
        };
        link.send(chunk)
            .map_err(|_| "the host went away".to_string())?;
    }
    Ok(GuestMessage::FileDone {
        id,
        size,
        sha256: hex(&hasher.finalize()),
    })
}

fn too_big(path: &Path, size: u64, max: u64) -> String {
    format!(
        "{} is {size} bytes, more than the limit of {max}: copy a smaller file or raise the limit",
        path.display()
    )
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One file being written.
#[derive(Debug)]
struct Upload {
    target: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    mode: u32,
    size: u64,
    written: u64,
    hasher: Sha256,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The writes of one connection, by id; unfinished ones are removed when
/// it ends.
#[derive(Debug, Default)]
pub struct Uploads(HashMap<u64, Upload>);

impl Uploads {
    /// Starts writing `path`; `Some(reply)` when it cannot.
    pub fn begin(&mut self, id: u64, path: &str, size: u64, mode: u32) -> Option<GuestMessage> {
        match Upload::create(Path::new(path), size, mode) {
            Ok(upload) => {
                self.0.insert(id, upload);
                None
            }
            Err(message) => Some(GuestMessage::FileError { id, message }),
        }
    }

    /// Appends a chunk; `Some(reply)` when the write failed (and was dropped).
    pub fn chunk(&mut self, id: u64, data: &str) -> Option<GuestMessage> {
        let Some(upload) = self.0.get_mut(&id) else {
            return Some(unknown(id));
        };
        match upload.append(data) {
            Ok(()) => None,
            Err(message) => {
                self.0.remove(&id);
                Some(GuestMessage::FileError { id, message })
            }
        }
    }

    /// Checks and renames into place; the reply either way.
    pub fn end(&mut self, id: u64, sha256: &str) -> GuestMessage {
        let Some(upload) = self.0.remove(&id) else {
            return unknown(id);
        };
        match upload.finish(sha256) {
            Ok((size, sha256)) => GuestMessage::FileDone { id, size, sha256 },
            Err(message) => GuestMessage::FileError { id, message },
        }
    }
}

fn unknown(id: u64) -> GuestMessage {
    GuestMessage::FileError {
        id,
        message: format!("no file write {id} in progress: send file_write first"),
    }
}

impl Upload {
    fn create(target: &Path, size: u64, mode: u32) -> Result<Upload, String> {
        let shown = target.display();
        if !target.is_absolute() || target.file_name().is_none() {
            return Err(format!("{shown:?} is not an absolute file path"));
        }
        if mode > 0o7777 {
            return Err(format!("mode {mode:o} is over 0o7777"));
        }
        if target.is_dir() {
            return Err(format!("{shown} is a directory: name the file to write"));
        }
        let parent = target.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        let tmp = temp_beside(target);
        let file =
            File::create(&tmp).map_err(|e| format!("cannot write in {}: {e}", parent.display()))?;
        Ok(Upload {
            target: target.to_owned(),
            tmp,
            file: Some(file),
            mode,
            size,
            written: 0,
            hasher: Sha256::new(),
        })
    }

    fn append(&mut self, data: &str) -> Result<(), String> {
        let bytes = decode_data(data).map_err(|e| format!("a chunk is not base64: {e}"))?;
        let written = self.written + bytes.len() as u64;
        if written > self.size {
            return Err(format!(
                "more than the announced {} bytes were sent for {}",
                self.size,
                self.target.display()
            ));
        }
        let file = self.file.as_mut().expect("open until finished");
        file.write_all(&bytes)
            .map_err(|e| format!("writing {} failed: {e}", self.target.display()))?;
        self.hasher.update(&bytes);
        self.written = written;
        Ok(())
    }

    fn finish(mut self, want: &str) -> Result<(u64, String), String> {
        let shown = self.target.display().to_string();
        if self.written != self.size {
            return Err(format!(
                "{shown}: {} of the announced {} bytes arrived",
                self.written, self.size
            ));
        }
        let got = hex(&std::mem::take(&mut self.hasher).finalize());
        if !got.eq_ignore_ascii_case(want) {
            return Err(format!(
                "{shown}: the checksum does not match (sha256 {got})"
            ));
        }
        let file = self.file.as_ref().expect("open until finished");
        file.set_permissions(std::fs::Permissions::from_mode(self.mode))
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&self.tmp, &self.target))
            .map_err(|e| format!("putting {shown} in place failed: {e}"))?;
        self.file = None;
        Ok((self.size, got))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    fn only_entry(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_write_lands_once_size_and_checksum_match() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub/out.bin");
        let mut u = Uploads::default();
        assert_eq!(u.begin(1, target.to_str().unwrap(), 6, 0o600), None);
        assert_eq!(u.chunk(1, &encode_data(b"abc")), None);
        assert_eq!(u.chunk(1, &encode_data(b"def")), None);
        let done = u.end(1, &sha(b"abcdef"));
        assert_eq!(
            done,
            GuestMessage::FileDone {
                id: 1,
                size: 6,
                sha256: sha(b"abcdef")
            }
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"abcdef");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(only_entry(&dir.path().join("sub")), ["out.bin"]);
    }

    #[test]
    fn a_bad_checksum_or_too_many_bytes_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let mut u = Uploads::default();
        u.begin(1, target.to_str().unwrap(), 3, 0o644);
        u.chunk(1, &encode_data(b"abc"));
        let err = u.end(1, &sha(b"xyz"));
        assert!(
            matches!(&err, GuestMessage::FileError { message, .. } if message.contains("checksum")),
            "{err:?}"
        );
        u.begin(2, target.to_str().unwrap(), 2, 0o644);
        let err = u.chunk(2, &encode_data(b"abc")).unwrap();
        assert!(
            matches!(&err, GuestMessage::FileError { message, .. } if message.contains("announced")),
            "{err:?}"
        );
        assert!(
            only_entry(dir.path()).is_empty(),
            "{:?}",
            only_entry(dir.path())
        );
        // An unfinished write is removed when its connection ends.
        u.begin(3, target.to_str().unwrap(), 9, 0o644);
        drop(u);
        assert!(only_entry(dir.path()).is_empty());
    }

    #[test]
    fn relative_paths_and_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut u = Uploads::default();
        assert!(u.begin(1, "relative/x", 1, 0o644).is_some());
        assert!(u.begin(2, dir.path().to_str().unwrap(), 1, 0o644).is_some());
        assert!(matches!(
            u.end(9, ""),
            GuestMessage::FileError { id: 9, .. }
        ));
    }
}
