//! `images/<name>/manifest.json`: what an image was built from, so that it
//! is rebuilt exactly when one of those inputs changes, and when it was
//! built, for `hearth image list`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::recipe::VmSize;
use super::{io_error, ImageError};

/// The file name inside an image's directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Everything an image's content depends on. Two builds with equal inputs
/// give equivalent images; any difference means a rebuild. (Package
/// versions are what a build *found*, in [`Resolved`]: an unchanged recipe
/// is reused even when the archive moved on; `--force` takes the new ones.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildInputs {
    /// The recipe as parsed, with the contents of its `source` files.
    pub recipe_sha256: String,
    /// `minimal` or `debian:SUITE`.
    pub base: String,
    /// Bumped when a base's code changes what it produces.
    pub base_version: u32,
    /// The scripts and fixed files the base embeds.
    pub scripts_sha256: String,
    /// The host's static busybox (minimal base only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busybox_sha256: Option<String>,
    /// The agent put in the image, or `none`.
    pub agent_sha256: String,
}

/// What a build found: the versions the image ended up with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolved {
    /// Every installed Debian package and its version (dpkg's status).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub debian: BTreeMap<String, String>,
    /// `node` and each npm package the recipe named, with its version.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub npm: BTreeMap<String, String>,
}

/// The whole manifest as written to disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    /// `NAME (built in)` or the recipe file's path.
    pub origin: String,
    pub inputs: BuildInputs,
    /// Seconds since the Unix epoch.
    pub built_at: u64,
    /// The same instant, for people reading the file.
    pub built_at_utc: String,
    pub size_bytes: u64,
    /// The VM size the recipe asks for by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmSize>,
    /// The Debian packages the recipe named (the base's and its own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    #[serde(default)]
    pub resolved: Resolved,
    /// The apt sources the packages came from (informative: a different
    /// mirror serving the same suite does not cause a rebuild).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

/// What a build produced, besides the ext4 itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildOutput {
    pub size_bytes: u64,
    pub packages: Vec<String>,
    pub resolved: Resolved,
    pub sources: Vec<String>,
}

impl Manifest {
    pub fn new(
        name: &str,
        origin: &str,
        inputs: BuildInputs,
        vm: Option<VmSize>,
        out: BuildOutput,
    ) -> Self {
        let built_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Manifest {
            name: name.to_owned(),
            origin: origin.to_owned(),
            inputs,
            built_at,
            built_at_utc: format_utc(UNIX_EPOCH + Duration::from_secs(built_at)),
            size_bytes: out.size_bytes,
            vm,
            packages: out.packages,
            resolved: out.resolved,
            sources: out.sources,
        }
    }

    pub fn built_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.built_at)
    }

    /// `Ok(None)` when there is no manifest (the image is not built).
    pub fn read(path: &Path) -> Result<Option<Manifest>, ImageError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read", path)(e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| ImageError::BadManifest {
                path: path.to_owned(),
                source,
            })
    }

    pub fn write(&self, path: &Path) -> Result<(), ImageError> {
        let mut text = serde_json::to_string_pretty(self).expect("plain data serialises");
        text.push('\n');
        std::fs::write(path, text).map_err(io_error("write", path))
    }
}

/// SHA-256 over several texts, each length-prefixed so that moving bytes
/// from one to the next changes the digest.
pub fn sha256_of_texts(texts: &[&str]) -> String {
    let mut h = Sha256::new();
    for t in texts {
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    }
    hex::encode(h.finalize())
}

/// `2026-05-07T10:04:05Z`.
pub fn format_utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian;
/// H. Hinnant's algorithm, shifted so that years start on 1 March).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn utc_formatting_matches_known_instants() {
        assert_eq!(format_utc(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(at(1_700_000_000)), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(at(4_102_444_799)), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn text_digest_depends_on_boundaries() {
        assert_ne!(sha256_of_texts(&["ab", "c"]), sha256_of_texts(&["a", "bc"]));
        assert_eq!(sha256_of_texts(&["x"]), sha256_of_texts(&["x"]));
    }

    #[test]
    fn manifest_round_trips_and_rejects_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MANIFEST_FILE);
        assert_eq!(Manifest::read(&path).unwrap(), None);
        let inputs = BuildInputs {
            recipe_sha256: "cc".into(),
            base: "minimal".into(),
            base_version: 1,
            scripts_sha256: "aa".into(),
            busybox_sha256: Some("bb".into()),
            agent_sha256: "none".into(),
        };
        let out = BuildOutput {
            size_bytes: 42,
            ..Default::default()
        };
        let m = Manifest::new("minimal", "minimal (built in)", inputs, None, out);
        m.write(&path).unwrap();
        assert_eq!(Manifest::read(&path).unwrap(), Some(m));
        std::fs::write(&path, r#"{"name":"x","surprise":1}"#).unwrap();
        let err = Manifest::read(&path).unwrap_err().to_string();
        assert!(err.contains(MANIFEST_FILE), "{err}");
    }
}
