//! The Debian mirror to build from, taken from the host's own apt sources
//! at run time, so hearth builds from whatever mirror (or proxy, or local
//! copy) this host is configured for and names no mirror itself.
//!
//! Both formats are read: one-line `sources.list` entries and deb822
//! `.sources` stanzas. When the host has no entry for the suite, no mirror
//! is passed and mmdebstrap uses its own default.

use std::path::Path;

/// One `deb` entry of the host: a repository URI serving one suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    pub uri: String,
    pub suite: String,
    /// The `signed-by` keyring path, when the entry names one.
    pub signed_by: Option<String>,
}

const SOURCES_LIST: &str = "/etc/apt/sources.list";
const SOURCES_DIR: &str = "/etc/apt/sources.list.d";

/// Every `deb` entry configured on this host (unreadable files are skipped:
/// a missing mirror falls back to mmdebstrap's default).
pub fn host_sources() -> Vec<AptSource> {
    let mut sources = read(Path::new(SOURCES_LIST));
    let mut files: Vec<_> = std::fs::read_dir(SOURCES_DIR)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for file in files {
        sources.extend(read(&file));
    }
    sources
}

fn read(path: &Path) -> Vec<AptSource> {
    let parse = match path.extension().and_then(|e| e.to_str()) {
        Some("sources") => parse_deb822,
        Some("list") => parse_one_line,
        _ if path == Path::new(SOURCES_LIST) => parse_one_line,
        _ => return Vec::new(),
    };
    std::fs::read_to_string(path)
        .map(|text| parse(&text))
        .unwrap_or_default()
}

/// The mirror arguments for mmdebstrap: one `deb URI SUITE main` line per
/// host entry for `suite`, `suite-updates` and `suite-security`. Empty when
/// the host has no entry for `suite` itself.
pub fn mirror_lines(sources: &[AptSource], suite: &str) -> Vec<String> {
    if !sources.iter().any(|s| s.suite == suite) {
        return Vec::new();
    }
    let wanted = [
        suite.to_owned(),
        format!("{suite}-updates"),
        format!("{suite}-security"),
    ];
    let mut lines: Vec<String> = Vec::new();
    for s in sources.iter().filter(|s| wanted.contains(&s.suite)) {
        let line = match &s.signed_by {
            Some(key) => format!("deb [signed-by={key}] {} {} main", s.uri, s.suite),
            None => format!("deb {} {} main", s.uri, s.suite),
        };
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    lines
}

/// `deb [options] URI SUITE COMPONENT...` lines.
pub fn parse_one_line(text: &str) -> Vec<AptSource> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<AptSource> {
    let line = line.split('#').next()?.trim();
    let rest = line.strip_prefix("deb")?;
    if !rest.starts_with([' ', '\t']) {
        return None; // deb-src, or not an entry
    }
    let rest = rest.trim_start();
    let (options, rest) = match rest.strip_prefix('[') {
        Some(r) => r.split_once(']')?,
        None => ("", rest),
    };
    let mut words = rest.split_whitespace();
    let uri = words.next()?.to_owned();
    let suite = words.next()?.to_owned();
    let signed_by = options
        .split_whitespace()
        .find_map(|o| o.strip_prefix("signed-by="))
        .map(str::to_owned);
    Some(AptSource {
        uri,
        suite,
        signed_by,
    })
}

/// deb822 stanzas: `Types:`, `URIs:`, `Suites:`, `Signed-By:`, `Enabled:`.
pub fn parse_deb822(text: &str) -> Vec<AptSource> {
    stanzas(text)
        .iter()
        .flat_map(|s| stanza_sources(s))
        .collect()
}

/// Field name (lowercased) and value of each stanza; continuation lines
/// (starting with white space) extend the previous field.
fn stanzas(text: &str) -> Vec<Vec<(String, String)>> {
    let mut all = vec![Vec::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            all.push(Vec::new());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let current: &mut Vec<(String, String)> = all.last_mut().expect("never empty");
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
        } else if let Some((key, value)) = line.split_once(':') {
            current.push((key.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    all.retain(|s| !s.is_empty());
    all
}

fn stanza_sources(stanza: &[(String, String)]) -> Vec<AptSource> {
    let field = |name: &str| {
        stanza
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let enabled = field("enabled").is_none_or(|v| !v.eq_ignore_ascii_case("no"));
    let is_deb = field("types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
    if !enabled || !is_deb {
        return Vec::new();
    }
    // An inline key (several lines) cannot be passed on: keep paths only.
    let signed_by = field("signed-by")
        .filter(|v| !v.contains('\n') && v.starts_with('/'))
        .map(str::to_owned);
    let uris = field("uris").unwrap_or_default();
    let suites = field("suites").unwrap_or_default();
    let mut out = Vec::new();
    for uri in uris.split_whitespace() {
        for suite in suites.split_whitespace() {
            out.push(AptSource {
                uri: uri.to_owned(),
                suite: suite.to_owned(),
                signed_by: signed_by.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "\
Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Enabled: no

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
";

    fn src(uri: &str, suite: &str, key: Option<&str>) -> AptSource {
        AptSource {
            uri: uri.into(),
            suite: suite.into(),
            signed_by: key.map(Into::into),
        }
    }

    #[test]
    fn deb822_stanzas_expand_uris_and_suites_and_skip_disabled_and_src() {
        let key = Some("/usr/share/keyrings/debian-archive-keyring.gpg");
        assert_eq!(
            parse_deb822(DEB822),
            vec![
                src("http://mirror.example/debian", "bookworm", key),
                src("http://mirror.example/debian", "bookworm-updates", key),
                src(
                    "http://security.example/debian-security",
                    "bookworm-security",
                    None
                ),
            ]
        );
    }

    #[test]
    fn one_line_entries_with_options_and_comments() {
        let text = "\
# deb http://commented.example/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://a.example/debian bookworm main contrib
deb-src http://a.example/debian bookworm main
deb http://b.example/debian bookworm-updates main # trailing
";
        assert_eq!(
            parse_one_line(text),
            vec![
                src("http://a.example/debian", "bookworm", Some("/k.gpg")),
                src("http://b.example/debian", "bookworm-updates", None),
            ]
        );
    }

    #[test]
    fn mirror_lines_cover_the_suite_its_updates_and_security() {
        let sources = parse_deb822(DEB822);
        assert_eq!(
            mirror_lines(&sources, "bookworm"),
            vec![
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
                 http://mirror.example/debian bookworm main",
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
                 http://mirror.example/debian bookworm-updates main",
                "deb http://security.example/debian-security bookworm-security main",
            ]
        );
    }

    #[test]
    fn no_entry_for_the_suite_means_no_mirror() {
        let sources = vec![src("http://x.example/debian", "trixie", None)];
        assert!(mirror_lines(&sources, "bookworm").is_empty());
    }
}
