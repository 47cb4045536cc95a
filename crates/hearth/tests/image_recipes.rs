//! `hearth image build FILE|show|rm` on recipes that go wrong: an unknown
//! field is named with the file and the allowed fields before anything
//! runs; a package the archive (or the npm registry) does not have fails
//! the packages (npm) step with its name, and the build's log is kept
//! where the error says; removing an image refuses while its build lock
//! is held.

mod common;

use std::path::PathBuf;

use common::{hearth, run, text};

fn recipe(name: &str, body: &str) -> PathBuf {
    let dir = common::data_dir().join("recipes");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, format!("name = \"{name}\"\n{body}")).unwrap();
    path
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_unknown_field_is_named_with_the_file_and_what_is_allowed() {
    let path = recipe(
        "test-typo",
        "base = \"minimal\"\n[[users]]\nname = \"a\"\nhome = \"/h\"\n",
    );
    let out = run(&["image", "build", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("test-typo.toml") && err.contains("unknown field `home`"),
        "{err}"
    );
    assert!(err.contains("`shell`") && err.contains("`groups`"), "{err}");
    assert!(!common::data_dir().join("images/test-typo").exists());
}

#[test]
fn a_package_that_does_not_exist_is_named_and_the_log_kept() {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: a Debian base needs root");
        return;
    }
    let body =
        "base = { debian = \"bookworm\" }\npackages = [\"busybox\", \"hearth-no-such-package\"]\n";
    let path = recipe("test-nopkg", body);
    let out = run(&["image", "build", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("step `packages` failed"), "{err}");
    assert!(err.contains("package hearth-no-such-package"), "{err}");
    let log = common::data_dir().join("images/test-nopkg.failed.log");
    assert!(
        err.contains(log.to_str().unwrap()),
        "the error names the log: {err}"
    );
    let kept = std::fs::read_to_string(&log).unwrap();
    assert!(
        kept.contains("Unable to locate package hearth-no-such-package"),
        "{kept}"
    );
    assert!(!common::data_dir().join("images/test-nopkg").exists());
}

#[test]
fn an_npm_package_that_does_not_exist_is_named_and_the_log_kept() {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: a Debian base needs root");
        return;
    }
    let body = "base = { debian = \"bookworm\" }\n[npm]\nnode = \"22.23.5\"\n\
                packages = [\"hearth-no-such-npm-package-zz\"]\n";
    let path = recipe("test-nonpm", body);
    let out = run(&["image", "build", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("step `npm` failed"), "{err}");
    assert!(
        err.contains("npm package hearth-no-such-npm-package-zz"),
        "{err}"
    );
    let log = common::data_dir().join("images/test-nonpm.failed.log");
    let kept = std::fs::read_to_string(&log).unwrap();
    assert!(kept.contains("404"), "{kept}");
}

#[test]
fn rm_removes_an_image_but_never_one_being_built() {
    let path = recipe("test-rm", "base = \"minimal\"\n");
    let out = run(&["image", "build", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    // A build holds this lock for as long as it runs.
    let lock = common::data_dir().join("locks/image-test-rm.lock");
    let held = hearth_guestkit::BuildLock::acquire(&lock).unwrap();
    let out = run(&["image", "rm", "test-rm"]);
    drop(held);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("being built"), "{}", text(&out));
    assert!(common::data_dir()
        .join("images/test-rm/rootfs.ext4")
        .exists());

    let out = hearth(&["image", "rm", "test-rm"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!common::data_dir().join("images/test-rm").exists());
    let listed = String::from_utf8_lossy(&run(&["image", "list"]).stdout).into_owned();
    assert!(!listed.contains("test-rm"), "{listed}");
    let out = run(&["vm", "run", "--image", "test-rm", "--", "true"]);
    assert!(
        stderr(&out).contains("hearth image build test-rm"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_login_test_recipe_is_the_browser_image_with_python_and_fake_codex() {
    use hearth_guestkit::image::recipe::Base;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let path = fixtures.join("login-test.toml");
    let loaded = hearth_guestkit::image::load_recipe(path.to_str().unwrap()).unwrap();
    let browser = hearth_guestkit::image::ImageName::Browser.recipe();
    let (r, b) = (&loaded.recipe, &browser.recipe);
    assert_eq!(r.name, "login-test");
    assert_eq!(r.base, Base::Debian("bookworm".into()));
    assert_eq!(loaded.bases[0].origin, "browser (built in)");
    // The browser's packages, then python3.
    assert_eq!(r.packages[..b.packages.len()], b.packages[..]);
    assert_eq!(r.packages[b.packages.len()..], ["python3"]);
    assert_eq!(
        (&r.users, &r.env, &r.agent, r.vm),
        (&b.users, &b.env, &b.agent, b.vm)
    );
    let tool = r
        .files
        .iter()
        .find(|f| f.path == "/usr/local/bin/fake-codex")
        .unwrap();
    assert_eq!(tool.mode, Some(0o755));
    let script = std::fs::read(fixtures.join("fake-codex")).unwrap();
    assert_eq!(loaded.contents["/usr/local/bin/fake-codex"], script);
    for f in &b.files {
        assert_eq!(
            loaded.contents[&f.path], browser.contents[&f.path],
            "{}",
            f.path
        );
    }
    assert_eq!(r.files.len(), b.files.len() + 1);
    assert_ne!(loaded.digest(), browser.digest());
}
