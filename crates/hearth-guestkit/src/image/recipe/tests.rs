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
