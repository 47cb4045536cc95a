//! Which credential files the agent watches for a login session, and when
//! a set of them counts as complete. The host names the files (a CLI's
//! login writes them in the user's home); the agent sends them back once
//! they are all there and have stopped changing (see docs/agent.md,
//! "Credential capture").

use serde::{Deserialize, Serialize};

/// The files to capture, as one set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CaptureSpec {
    /// 1 to 16 files, each named once.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 16))]
    pub files: Vec<CaptureFile>,
    /// How long the whole set must stay unchanged before it is sent, ms;
    /// at most 60000. Tools that rewrite their file in place are caught
    /// between writes without it.
    #[cfg_attr(feature = "openapi", schema(maximum = 60000))]
    pub stable_ms: u64,
}

/// One file of a [`CaptureSpec`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CaptureFile {
    /// Absolute, normalised guest path: no `.` or `..` components, no
    /// empty ones (`//`), no trailing `/`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^(/[^/]+)+$"))]
    pub path: String,
    /// JSON pointers (RFC 6901, e.g. `/tokens/access_token`) that must
    /// each name a value that is neither null nor an empty string; the
    /// file must then parse as JSON. Empty: the file must exist and not be
    /// empty.
    #[serde(default)]
    pub required_keys: Vec<String>,
}

impl CaptureSpec {
    /// Files in one spec, at most.
    pub const MAX_FILES: usize = 16;
    /// The longest `stable_ms`.
    pub const MAX_STABLE_MS: u64 = 60_000;
    /// Bytes of one captured file, at most; a larger one fails the watch.
    pub const MAX_FILE_BYTES: u64 = 1 << 20;
    /// Required keys of one file, at most.
    pub const MAX_KEYS: usize = 32;
    /// The longest path or pointer, in bytes.
    pub const MAX_PATH: usize = 4096;

    /// What is wrong with the spec, naming the field and the fix.
    pub fn check(&self) -> Result<(), String> {
        let n = self.files.len();
        if n == 0 || n > Self::MAX_FILES {
            return Err(format!(
                "files: {n} files named: name 1 to {} files to capture",
                Self::MAX_FILES
            ));
        }
        if self.stable_ms > Self::MAX_STABLE_MS {
            return Err(format!(
                "stable_ms: {} is over {}: give at most a minute",
                self.stable_ms,
                Self::MAX_STABLE_MS
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, file) in self.files.iter().enumerate() {
            file.check(i)?;
            if !seen.insert(file.path.as_str()) {
                return Err(format!(
                    "files[{i}].path: {:?} is named twice: name each file once",
                    file.path
                ));
            }
        }
        Ok(())
    }
}

impl CaptureFile {
    /// What is wrong with the file at index `i` of its spec.
    fn check(&self, i: usize) -> Result<(), String> {
        if !is_normal_absolute(&self.path) {
            return Err(format!(
                "files[{i}].path: {:?} is not an absolute normalised path: give one like /home/user/.codex/auth.json (no '.', '..' or empty components, no trailing '/', at most {} bytes)",
                self.path,
                CaptureSpec::MAX_PATH
            ));
        }
        if self.required_keys.len() > CaptureSpec::MAX_KEYS {
            return Err(format!(
                "files[{i}].required_keys: {} keys: name at most {}",
                self.required_keys.len(),
                CaptureSpec::MAX_KEYS
            ));
        }
        for (k, key) in self.required_keys.iter().enumerate() {
            if !is_json_pointer(key) {
                return Err(format!(
                    "files[{i}].required_keys[{k}]: {key:?} is not a JSON pointer: write it like /tokens/access_token (starting with '/', '~' only as ~0 or ~1)"
                ));
            }
        }
        Ok(())
    }
}

/// `/a/b`: absolute, every component present and neither `.` nor `..`,
/// no NUL, bounded.
fn is_normal_absolute(path: &str) -> bool {
    path.len() <= CaptureSpec::MAX_PATH
        && !path.contains('\0')
        && path
            .strip_prefix('/')
            .is_some_and(|rest| rest.split('/').all(|c| !matches!(c, "" | "." | "..")))
}

/// A non-empty RFC 6901 pointer: starts with `/`, `~` escapes only `~0`
/// and `~1`, bounded.
fn is_json_pointer(key: &str) -> bool {
    if key.len() > CaptureSpec::MAX_PATH || !key.starts_with('/') || key.contains('\0') {
        return false;
    }
    let mut chars = key.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(paths: &[&str], keys: &[&str], stable_ms: u64) -> CaptureSpec {
        CaptureSpec {
            files: paths
                .iter()
                .map(|p| CaptureFile {
                    path: p.to_string(),
                    required_keys: keys.iter().map(|k| k.to_string()).collect(),
                })
                .collect(),
            stable_ms,
        }
    }

    fn refused(s: &CaptureSpec, field: &str) {
        let e = s.check().expect_err("refused");
        assert!(e.starts_with(field), "{e}");
    }

    #[test]
    fn a_good_spec_passes() {
        let s = spec(
            &[
                "/home/u/.codex/auth.json",
                "/home/u/.claude/.credentials.json",
            ],
            &["/tokens/access_token", "/a~1b/~0c"],
            1500,
        );
        assert_eq!(s.check(), Ok(()));
        assert_eq!(spec(&["/x"], &[], 60_000).check(), Ok(()));
    }

    #[test]
    fn file_counts_outside_1_to_16_are_refused() {
        refused(&spec(&[], &[], 0), "files:");
        let many: Vec<String> = (0..17).map(|i| format!("/f{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        refused(&spec(&many, &[], 0), "files:");
    }

    #[test]
    fn paths_must_be_absolute_and_normalised() {
        for bad in [
            "relative/x",
            "",
            "/",
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/a/",
            "/a\0b",
        ] {
            refused(&spec(&[bad], &[], 0), "files[0].path");
        }
        refused(&spec(&["/a", "/a"], &[], 0), "files[1].path");
    }

    #[test]
    fn keys_must_be_json_pointers() {
        for bad in ["tokens", "", "/a~2", "/a~"] {
            refused(&spec(&["/a"], &[bad], 0), "files[0].required_keys[0]");
        }
    }

    #[test]
    fn stable_ms_is_at_most_a_minute() {
        refused(&spec(&["/a"], &[], 60_001), "stable_ms");
    }

    #[test]
    fn unknown_fields_are_refused_and_keys_default_to_none() {
        let s: CaptureSpec =
            serde_json::from_str(r#"{"files":[{"path":"/a"}],"stable_ms":5}"#).unwrap();
        assert!(s.files[0].required_keys.is_empty());
        let bad = r#"{"files":[{"path":"/a","mode":1}],"stable_ms":5}"#;
        assert!(serde_json::from_str::<CaptureSpec>(bad).is_err());
    }
}
