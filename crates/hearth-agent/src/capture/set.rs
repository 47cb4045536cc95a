//! Reading one watch's files as a set, and saying whether it is complete:
//! every file there and not empty, and in each file with required keys
//! every JSON pointer naming a value that is neither null nor "". The
//! bytes live in wiped buffers; what this says about a set (why it is not
//! complete, why it fails) names paths and keys, never content.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::PermissionsExt;

use hearth_agent_proto::MAX_FRAME;
use hearth_types::guest::{CaptureFile, CaptureSpec};
use serde_json::Value;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// One file as read.
pub struct FileRead {
    pub path: String,
    pub mode: u32,
    pub bytes: Zeroizing<Vec<u8>>,
}

/// A set's state on one look.
pub enum Reading {
    /// Every file there and complete; `digest` covers paths, modes and
    /// bytes.
    Complete {
        files: Vec<FileRead>,
        digest: [u8; 32],
    },
    /// Not yet: why, in words without content.
    Incomplete(String),
    /// Never, as things are: a file too large, not a regular file, ...
    Failed(String),
}

/// Reads the files of `spec`, stopping at the first that is missing,
/// incomplete or failing.
pub fn read_set(spec: &CaptureSpec) -> Reading {
    let mut files = Vec::with_capacity(spec.files.len());
    for file in &spec.files {
        let read = match read_file(&file.path) {
            Ok(Ok(read)) => read,
            Ok(Err(why)) => return Reading::Incomplete(why),
            Err(why) => return Reading::Failed(why),
        };
        if let Err(why) = complete(file, &read.bytes) {
            return Reading::Incomplete(why);
        }
        files.push(read);
    }
    if let Err(why) = fits_one_message(&files) {
        return Reading::Failed(why);
    }
    let digest = digest(&files);
    Reading::Complete { files, digest }
}

/// `Err`: never readable as things are; `Ok(Err)`: not there (yet).
/// At most [`CaptureSpec::MAX_FILE_BYTES`], read into a buffer of the
/// file's size (never grown, so no unwiped copy is left behind).
fn read_file(path: &str) -> Result<Result<FileRead, String>, String> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Err(format!("{path} is missing"))),
        Err(e) => return Err(format!("opening {path} failed: {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("reading {path} failed: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{path} is not a regular file"));
    }
    let max = CaptureSpec::MAX_FILE_BYTES;
    if meta.len() > max {
        return Err(too_large(path, meta.len()));
    }
    // One byte more than its size: a file that grew while read shows.
    let mut bytes = Zeroizing::new(vec![0u8; meta.len() as usize + 1]);
    let n = fill(&mut file, &mut bytes).map_err(|e| format!("reading {path} failed: {e}"))?;
    if n == bytes.len() {
        return Ok(Err(format!("{path} changed while read")));
    }
    bytes.truncate(n);
    if bytes.is_empty() {
        return Ok(Err(format!("{path} is empty")));
    }
    Ok(Ok(FileRead {
        path: path.to_owned(),
        mode: meta.permissions().mode() & 0o7777,
        bytes,
    }))
}

fn too_large(path: &str, len: u64) -> String {
    format!(
        "{path} is {len} bytes, over the {} a captured file may have",
        CaptureSpec::MAX_FILE_BYTES
    )
}

/// Reads until `buf` is full or the file ends.
fn fill(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Whether `bytes` satisfy `file`'s required keys (none: any content).
fn complete(file: &CaptureFile, bytes: &[u8]) -> Result<(), String> {
    if file.required_keys.is_empty() {
        return Ok(());
    }
    let path = &file.path;
    let Ok(mut json) = serde_json::from_slice::<Value>(bytes) else {
        return Err(format!("{path} is not JSON (yet)"));
    };
    let verdict = file
        .required_keys
        .iter()
        .try_for_each(|key| match json.pointer(key) {
            None => Err(format!("{path} has no {key}")),
            Some(Value::Null) => Err(format!("{path} has {key} null")),
            Some(Value::String(s)) if s.is_empty() => Err(format!("{path} has {key} empty")),
            Some(_) => Ok(()),
        });
    wipe(&mut json);
    verdict
}

/// Overwrites every string in `value` (the parsed copy of a secret).
fn wipe(value: &mut Value) {
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(map) => map.values_mut().for_each(wipe),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The `captured` message of `files` must fit in one frame.
fn fits_one_message(files: &[FileRead]) -> Result<(), String> {
    // `{"type":"captured","id":18446744073709551615,"files":[]}` and, per
    // file, `{"path":,"mode":4294967295,"data":""},`.
    let mut size = 60;
    for f in files {
        let path = serde_json::to_string(&f.path).map_or(f.path.len() * 6, |p| p.len());
        size += 40 + path + f.bytes.len().div_ceil(3) * 4;
    }
    if size > MAX_FRAME {
        return Err(format!(
            "the {} files come to {size} bytes as one message, over the {MAX_FRAME} a message may carry: capture fewer or smaller files",
            files.len()
        ));
    }
    Ok(())
}

fn digest(files: &[FileRead]) -> [u8; 32] {
    let mut sha = Sha256::new();
    for f in files {
        sha.update(f.path.as_bytes());
        sha.update([0]);
        sha.update(f.mode.to_le_bytes());
        sha.update((f.bytes.len() as u64).to_le_bytes());
        sha.update(&f.bytes[..]);
    }
    sha.finalize().into()
}
