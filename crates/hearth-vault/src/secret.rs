//! Plaintext that must not linger or leak: [`Secret`] bytes are wiped when
//! dropped and never shown by `Debug`; [`CredentialFiles`] is the set of
//! files a login captured (path, mode, bytes), encoded into one [`Secret`]
//! to be sealed and decoded back after opening.

use std::fmt;

use zeroize::Zeroizing;

/// At most this many files in one credential.
pub const MAX_FILES: usize = 256;
/// At most this many bytes in all files of one credential.
pub const MAX_BYTES: usize = 8 * 1024 * 1024;
/// At most this many bytes in one path.
pub const MAX_PATH: usize = 4096;

/// Bytes that are wiped from memory when dropped, and that `Debug` shows
/// as their length only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(bytes))
    }

    /// The bytes, to hand to the agent; do not copy them anywhere that
    /// outlives the call.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Secret {
    fn from(bytes: Vec<u8>) -> Secret {
        Secret::new(bytes)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// One file of a credential, as the CLI tool wrote it in the user's home.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialFile {
    /// Where it goes, as the capture names it (e.g. relative to the home).
    pub path: String,
    /// Unix permission bits, at most 0o7777.
    pub mode: u32,
    pub contents: Secret,
}

/// The complete set of files one login produced: what is sealed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialFiles {
    pub files: Vec<CredentialFile>,
}

const MAGIC: &[u8; 4] = b"HVF1";

impl CredentialFiles {
    /// The bytes of every file together.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.contents.len() as u64).sum()
    }

    /// What is wrong with the set, if anything: it must have 1 to
    /// [`MAX_FILES`] files, each with a path (no NUL, at most [`MAX_PATH`]
    /// bytes, not repeated) and a mode of at most 0o7777, and at most
    /// [`MAX_BYTES`] in all.
    pub fn check(&self) -> Result<(), String> {
        if self.files.is_empty() || self.files.len() > MAX_FILES {
            return Err(format!(
                "it has {} files: a credential has 1 to {MAX_FILES}",
                self.files.len()
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.files {
            check_file(f)?;
            if !seen.insert(f.path.as_str()) {
                return Err(format!("{:?} is given twice", f.path));
            }
        }
        if self.size() > MAX_BYTES as u64 {
            return Err(format!(
                "its files hold {} bytes: at most {MAX_BYTES} are kept",
                self.size()
            ));
        }
        Ok(())
    }

    /// `HVF1`, the count (u32), then per file the path's length (u16), the
    /// path, the mode (u32) and the contents' length (u64) and bytes; all
    /// big-endian. Built in one buffer that is wiped when dropped.
    pub(crate) fn encode(&self) -> Secret {
        let mut out = Zeroizing::new(Vec::with_capacity(self.size() as usize + 64));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.files.len() as u32).to_be_bytes());
        for f in &self.files {
            out.extend_from_slice(&(f.path.len() as u16).to_be_bytes());
            out.extend_from_slice(f.path.as_bytes());
            out.extend_from_slice(&f.mode.to_be_bytes());
            out.extend_from_slice(&(f.contents.len() as u64).to_be_bytes());
            out.extend_from_slice(f.contents.expose());
        }
        Secret(out)
    }

    /// The set [`encode`](Self::encode) made, or what is wrong with the
    /// bytes; never a panic, whatever they are.
    pub(crate) fn decode(bytes: &[u8]) -> Result<CredentialFiles, String> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err("it does not start with HVF1".to_owned());
        }
        let count = r.u32()? as usize;
        if count > MAX_FILES {
            return Err(format!("it claims {count} files"));
        }
        let mut files = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(r.u16()?);
            let path = std::str::from_utf8(r.take(len)?)
                .map_err(|_| "a path is not UTF-8".to_owned())?
                .to_owned();
            let mode = r.u32()?;
            let len = usize::try_from(r.u64()?).map_err(|_| "a length overflows".to_owned())?;
            let contents = Secret::new(r.take(len)?.to_vec());
            files.push(CredentialFile {
                path,
                mode,
                contents,
            });
        }
        if !r.0.is_empty() {
            return Err(format!("{} bytes follow the last file", r.0.len()));
        }
        Ok(CredentialFiles { files })
    }
}

fn check_file(f: &CredentialFile) -> Result<(), String> {
    if f.path.is_empty() || f.path.len() > MAX_PATH || f.path.contains('\0') {
        return Err(format!(
            "a path is empty, has a NUL or is longer than {MAX_PATH} bytes: {:?}",
            f.path.chars().take(80).collect::<String>()
        ));
    }
    if f.mode > 0o7777 {
        return Err(format!(
            "{:?} has mode {:o}: give permission bits, at most 7777 (octal)",
            f.path, f.mode
        ));
    }
    Ok(())
}

/// Reads big-endian fields off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err(format!(
                "it ends early ({n} bytes wanted, {} left)",
                self.0.len()
            ));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, String> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.array().map(u64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> CredentialFiles {
        CredentialFiles {
            files: vec![
                CredentialFile {
                    path: ".claude/.credentials.json".to_owned(),
                    mode: 0o600,
                    contents: Secret::new(b"{\"token\":\"sk-ant-SECRET\"}".to_vec()),
                },
                CredentialFile {
                    path: ".claude/blob".to_owned(),
                    mode: 0o400,
                    contents: Secret::new((0..=255u8).chain([0, 0, 255]).collect()),
                },
                CredentialFile {
                    path: ".config/empty".to_owned(),
                    mode: 0o644,
                    contents: Secret::default(),
                },
            ],
        }
    }

    #[test]
    fn files_encode_and_decode_back_exactly() {
        let files = sample();
        let encoded = files.encode();
        assert_eq!(CredentialFiles::decode(encoded.expose()).unwrap(), files);
    }

    #[test]
    fn any_truncation_or_garbage_is_an_error_not_a_panic() {
        let encoded = sample().encode();
        let bytes = encoded.expose();
        for n in 0..bytes.len() {
            assert!(CredentialFiles::decode(&bytes[..n]).is_err(), "{n}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(CredentialFiles::decode(&longer).is_err());
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&1u32.to_be_bytes());
        huge.extend_from_slice(&0u16.to_be_bytes());
        huge.extend_from_slice(&0u32.to_be_bytes());
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(CredentialFiles::decode(&huge).is_err());
    }

    #[test]
    fn debug_shows_lengths_never_contents() {
        let text = format!("{:?}", sample());
        assert!(!text.contains("sk-ant-SECRET"), "{text}");
        assert!(text.contains("Secret(25 bytes)"), "{text}");
    }

    #[test]
    fn a_bad_set_is_named() {
        assert!(CredentialFiles::default()
            .check()
            .unwrap_err()
            .contains("1 to"));
        let mut twice = sample();
        twice.files.push(twice.files[0].clone());
        assert!(twice.check().unwrap_err().contains("twice"));
        let mut mode = sample();
        mode.files[0].mode = 0o100600;
        assert!(mode.check().unwrap_err().contains("7777"));
        assert!(sample().check().is_ok());
    }
}
