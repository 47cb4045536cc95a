//! What the API accepts, as patterns: the shapes of ids, names and guest
//! paths that the validators in this crate and in `hearth-server` enforce,
//! written as the regular expressions the OpenAPI document states.
//!
//! utoipa's `schema(pattern = ...)` takes a literal only, so the document
//! repeats these strings; `hearth-server`'s `openapi_drift` test fails when
//! the document and these constants differ (and the numeric bounds,
//! [`crate::VmDescription::MAX_VCPUS`] and the like, likewise). The tests
//! below check each pattern against the validator it describes, so the
//! document can say neither more nor less than the server checks. The
//! patterns use only what ECMA-262, Python's `re` and Rust's `regex` read
//! alike (no look-around), so every client's validator agrees.

/// [`crate::VmId`]: `vm-` and 1 to 61 lowercase letters, digits or `-`.
pub const VM_ID_PATTERN: &str = "^vm-[a-z0-9-]{1,61}$";

/// [`crate::TenantId`]: 1 to 64 lowercase letters, digits, `-` or `_`.
pub const TENANT_PATTERN: &str = "^[a-z0-9_-]{1,64}$";

/// A guest's hostname ([`crate::guest::GuestConfig::hostname`]).
pub const HOSTNAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9-]{0,62}$";

/// An environment variable's name ([`crate::guest::EnvVar`]).
pub const ENV_NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";

/// A service's name ([`crate::guest::is_service_name`]): 1 to 64 of
/// letters, digits, `-`, `_` and `.`, not `.` or `..`.
pub const SERVICE_NAME_PATTERN: &str = "^([A-Za-z0-9_-][A-Za-z0-9._-]{0,63}|\\.[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}|\\.\\.[A-Za-z0-9._-]{1,62})$";

/// A file the agent writes at boot ([`crate::guest::GuestFile::path`]):
/// absolute, no `..` component.
pub const GUEST_FILE_PATTERN: &str = "^(/([^/.][^/]*|\\.[^/.][^/]*|\\.\\.[^/]+|\\.)?)+$";

/// A file copied in or out of a running guest (`?path=` of
/// `/v1/vms/{id}/files`): absolute, no `..` component, no NUL, and (with
/// [`GUEST_PATH_MIN_LEN`] and [`GUEST_PATH_MAX_LEN`]) not `/` alone and at
/// most 4096 bytes.
pub const GUEST_PATH_PATTERN: &str =
    "^(/([^/.\\x00][^/\\x00]*|\\.[^/.\\x00][^/\\x00]*|\\.\\.[^/\\x00]+|\\.)?)+$";
pub const GUEST_PATH_MIN_LEN: usize = 2;
/// PATH_MAX on Linux.
pub const GUEST_PATH_MAX_LEN: usize = 4096;

/// Whether `path` may name a file copied in or out of a running guest:
/// the rule [`GUEST_PATH_PATTERN`] states.
pub fn is_guest_path(path: &str) -> bool {
    path.starts_with('/')
        && (GUEST_PATH_MIN_LEN..=GUEST_PATH_MAX_LEN).contains(&path.len())
        && !path.contains('\0')
        && !path.split('/').any(|c| c == "..")
}

/// A token's id: `hth_` and 8 lowercase hex digits.
pub const TOKEN_ID_PATTERN: &str = "^hth_[0-9a-f]{8}$";

/// A viewer link's id: `hvl_` and 8 lowercase hex digits.
pub const VIEWER_LINK_ID_PATTERN: &str = "^hvl_[0-9a-f]{8}$";

/// The readiness path of an `http` check: it starts with `/`.
pub const HTTP_PATH_PATTERN: &str = "^/";

#[cfg(test)]
mod tests {
    use regex_automata::meta::Regex;

    use super::*;
    use crate::guest::{is_service_name, EnvVar, GuestConfig, GuestFile, MAX_SERVICE_NAME};
    use crate::{TenantId, VmId};

    /// Every sample is judged alike by the pattern and by `check`.
    fn agree(pattern: &str, samples: &[&str], check: impl Fn(&str) -> bool) {
        let re = Regex::new(pattern).expect("pattern compiles");
        for s in samples {
            assert_eq!(
                re.is_match(s),
                check(s),
                "{pattern} and the check differ on {s:?}"
            );
        }
    }

    fn hostname_ok(h: &str) -> bool {
        let c = GuestConfig {
            hostname: Some(h.into()),
            ..Default::default()
        };
        c.check().is_ok()
    }

    fn file_ok(path: &str) -> bool {
        let c = GuestConfig {
            files: vec![GuestFile {
                path: path.into(),
                content: String::new(),
                mode: None,
                owner: None,
            }],
            ..Default::default()
        };
        c.check().is_ok()
    }

    const PATHS: &[&str] = &[
        "",
        "/",
        "//",
        "/etc",
        "/etc/",
        "/etc/app.conf",
        "etc",
        "/..",
        "/../x",
        "/a/..",
        "/a/../b",
        "/a/..b",
        "/a/b..",
        "/a/...",
        "/.",
        "/./x",
        "/.x",
        "/.x/..y",
        "/a//b",
        "x/../",
        "/a\0b",
        "/é",
    ];

    #[test]
    fn id_patterns_agree_with_the_parsers() {
        let long = format!("vm-{}", "a".repeat(61));
        let longer = format!("vm-{}", "a".repeat(62));
        let ids = [
            "vm-3f9a1c2b7d4e",
            "vm-",
            "vm-a",
            "vm-A",
            "vm-a/b",
            "../x",
            "x-1",
            "vm--",
            &long,
            &longer,
            "vm-a\n",
        ];
        agree(VM_ID_PATTERN, &ids, |s| s.parse::<VmId>().is_ok());
        let tenants = [
            "a",
            "team-a",
            "t_1",
            "",
            "A",
            "a b",
            &"a".repeat(64),
            &"a".repeat(65),
        ];
        agree(TENANT_PATTERN, &tenants, |s| s.parse::<TenantId>().is_ok());
    }

    #[test]
    fn name_patterns_agree_with_the_checks() {
        let hosts = [
            "box",
            "a",
            "-x",
            "x-",
            "a.b",
            "",
            &"h".repeat(63),
            &"h".repeat(64),
            "9z",
        ];
        agree(HOSTNAME_PATTERN, &hosts, hostname_ok);
        let envs = ["A", "_x", "A1", "1A", "", "A-B", "a b", "é"];
        agree(ENV_NAME_PATTERN, &envs, |n| {
            EnvVar {
                name: n.into(),
                value: String::new(),
            }
            .check()
            .is_ok()
        });
        let max = "x".repeat(MAX_SERVICE_NAME);
        let over = "x".repeat(MAX_SERVICE_NAME + 1);
        let dots = format!("..{}", "x".repeat(MAX_SERVICE_NAME - 2));
        let names = [
            "web", "a", ".", "..", "...", ".a", "..a", "a.", "a..b", "-", "_", "a/b", "", &max,
            &over, &dots, "a b", "é",
        ];
        agree(SERVICE_NAME_PATTERN, &names, is_service_name);
    }

    #[test]
    fn guest_path_patterns_agree_with_the_checks() {
        agree(GUEST_FILE_PATTERN, PATHS, file_ok);
        let re = Regex::new(GUEST_PATH_PATTERN).expect("pattern compiles");
        let long = format!("/{}", "a".repeat(GUEST_PATH_MAX_LEN - 1));
        let longer = format!("{long}a");
        for p in PATHS
            .iter()
            .copied()
            .chain([long.as_str(), longer.as_str()])
        {
            let by_schema =
                re.is_match(p) && (GUEST_PATH_MIN_LEN..=GUEST_PATH_MAX_LEN).contains(&p.len());
            assert_eq!(by_schema, is_guest_path(p), "{p:?}");
        }
    }

    #[test]
    fn link_and_token_ids_are_a_prefix_and_eight_hex_digits() {
        let re = Regex::new(TOKEN_ID_PATTERN).expect("compiles");
        assert!(re.is_match("hth_3f9a1c2b"));
        for bad in [
            "hth_3F9A1C2B",
            "hth_3f9a1c2",
            "hth_3f9a1c2b_",
            "hvl_3f9a1c2b",
        ] {
            assert!(!re.is_match(bad), "{bad}");
        }
        let re = Regex::new(VIEWER_LINK_ID_PATTERN).expect("compiles");
        assert!(re.is_match("hvl_3f9a1c2b") && !re.is_match("hth_3f9a1c2b"));
    }
}
