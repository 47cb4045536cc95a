//! How a recipe that extends another (`base = { recipe = "browser" }`)
//! combines with it: the extending recipe adds to the base's lists and
//! wins wherever both name the same thing (a file's path, a user's,
//! variable's, service's or package's name). Pure functions of two parsed
//! recipes; the loader in `recipe.rs` finds the base and checks the
//! result as a whole.

use hearth_types::guest::GuestConfig;

use super::{Npm, Recipe};

/// `own` on top of `base`: name and description are `own`'s, the base is
/// `base`'s; lists are the base's followed by `own`'s, an entry of `own`
/// replacing the base's entry with the same key where that one stood.
pub(super) fn extend(base: Recipe, own: Recipe) -> Recipe {
    let mut env = base.env;
    env.extend(own.env);
    Recipe {
        name: own.name,
        description: own.description,
        base: base.base,
        packages: overlay(base.packages, own.packages, |p| debian_name(p).to_owned()),
        npm: merge_npm(base.npm, own.npm),
        users: overlay(base.users, own.users, |u| u.name.clone()),
        files: overlay(base.files, own.files, |f| f.path.clone()),
        env,
        agent: merge_agent(base.agent, own.agent),
        vm: own.vm.or(base.vm),
    }
}

/// `base` then `own`; an item of `own` whose key is already there takes
/// that place instead of being appended. Duplicates within `own` are left
/// for the recipe's own check to name.
fn overlay<T, K: PartialEq>(mut base: Vec<T>, own: Vec<T>, key: impl Fn(&T) -> K) -> Vec<T> {
    let inherited = base.len();
    for item in own {
        let k = key(&item);
        match base[..inherited].iter().position(|b| key(b) == k) {
            Some(i) => base[i] = item,
            None => base.push(item),
        }
    }
    base
}

/// A Debian spec's package name: `python3=3.11.2-1` is `python3`.
fn debian_name(spec: &str) -> &str {
    spec.split_once('=').map_or(spec, |(name, _)| name)
}

/// An npm spec's package name: `@scope/name@1.2` is `@scope/name`.
fn npm_name(spec: &str) -> &str {
    let from = usize::from(spec.starts_with('@'));
    match spec[from..].find('@') {
        Some(at) => &spec[..from + at],
        None => spec,
    }
}

fn merge_npm(base: Option<Npm>, own: Option<Npm>) -> Option<Npm> {
    match (base, own) {
        (Some(base), Some(own)) => Some(Npm {
            node: own.node,
            packages: overlay(base.packages, own.packages, |p| npm_name(p).to_owned()),
        }),
        (base, own) => own.or(base),
    }
}

fn merge_agent(base: Option<GuestConfig>, own: Option<GuestConfig>) -> Option<GuestConfig> {
    match (base, own) {
        (Some(base), Some(own)) => Some(GuestConfig {
            hostname: own.hostname.or(base.hostname),
            env: overlay(base.env, own.env, |v| v.name.clone()),
            files: overlay(base.files, own.files, |f| f.path.clone()),
            services: overlay(base.services, own.services, |s| s.name.clone()),
            network: own.network.or(base.network),
        }),
        (base, own) => own.or(base),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_entries_replace_in_place_and_new_ones_are_appended() {
        let merged = overlay(vec![("a", 1), ("b", 2)], vec![("b", 20), ("c", 3)], |p| p.0);
        assert_eq!(merged, [("a", 1), ("b", 20), ("c", 3)]);
    }

    #[test]
    fn package_names_ignore_versions() {
        assert_eq!(debian_name("python3=3.11.2-1"), "python3");
        assert_eq!(debian_name("python3"), "python3");
        assert_eq!(npm_name("@openai/codex@0.1.0"), "@openai/codex");
        assert_eq!(npm_name("@openai/codex"), "@openai/codex");
        assert_eq!(npm_name("left-pad@latest"), "left-pad");
        let merged = overlay(
            vec!["curl".to_owned(), "python3".to_owned()],
            vec![
                "python3=3.11.2-1".to_owned(),
                "curl".to_owned(),
                "git".to_owned(),
            ],
            |p| debian_name(p).to_owned(),
        );
        assert_eq!(merged, ["curl", "python3=3.11.2-1", "git"]);
    }
}
