use std::path::{Path, PathBuf};

use super::*;

fn parse(text: &str) -> Result<LoadedRecipe, RecipeError> {
    LoadedRecipe::from_text(text, "test.toml", None)
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

const WEB: &str = r#"
name = "web"
base = { debian = "bookworm" }
packages = ["busybox", "libc6=2.36-9+deb12u7"]

[[users]]
name = "app"
uid = 1001
shell = "/bin/bash"
groups = ["users"]

[[files]]
path = "/srv/www/index.html"
content = "hello\n"
mode = 0o644
owner = "app:app"

[env]
GREETING = "hi"

[agent]
[[agent.services]]
name = "web"
argv = ["busybox", "httpd", "-f", "-p", "8080", "-h", "/srv/www"]
readiness = { kind = "tcp", port = 8080 }

[vm]
vcpus = 2
memory_mib = 512
"#;

#[test]
fn a_full_recipe_parses_and_its_agent_config_carries_the_env() {
    let r = parse(WEB).unwrap().recipe;
    assert_eq!(r.base, Base::Debian("bookworm".into()));
    assert_eq!(r.files[0].mode, Some(0o644));
    let config = r.agent_config();
    assert_eq!(config.services[0].name, "web");
    assert_eq!(config.env[0].name, "GREETING");
    assert_eq!(
        r.vm,
        Some(VmSize {
            vcpus: 2,
            memory_mib: 512
        })
    );
    assert!(r.needs_agent());
}

#[test]
fn built_in_recipes_parse_and_are_named_after_their_files() {
    for (name, _) in BUILTIN {
        let loaded = LoadedRecipe::builtin(name).unwrap().unwrap();
        assert_eq!(loaded.recipe.name, name);
    }
    let cli = LoadedRecipe::builtin("cli").unwrap().unwrap().recipe;
    assert_eq!(
        cli.vm,
        Some(VmSize {
            vcpus: 2,
            memory_mib: 2048
        })
    );
    assert!(cli
        .users
        .iter()
        .any(|u| u.name == "hearth" && u.uid == Some(1000)));
    let forbidden = ["gnome-keyring", "libsecret-1-0"];
    assert!(cli
        .packages
        .iter()
        .all(|p| !forbidden.contains(&p.as_str())));
    assert!(LoadedRecipe::builtin("nope").is_none());
}

#[test]
fn unknown_fields_are_named_with_what_is_allowed_and_the_file() {
    let e = err("name = \"x\"\nbase = \"minimal\"\npakages = []\n");
    assert!(e.contains("test.toml") && e.contains("pakages"), "{e}");
    assert!(e.contains("packages"), "the allowed fields are listed: {e}");
    let e = err("name = \"x\"\nbase = \"minimal\"\n[[users]]\nname = \"a\"\nhome = \"/h\"\n");
    assert!(e.contains("home") && e.contains("shell"), "{e}");
    let e = err("name = \"x\"\nbase = \"minimal\"\n[agent]\nservces = []\n");
    assert!(e.contains("servces"), "{e}");
}

#[test]
fn an_unknown_base_lists_the_bases() {
    let e = err("name = \"x\"\nbase = \"ubuntu\"\n");
    assert!(
        e.contains("ubuntu") && e.contains("minimal") && e.contains("debian"),
        "{e}"
    );
    let e = err("name = \"x\"\nbase = { debian = \"sid\" }\n");
    assert!(e.contains("sid") && e.contains("bookworm"), "{e}");
}

#[test]
fn bad_package_names_are_refused_before_anything_runs() {
    for bad in [
        "Busybox",
        "a",
        "-rf",
        "x;rm -rf /",
        "foo bar",
        "pkg=",
        "pkg=x y",
    ] {
        let text =
            format!("name = \"x\"\nbase = {{ debian = \"bookworm\" }}\npackages = [{bad:?}]\n");
        let e = err(&text);
        assert!(
            e.contains("packages") && e.contains("not a Debian package name"),
            "{bad}: {e}"
        );
    }
    for good in ["g++", "libc6", "python3.11", "lib32z1=1:1.2.13.dfsg-1"] {
        check_debian_package(good).unwrap();
    }
}

#[test]
fn npm_specs_follow_npms_grammar() {
    for good in [
        "@openai/codex",
        "left-pad",
        "@google/gemini-cli@0.1.2",
        "x@latest",
    ] {
        check_npm_spec(good).unwrap();
    }
    for bad in [
        "@scope", "Upper", "../x", ".hidden", "a b", "--global", "x@1 2", "@a/",
    ] {
        assert!(check_npm_spec(bad).is_err(), "{bad}");
    }
    let e = err("name = \"x\"\nbase = { debian = \"bookworm\" }\n[npm]\nnode = \"22\"\n");
    assert!(e.contains("npm.node") && e.contains("22.23.5"), "{e}");
}

#[test]
fn npm_and_packages_need_a_debian_base() {
    let e = err("name = \"x\"\nbase = \"minimal\"\npackages = [\"curl\"]\n");
    assert!(e.contains("Debian base"), "{e}");
}

#[test]
fn file_paths_must_be_absolute_and_normalised() {
    for bad in ["etc/x", "/etc/../x", "/etc//x", "/etc/x/", "/", "/./x"] {
        let text = format!(
            "name = \"x\"\nbase = \"minimal\"\n[[files]]\npath = {bad:?}\ncontent = \"\"\n"
        );
        let e = err(&text);
        assert!(
            e.contains("files") && e.contains("absolute normalised"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn a_file_has_exactly_one_of_content_and_source() {
    let both = "name = \"x\"\nbase = \"minimal\"\n[[files]]\npath = \"/a\"\ncontent = \"\"\nsource = \"a\"\n";
    assert!(err(both).contains("exactly one"));
    let none = "name = \"x\"\nbase = \"minimal\"\n[[files]]\npath = \"/a\"\n";
    assert!(err(none).contains("exactly one"));
    let escape =
        "name = \"x\"\nbase = \"minimal\"\n[[files]]\npath = \"/a\"\nsource = \"../secret\"\n";
    assert!(err(escape).contains("relative path inside"));
}

#[test]
fn sources_are_read_relative_to_the_recipe_and_count_in_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("r.toml");
    std::fs::write(dir.path().join("motd"), "one").unwrap();
    let text =
        "name = \"x\"\nbase = \"minimal\"\n[[files]]\npath = \"/etc/motd\"\nsource = \"motd\"\n";
    std::fs::write(&recipe, text).unwrap();
    let first = LoadedRecipe::from_file(&recipe).unwrap();
    assert_eq!(first.contents["/etc/motd"], b"one");
    std::fs::write(dir.path().join("motd"), "two").unwrap();
    let second = LoadedRecipe::from_file(&recipe).unwrap();
    assert_ne!(first.digest(), second.digest());
    // Comments and layout do not count.
    std::fs::write(&recipe, format!("# a comment\n{text}")).unwrap();
    assert_eq!(
        LoadedRecipe::from_file(&recipe).unwrap().digest(),
        second.digest()
    );
}

#[test]
fn users_are_checked_for_names_duplicates_and_uids() {
    let two =
        "name = \"x\"\nbase = \"minimal\"\n[[users]]\nname = \"a\"\n[[users]]\nname = \"a\"\n";
    assert!(err(two).contains("declared twice"));
    let root = "name = \"x\"\nbase = \"minimal\"\n[[users]]\nname = \"a\"\nuid = 0\n";
    assert!(err(root).contains("uid 0"));
    let bad = "name = \"x\"\nbase = \"minimal\"\n[[users]]\nname = \"Robert'); DROP\"\n";
    assert!(err(bad).contains("not a valid user"));
    let shell = "name = \"x\"\nbase = \"minimal\"\n[[users]]\nname = \"a\"\nshell = \"bash\"\n";
    assert!(err(shell).contains("shell"));
}

#[test]
fn image_names_env_agent_and_size_are_checked() {
    assert!(err("name = \"../x\"\nbase = \"minimal\"\n").contains("image name"));
    assert!(err("name = \"x\"\nbase = \"minimal\"\n[env]\n\"1X\" = \"v\"\n").contains("env"));
    let twice = "name = \"x\"\nbase = \"minimal\"\n[env]\nA = \"1\"\n[agent]\nenv = [{ name = \"A\", value = \"2\" }]\n";
    assert!(err(twice).contains("keep one"));
    let svc =
        "name = \"x\"\nbase = \"minimal\"\n[[agent.services]]\nname = \"a b\"\nargv = [\"x\"]\n";
    assert!(err(svc).contains("agent: service name"));
    let big = "name = \"x\"\nbase = \"minimal\"\n[vm]\nvcpus = 0\nmemory_mib = 256\n";
    assert!(err(big).contains("vm:"), "{}", err(big));
}

#[test]
fn a_recipe_file_cannot_take_a_built_in_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    std::fs::write(&path, "name = \"minimal\"\nbase = \"minimal\"\n").unwrap();
    let e = LoadedRecipe::from_file(&path).unwrap_err().to_string();
    assert!(e.contains("built-in recipe's name"), "{e}");
}

/// A recipe file `name` in `dir` with `body` after its name.
fn write_recipe(dir: &Path, file: &str, name: &str, body: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, format!("name = \"{name}\"\n{body}")).unwrap();
    path
}

const ON_BROWSER: &str = r##"
description = "the browser and a tool"
base = { recipe = "browser" }
packages = ["python3", "chromium", "xvfb=2:21.1.7-3+deb12u10"]

[[users]]
name = "tester"

[[files]]
path = "/etc/xdg/mimeapps.list"
content = "[Default Applications]\n"

[[files]]
path = "/usr/local/bin/tool"
content = "#!/bin/sh\n"
mode = 0o755

[env]
LANG = "en_GB.UTF-8"
TOOL = "1"

[[agent.services]]
name = "browser"
argv = ["/usr/local/bin/tool"]

[[agent.services]]
name = "tool"
argv = ["/usr/local/bin/tool"]
after = ["display"]
"##;

#[test]
fn a_recipe_on_a_built_in_inherits_it_and_wins_where_both_say() {
    let own = parse(&format!("name = \"on-browser\"\n{ON_BROWSER}")).unwrap();
    let browser = LoadedRecipe::builtin("browser").unwrap().unwrap();
    let (r, b) = (&own.recipe, &browser.recipe);
    assert_eq!(
        (r.name.as_str(), r.description.as_str()),
        ("on-browser", "the browser and a tool")
    );
    assert_eq!(r.base, Base::Debian("bookworm".into()));
    // Packages: the base's, in order, then the new one; a pin replaces.
    let xvfb = b.packages.iter().position(|p| p == "xvfb").unwrap();
    assert_eq!(r.packages.len(), b.packages.len() + 1);
    assert_eq!(r.packages[xvfb], "xvfb=2:21.1.7-3+deb12u10");
    assert_eq!(r.packages.last().unwrap(), "python3");
    assert_eq!(r.packages.iter().filter(|p| *p == "chromium").count(), 1);
    let users: Vec<&str> = r.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(users, ["hearth", "tester"]);
    // Files: the same path is the extending recipe's, the rest inherited.
    assert_eq!(r.files.len(), b.files.len() + 1);
    assert_eq!(
        own.contents["/etc/xdg/mimeapps.list"],
        b"[Default Applications]\n"
    );
    assert_eq!(
        own.contents["/usr/local/bin/hearth-browser"],
        browser.contents["/usr/local/bin/hearth-browser"]
    );
    assert_eq!(r.env["LANG"], "en_GB.UTF-8");
    assert_eq!(
        (r.env["DISPLAY"].as_str(), r.env["TOOL"].as_str()),
        (":0", "1")
    );
    let services: Vec<&str> = r
        .agent
        .as_ref()
        .unwrap()
        .services
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        services,
        ["display", "window-manager", "vnc", "browser", "tool"]
    );
    let replaced = &r.agent.as_ref().unwrap().services[3];
    assert_eq!(replaced.argv, ["/usr/local/bin/tool"]);
    assert_eq!(r.vm, b.vm);
    assert_eq!(own.bases.len(), 1);
    assert_eq!(own.bases[0].origin, "browser (built in)");
    assert_ne!(own.digest(), browser.digest());
    // The text kept is the recipe's own, as written.
    assert!(own.text.contains("base = { recipe = \"browser\" }"));
}

#[test]
fn a_recipe_file_extends_a_file_next_to_it_and_its_digest_follows_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let common = r#"base = { debian = "bookworm" }
packages = ["busybox"]
[[files]]
path = "/etc/motd"
source = "motd"
[vm]
vcpus = 1
memory_mib = 512
"#;
    let base = write_recipe(dir.path(), "common/base.toml", "common", common);
    std::fs::write(dir.path().join("common/motd"), "from the base's folder").unwrap();
    let own = "base = { recipe = \"common/base.toml\" }\npackages = [\"curl\"]\n[vm]\nvcpus = 2\nmemory_mib = 1024\n";
    let top = write_recipe(dir.path(), "top.toml", "top", own);
    let first = LoadedRecipe::from_file(&top).unwrap();
    assert_eq!(first.recipe.packages, ["busybox", "curl"]);
    assert_eq!(first.contents["/etc/motd"], b"from the base's folder");
    assert_eq!(
        first.recipe.vm,
        Some(VmSize {
            vcpus: 2,
            memory_mib: 1024
        })
    );
    assert_eq!(first.bases[0].origin, base.display().to_string());

    // Any change to the base changes the digest, even one that does not
    // change the merged recipe (its description), but not a comment.
    let digests = |body: &str| {
        write_recipe(dir.path(), "common/base.toml", "common", body);
        LoadedRecipe::from_file(&top).unwrap().digest()
    };
    let d0 = digests(common);
    assert_eq!(d0, first.digest());
    assert_eq!(digests(&format!("# a comment\n{common}")), d0);
    let d1 = digests(&format!("description = \"changed\"\n{common}"));
    let d2 = digests(&common.replace("busybox", "busybox-static"));
    assert!(d0 != d1 && d1 != d2 && d0 != d2);
    std::fs::write(dir.path().join("common/motd"), "changed").unwrap();
    assert_ne!(digests(common), d0);
}

#[test]
fn cycles_and_chains_too_deep_are_refused_naming_the_recipes() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_recipe(
        dir.path(),
        "a.toml",
        "a",
        "base = { recipe = \"b.toml\" }\n",
    );
    write_recipe(
        dir.path(),
        "b.toml",
        "b",
        "base = { recipe = \"./a.toml\" }\n",
    );
    let e = format!(
        "{:#}",
        anyhow_chain(&LoadedRecipe::from_file(&a).unwrap_err())
    );
    assert!(
        e.contains("in a circle") && e.contains("a.toml -> ") && e.contains("b.toml"),
        "{e}"
    );
    let own = write_recipe(
        dir.path(),
        "own.toml",
        "own",
        "base = { recipe = \"own.toml\" }\n",
    );
    let e = anyhow_chain(&LoadedRecipe::from_file(&own).unwrap_err());
    assert!(e.contains("in a circle"), "{e}");

    for i in 0..=MAX_BASE_DEPTH + 1 {
        let body = match i {
            0 => "base = \"minimal\"\n".to_owned(),
            _ => format!("base = {{ recipe = \"r{}.toml\" }}\n", i - 1),
        };
        write_recipe(dir.path(), &format!("r{i}.toml"), &format!("r{i}"), &body);
    }
    let deepest_ok = dir.path().join(format!("r{MAX_BASE_DEPTH}.toml"));
    let loaded = LoadedRecipe::from_file(&deepest_ok).unwrap();
    assert_eq!(loaded.bases.len(), MAX_BASE_DEPTH);
    let too_deep = dir.path().join(format!("r{}.toml", MAX_BASE_DEPTH + 1));
    let e = anyhow_chain(&LoadedRecipe::from_file(&too_deep).unwrap_err());
    assert!(
        e.contains(&format!("more than {MAX_BASE_DEPTH} recipes deep")),
        "{e}"
    );
}

/// The error and its sources, `: `-separated, as the CLI prints them.
fn anyhow_chain(e: &RecipeError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[test]
fn bad_base_references_say_what_to_write() {
    let e = err("name = \"x\"\nbase = { recipe = \"browsr\" }\n");
    assert!(
        e.contains("browsr") && e.contains("minimal, debian, cli, browser"),
        "{e}"
    );
    let e = err("name = \"x\"\nbase = { recipe = \"Not A Name\" }\n");
    assert!(e.contains("neither a built-in recipe"), "{e}");
    for outside in ["../x.toml", "/etc/x.toml", "a/../../x.toml"] {
        let e = err(&format!(
            "name = \"x\"\nbase = {{ recipe = {outside:?} }}\n"
        ));
        assert!(e.contains("inside the recipe's folder"), "{outside}: {e}");
    }
    // Text with no folder can only extend a built-in.
    let e = err("name = \"x\"\nbase = { recipe = \"x.toml\" }\n");
    assert!(e.contains("only extend a built-in"), "{e}");
    // A missing base file is named.
    let dir = tempfile::tempdir().unwrap();
    let top = write_recipe(
        dir.path(),
        "top.toml",
        "top",
        "base = { recipe = \"gone.toml\" }\n",
    );
    let e = anyhow_chain(&LoadedRecipe::from_file(&top).unwrap_err());
    assert!(
        e.contains("gone.toml") && e.contains("could not read"),
        "{e}"
    );
}

#[test]
fn a_bad_base_is_named_and_the_merged_recipe_is_checked_whole() {
    let dir = tempfile::tempdir().unwrap();
    write_recipe(
        dir.path(),
        "typo.toml",
        "typo",
        "base = \"minimal\"\npakages = []\n",
    );
    let top = write_recipe(
        dir.path(),
        "top.toml",
        "top",
        "base = { recipe = \"typo.toml\" }\n",
    );
    let e = anyhow_chain(&LoadedRecipe::from_file(&top).unwrap_err());
    assert!(
        e.contains("top.toml: its base \"typo.toml\" cannot be used"),
        "{e}"
    );
    assert!(
        e.contains("typo.toml is not valid") && e.contains("pakages"),
        "{e}"
    );
    // Packages need a Debian base, also when it comes from the base recipe.
    let e = err("name = \"x\"\nbase = { recipe = \"minimal\" }\npackages = [\"curl\"]\n");
    assert!(
        e.contains("laid over its base minimal (built in)") && e.contains("Debian base"),
        "{e}"
    );
    // A variable in `env` of one and `agent.env` of the other.
    let e = err(
        "name = \"x\"\nbase = { recipe = \"browser\" }\n[agent]\nenv = [{ name = \"DISPLAY\", value = \":1\" }]\n",
    );
    assert!(e.contains("DISPLAY") && e.contains("keep one"), "{e}");
}
