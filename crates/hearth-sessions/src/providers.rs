//! The providers catalogue: what a login session of each AI CLI tool needs,
//! as data. hearth carries Claude Code, Codex CLI and Gemini CLI
//! (`providers/*.toml` in the repository, compiled in); an operator adds or
//! replaces entries with files of the same form in a directory
//! (`hearth serve --providers DIR`). `docs/sessions.md` describes the form.

use std::collections::BTreeMap;
use std::path::Path;

use hearth_egress::DomainPattern;
use hearth_types::guest::{CaptureFile, CaptureSpec, EnvVar};
use hearth_types::session::ProviderInfo;
use hearth_types::ProviderId;
use serde::Deserialize;

/// The entries hearth carries: (file name, text).
const BUILTIN: &[(&str, &str)] = &[
    (
        "claude.toml",
        include_str!("../../../providers/claude.toml"),
    ),
    ("codex.toml", include_str!("../../../providers/codex.toml")),
    (
        "gemini.toml",
        include_str!("../../../providers/gemini.toml"),
    ),
];

/// How a tool opens a browser, so the VM's own one comes up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrowserOpener {
    /// It runs `$BROWSER URL` (Rust's `webbrowser`, Python's
    /// `webbrowser`): `BROWSER` is set to the VM's browser.
    BrowserEnv,
    /// It runs `xdg-open URL` (Node's `open`): the image's default handler
    /// for http(s) is the VM's browser, and `DISPLAY` is set.
    XdgOpen,
}

/// A file written in the user's home before the login starts (a setting
/// that picks the login method, say). Not secret.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupFile {
    /// Relative to the user's home.
    pub path: String,
    pub content: String,
    #[serde(default)]
    pub mode: Option<u32>,
}

/// Which files make up the credential, and when a capture is complete.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureRule {
    /// How long the set must stay unchanged: tools rewrite their files in
    /// place, and a half-written file is no credential.
    #[serde(default = "default_stable_ms")]
    pub stable_ms: u64,
    pub files: Vec<CapturedPath>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapturedPath {
    /// Relative to the user's home.
    pub path: String,
    /// JSON pointers that must hold a value for the file to count.
    #[serde(default)]
    pub required_keys: Vec<String>,
}

fn default_stable_ms() -> u64 {
    1500
}

fn default_image() -> String {
    "login".to_owned()
}

fn default_login_after() -> Vec<String> {
    vec!["browser".to_owned()]
}

fn default_user() -> String {
    "hearth".to_owned()
}

/// One provider: how its login runs in a browser VM and what it leaves.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub name: ProviderId,
    pub description: String,
    /// The image the browser VM boots: it has the tool and a browser.
    #[serde(default = "default_image")]
    pub image: String,
    /// The login command (no shell: each word is one argument).
    pub login: Vec<String>,
    /// Who runs it; the credential is in this user's home.
    #[serde(default = "default_user")]
    pub user: String,
    pub opens_browser_with: BrowserOpener,
    /// More environment for the login command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables removed from the login command's environment (some
    /// tools refuse to open a browser when `CI` or `NO_BROWSER` is set).
    #[serde(default)]
    pub unset_env: Vec<String>,
    #[serde(default)]
    pub setup_files: Vec<SetupFile>,
    /// The image's services the login waits for (default: its browser).
    #[serde(default = "default_login_after")]
    pub login_after: Vec<String>,
    /// The domains the login may reach through the egress proxy
    /// (`name` or `*.name`); a tenant's settings may add more.
    pub domains: Vec<String>,
    pub capture: CaptureRule,
    /// `builtin`, or the file it came from.
    #[serde(skip)]
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderFileError {
    #[error("could not read the providers in {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("provider file {path} is not valid: {why} (see docs/sessions.md)")]
    Invalid { path: String, why: String },
}

impl Provider {
    /// Parses one entry; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Provider, ProviderFileError> {
        let invalid = |why: String| ProviderFileError::Invalid {
            path: source.to_owned(),
            why,
        };
        let mut provider: Provider = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        provider.check().map_err(invalid)?;
        provider.source = source.to_owned();
        Ok(provider)
    }

    /// What is wrong with the entry, naming the field.
    pub fn check(&self) -> Result<(), String> {
        if self.login.is_empty() || self.login.iter().any(|w| w.is_empty() || w.contains('\0')) {
            return Err("`login` must be a non-empty list of non-empty words".into());
        }
        if self.domains.is_empty() {
            return Err("`domains` is empty: name the domains the login reaches".into());
        }
        for d in &self.domains {
            DomainPattern::parse(d).map_err(|e| format!("`domains`: {e}"))?;
        }
        for name in self.env.keys().chain(&self.unset_env) {
            let var = EnvVar {
                name: name.clone(),
                value: String::new(),
            };
            var.check().map_err(|e| format!("`env`/`unset_env`: {e}"))?;
        }
        for f in &self.setup_files {
            relative(&f.path).map_err(|e| format!("`setup_files`: {e}"))?;
        }
        for f in &self.capture.files {
            relative(&f.path).map_err(|e| format!("`capture.files`: {e}"))?;
        }
        self.capture_spec()
            .check()
            .map_err(|e| format!("`capture`: {e}"))?;
        Ok(())
    }

    /// The user's home in the VM.
    pub fn home(&self) -> String {
        match self.user.as_str() {
            "root" => "/root".to_owned(),
            user => format!("/home/{user}"),
        }
    }

    /// What the agent watches: the credential's files, by absolute path.
    pub fn capture_spec(&self) -> CaptureSpec {
        let home = self.home();
        CaptureSpec {
            files: self
                .capture
                .files
                .iter()
                .map(|f| CaptureFile {
                    path: format!("{home}/{}", f.path),
                    required_keys: f.required_keys.clone(),
                })
                .collect(),
            stable_ms: self.capture.stable_ms,
        }
    }

    pub fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: self.name.clone(),
            description: self.description.clone(),
            image: self.image.clone(),
            login: self.login.clone(),
            files: self.capture.files.iter().map(|f| f.path.clone()).collect(),
            domains: self.domains.clone(),
            source: self.source.clone(),
        }
    }
}

/// A path relative to the home, without `..`.
fn relative(path: &str) -> Result<(), String> {
    let ok = !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\0')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "path {path:?} must be relative to the user's home, without `.` or `..` (e.g. .codex/auth.json)"
        ))
    }
}

/// The providers a server offers, by name.
#[derive(Clone, Debug, Default)]
pub struct Catalogue {
    by_name: BTreeMap<ProviderId, Provider>,
}

impl Catalogue {
    /// hearth's own entries.
    pub fn builtin() -> Catalogue {
        let mut catalogue = Catalogue::default();
        for (file, text) in BUILTIN {
            let provider = Provider::parse(text, &format!("builtin {file}"))
                .expect("the built-in provider files are checked by the tests");
            catalogue.add(provider);
        }
        catalogue
    }

    /// The built-in entries and every `*.toml` in `dir`; an entry with a
    /// built-in's name replaces it.
    pub fn with_dir(dir: &Path) -> Result<Catalogue, ProviderFileError> {
        let read_error = |source| ProviderFileError::Read {
            path: dir.display().to_string(),
            source,
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(read_error)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let mut catalogue = Catalogue::builtin();
        for path in files {
            let text =
                std::fs::read_to_string(&path).map_err(|source| ProviderFileError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
            catalogue.add(Provider::parse(&text, &path.display().to_string())?);
        }
        Ok(catalogue)
    }

    pub fn add(&mut self, provider: Provider) {
        self.by_name.insert(provider.name.clone(), provider);
    }

    pub fn get(&self, name: &ProviderId) -> Option<&Provider> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().map(|n| n.to_string()).collect()
    }

    pub fn list(&self) -> impl Iterator<Item = &Provider> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_entries_parse_and_name_their_files() {
        let catalogue = Catalogue::builtin();
        assert_eq!(catalogue.names(), ["claude", "codex", "gemini"]);
        let codex = catalogue.get(&"codex".parse().unwrap()).unwrap();
        assert_eq!(
            codex.capture_spec().files[0].path,
            "/home/hearth/.codex/auth.json"
        );
        assert_eq!(codex.opens_browser_with, BrowserOpener::BrowserEnv);
        // A tool may need more than its token file to count as logged in.
        let claude = catalogue.get(&"claude".parse().unwrap()).unwrap();
        assert_eq!(claude.capture.files.len(), 2);
        let gemini = catalogue.get(&"gemini".parse().unwrap()).unwrap();
        assert!(gemini.unset_env.contains(&"NO_BROWSER".to_owned()));
    }

    #[test]
    fn bad_entries_name_the_field_and_the_file() {
        let good = include_str!("../../../providers/codex.toml");
        for (bad, field) in [
            (
                good.replace(r#"login = ["codex", "login"]"#, "login = []"),
                "`login`",
            ),
            (
                good.replace(r#"path = ".codex/auth.json""#, r#"path = "../etc/shadow""#),
                "relative",
            ),
            (
                good.replace(r#""auth.openai.com""#, r#""auth openai""#),
                "`domains`",
            ),
            (
                good.replace(
                    "opens_browser_with = \"browser-env\"",
                    "opens_browser_with = \"carrier-pigeon\"",
                ),
                "opens_browser_with",
            ),
            (format!("{good}\nsurprise = 1\n"), "surprise"),
        ] {
            let err = Provider::parse(&bad, "/etc/hearth/providers/x.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{err}");
            assert!(err.contains("/etc/hearth/providers/x.toml"), "{err}");
        }
    }

    #[test]
    fn a_directory_adds_entries_and_replaces_builtins_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mine = include_str!("../../../providers/codex.toml")
            .replace("name = \"codex\"", "name = \"fake-codex\"")
            .replace("image = \"login\"", "image = \"login-test\"");
        std::fs::write(dir.path().join("fake.toml"), mine).unwrap();
        std::fs::write(dir.path().join("README"), "not an entry").unwrap();
        let catalogue = Catalogue::with_dir(dir.path()).unwrap();
        let fake = catalogue.get(&"fake-codex".parse().unwrap()).unwrap();
        assert_eq!(fake.image, "login-test");
        assert!(fake.source.ends_with("fake.toml"));
        assert_eq!(catalogue.names().len(), 4);
        let err = Catalogue::with_dir(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
