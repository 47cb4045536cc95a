//! Parsing what a request carries in its path and query into typed values,
//! by hand and strictly: a value is accepted only in its plain form, and
//! anything else gets a 400 that names the accepted range. The old
//! console-log endpoint put `lines` into a shell command; here it never
//! becomes anything but a number.

use std::collections::HashMap;

use hearth_control::controller::MAX_LINES;
use hearth_types::guest::{is_service_name, service_name_rule};
use hearth_types::VmId;

use crate::error::Problem;

/// Lines of a log a request gets when it does not say.
pub(crate) const DEFAULT_LINES: usize = 100;

/// The query of a log request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogQuery {
    pub lines: usize,
    pub follow: bool,
}

/// Parses `lines=N` and, when `can_follow`, `follow=BOOL` from the raw
/// query string, with [`query_pairs`] like every other route.
pub(crate) fn log_query(raw: Option<&str>, can_follow: bool) -> Result<LogQuery, Problem> {
    let known: &[&str] = if can_follow {
        &["lines", "follow"]
    } else {
        &["lines"]
    };
    let pairs = query_pairs(raw, known)?;
    Ok(LogQuery {
        lines: line_count(&pairs, "lines")?,
        follow: flag(&pairs, "follow")?,
    })
}

/// The line count under `key` (`lines`, or `tail` for service logs);
/// [`DEFAULT_LINES`] when absent.
pub(crate) fn line_count(pairs: &Pairs, key: &str) -> Result<usize, Problem> {
    pairs.get(key).map_or(Ok(DEFAULT_LINES), |v| parse_lines(v))
}

/// A whole number from 1 to [`MAX_LINES`], in plain decimal digits.
pub(crate) fn parse_lines(value: &str) -> Result<usize, Problem> {
    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    // Six digits hold every valid value; longer ones need no parsing.
    let n = match value.parse::<usize>() {
        Ok(n) if digits && value.len() <= 6 => Some(n),
        _ => None,
    };
    match n {
        Some(n) if (1..=MAX_LINES).contains(&n) => Ok(n),
        _ => Err(Problem::bad_request(
            "invalid_lines",
            format!(
                "lines is {}; give a whole number between 1 and {MAX_LINES} (default {DEFAULT_LINES})",
                shown(value)
            ),
        )),
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, Problem> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Problem::bad_request(
            "invalid_request",
            format!("{key} is {}; give `true` or `false`", shown(value)),
        )),
    }
}

/// A VM id from a path segment (already percent-decoded).
pub(crate) fn vm_id(raw: &str) -> Result<VmId, Problem> {
    raw.parse::<VmId>().map_err(|_| {
        Problem::bad_request(
            "invalid_id",
            format!(
                "VM id {} is malformed: ids look like `vm-3f9a1c2b7d4e` \
                 (`vm-`, then lowercase letters, digits and `-`, at most 64 characters)",
                shown(raw)
            ),
        )
    })
}

/// Client input quoted in a message: escaped and cut short.
fn shown(value: &str) -> String {
    const MAX: usize = 40;
    if value.chars().count() > MAX {
        let head: String = value.chars().take(MAX).collect();
        format!("{head:?}...")
    } else {
        format!("{value:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_accepts_only_plain_numbers_in_range() {
        assert_eq!(parse_lines("1"), Ok(1));
        assert_eq!(parse_lines("10000"), Ok(10_000));
        assert_eq!(parse_lines("007"), Ok(7));
        for bad in [
            "",
            "0",
            "10001",
            "-5",
            "+5",
            "1e3",
            "abc",
            " 5",
            "5;rm -rf /",
            "99999999999999999999",
            "٣",
        ] {
            let p = parse_lines(bad).unwrap_err();
            assert_eq!(p.code, "invalid_lines", "{bad:?}");
            assert!(p.message.contains("between 1 and 10000"), "{}", p.message);
        }
    }

    #[test]
    fn log_query_defaults_and_refuses_unknown_or_repeated_parameters() {
        let q = log_query(None, true).unwrap();
        assert_eq!(
            q,
            LogQuery {
                lines: 100,
                follow: false
            }
        );
        let q = log_query(Some("lines=5&follow=true"), true).unwrap();
        assert_eq!(
            q,
            LogQuery {
                lines: 5,
                follow: true
            }
        );
        assert_eq!(
            log_query(Some("lines=abc"), true).unwrap_err().code,
            "invalid_lines"
        );
        for bad in ["lines=1&lines=2", "tail=5", "follow=yes", "lines"] {
            assert!(log_query(Some(bad), true).is_err(), "{bad:?}");
        }
        let p = log_query(Some("follow=true"), false).unwrap_err();
        assert!(p.message.contains("\"follow\"") && p.message.contains("takes `lines`"));
        // Percent-decoded like every other route's query.
        assert_eq!(log_query(Some("lines=%31%30"), false).unwrap().lines, 10);
        assert_eq!(log_query(Some("%6Cines=7"), false).unwrap().lines, 7);
        let q = query_pairs(Some("tail=%31%30"), &["tail"]).unwrap();
        assert_eq!(line_count(&q, "tail"), Ok(10));
        let q = query_pairs(Some("tail=%2B5"), &["tail"]).unwrap();
        assert_eq!(line_count(&q, "tail").unwrap_err().code, "invalid_lines");
    }

    #[test]
    fn service_names_in_paths_follow_the_create_rule() {
        assert_eq!(service_name("web.1"), Ok("web.1"));
        let long = "s".repeat(500);
        for bad in ["../../etc/passwd", "a\0b", "a\nb", "..", "", long.as_str()] {
            let p = service_name(bad).unwrap_err();
            assert_eq!(p.code, "invalid_request", "{bad:?}");
            assert!(p.message.contains("1-64 letters"), "{}", p.message);
            assert!(p.message.len() < 300, "{}", p.message);
        }
    }

    #[test]
    fn path_like_ids_are_refused_and_long_input_is_cut() {
        for bad in ["../x", "VM-1", "x", "vm-a/b", ""] {
            assert_eq!(vm_id(bad).unwrap_err().code, "invalid_id", "{bad:?}");
        }
        let p = vm_id(&"a".repeat(5000)).unwrap_err();
        assert!(p.message.len() < 300, "{}", p.message);
        assert_eq!(vm_id("vm-3f9a").unwrap().as_str(), "vm-3f9a");
    }
}

/// A query's parameters by name, each percent-decoded.
pub(crate) type Pairs = HashMap<String, String>;

/// The one query parser of the API: the pairs of `raw` whose keys are all
/// in `known`, each given once; keys and values percent-decoded (so
/// `lines=%31%30` is `lines=10` on every route).
pub(crate) fn query_pairs(raw: Option<&str>, known: &[&str]) -> Result<Pairs, Problem> {
    let mut pairs = HashMap::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decoded("a parameter name", key)?;
        if !known.contains(&key.as_str()) {
            let takes: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
            let message = format!(
                "unknown query parameter {}: this route takes {}",
                shown(&key),
                takes.join(", ")
            );
            return Err(Problem::bad_request("invalid_request", message));
        }
        let value = decoded(&format!("`{key}`"), value)?;
        if pairs.insert(key.clone(), value).is_some() {
            let message = format!("`{key}` is given twice: give it once");
            return Err(Problem::bad_request("invalid_request", message));
        }
    }
    Ok(pairs)
}

fn decoded(what: &str, raw: &str) -> Result<String, Problem> {
    percent_decode(raw).ok_or_else(|| {
        Problem::bad_request(
            "invalid_request",
            format!("{what} is not valid percent-encoded UTF-8: encode it with %XX escapes"),
        )
    })
}

/// `true`/`false` of an optional flag; absent is false.
pub(crate) fn flag(pairs: &Pairs, key: &str) -> Result<bool, Problem> {
    pairs.get(key).map_or(Ok(false), |v| parse_bool(key, v))
}

/// A service's name from a path segment (already percent-decoded), by the
/// rule its name had at VM create.
pub(crate) fn service_name(raw: &str) -> Result<&str, Problem> {
    if is_service_name(raw) {
        return Ok(raw);
    }
    Err(Problem::bad_request(
        "invalid_request",
        format!(
            "service name {} is not valid: {}, as at VM create",
            shown(raw),
            service_name_rule()
        ),
    ))
}

/// `%XX` escapes and `+` (a space) decoded; `None` for a bad escape or
/// bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A guest path for a file transfer: absolute, without `..` or NUL.
pub(crate) fn guest_path(pairs: &Pairs) -> Result<String, Problem> {
    let Some(path) = pairs.get("path") else {
        return Err(Problem::bad_request(
            "invalid_request",
            "no `path`: give the file's absolute path in the guest, e.g. ?path=/etc/hostname",
        ));
    };
    if !hearth_types::limits::is_guest_path(path) {
        return Err(Problem::bad_request(
            "invalid_request",
            format!(
                "path {} is not usable: give an absolute path in the guest without `..`",
                shown(path)
            ),
        ));
    }
    Ok(path.clone())
}

#[cfg(test)]
mod query_tests {
    use super::*;

    #[test]
    fn queries_are_decoded_and_checked() {
        let p = query_pairs(Some("path=%2Ftmp%2Fa+b&stream=true"), &["path", "stream"]).unwrap();
        assert_eq!(p["path"], "/tmp/a b");
        assert!(flag(&p, "stream").unwrap());
        assert!(query_pairs(Some("x=1"), &["path"]).is_err());
        assert!(query_pairs(Some("path=%zz"), &["path"]).is_err());
        assert!(query_pairs(Some("path=/a&path=/b"), &["path"]).is_err());
        for bad in ["path=relative", "path=/a/../etc", "path=/"] {
            let p = query_pairs(Some(bad), &["path"]).unwrap();
            assert!(guest_path(&p).is_err(), "{bad}");
        }
    }
}
