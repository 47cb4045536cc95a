//! Image recipes end to end: a recipe file the test writes is built with
//! `hearth image build FILE` (and then reused), booted under a real
//! `hearth serve` and its service answers; the built-in `cli` image boots
//! with its recipe's size and runs the AI command-line tools. Both images
//! live in the suite's shared data directory, so reruns reuse them.

mod common;

use std::time::Duration;

use common::serve::Host;
use common::{ensure_assets, run, text};
use hearth_types::api::VmHealth;
use hearth_types::guest::ServiceState;
use hearth_types::VmState;

/// A Debian base, one extra package (busybox, for its httpd), a user, a
/// file it owns, and a service running as that user with a TCP readiness
/// check; 384 MiB by default.
const WEB_RECIPE: &str = r#"
name = "test-web"
description = "a recipe written by the vm_recipes test"
base = { debian = "bookworm" }
packages = ["busybox"]

[[users]]
name = "web"
shell = "/bin/sh"

[[files]]
path = "/srv/www/index.html"
content = "hello from a recipe\n"
owner = "web"
mode = 0o640

[env]
GREETING = "from the recipe"

[[agent.services]]
name = "web"
argv = ["busybox", "httpd", "-f", "-p", "8080", "-h", "/srv/www"]
user = "web"
readiness = { kind = "tcp", port = 8080 }

[vm]
vcpus = 1
memory_mib = 384
"#;

fn recipe_file() -> std::path::PathBuf {
    let dir = common::data_dir().join("recipes");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("test-web.toml");
    std::fs::write(&path, WEB_RECIPE).unwrap();
    path
}

fn build(recipe: &str) -> String {
    let mut cmd = common::hearth(&["image", "build", recipe]);
    if let Some(agent) = hearth_testkit::static_agent() {
        cmd.env("HEARTH_AGENT", agent);
    }
    let out = cmd.output().expect("hearth runs");
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn exec(host: &mut Host, id: &str, argv: &[&str]) -> String {
    let mut args = vec!["exec", id, "--timeout", "300", "--"];
    args.extend_from_slice(argv);
    host.vm_ok(&args)
}

#[test]
fn vm_a_written_recipe_builds_is_reused_boots_and_runs_its_service() {
    if hearth_testkit::static_agent().is_none() || !is_root() {
        eprintln!("skipped: needs root (Debian base) and a static agent");
        return;
    }
    let file = recipe_file();
    let file = file.to_str().unwrap();
    build(file);
    let manifest = common::data_dir().join("images/test-web/manifest.json");
    let before = std::fs::read_to_string(&manifest).unwrap();
    let again = build(file);
    assert!(
        again.contains("test-web: ") && again.contains("reused"),
        "{again}"
    );
    assert_eq!(
        std::fs::read_to_string(&manifest).unwrap(),
        before,
        "rebuilt"
    );

    let out = run(&["image", "show", "test-web"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        shown.contains("recipe sha256:") && shown.contains("agent sha256:"),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.trim().starts_with("busybox 1:1.35")),
        "{shown}"
    );
    assert!(shown.contains("vm size:  1 vCPUs, 384 MiB"), "{shown}");
    let listed = String::from_utf8_lossy(&run(&["image", "list"]).stdout).into_owned();
    assert!(
        listed.lines().any(|l| l.starts_with("test-web ")),
        "{listed}"
    );

    let mut host = Host::new(&[]);
    host.start();
    let id = host.create(&["--image", "test-web", "--wait", "ready", "--timeout", "300"]);
    let vm = host.vm(&id);
    assert_eq!(
        (vm.vcpus, vm.memory_mib),
        (1, 384),
        "the recipe's size: {vm:?}"
    );
    let health: VmHealth = host
        .api()
        .json("GET", &format!("/v1/vms/{id}/health"), None, 200);
    let web = health.services.iter().find(|s| s.name == "web");
    assert!(
        web.is_some_and(|s| s.state == ServiceState::Running && s.ready),
        "{health:?}"
    );
    let page = exec(
        &mut host,
        &id,
        &[
            "busybox",
            "wget",
            "-qO-",
            "http://127.0.0.1:8080/index.html",
        ],
    );
    assert_eq!(page, "hello from a recipe\n");
    let owner = exec(
        &mut host,
        &id,
        &["stat", "-c", "%U %a", "/srv/www/index.html"],
    );
    assert_eq!(owner.trim(), "web 640");
    let env = exec(&mut host, &id, &["sh", "-c", "echo $GREETING"]);
    assert_eq!(env.trim(), "from the recipe");
    let home = exec(&mut host, &id, &["stat", "-c", "%U", "/home/web"]);
    assert_eq!(home.trim(), "web");
    // A size given on the command line wins over the recipe's.
    let small = host.create(&["--image", "test-web", "--memory", "320"]);
    assert_eq!(host.vm(&small).memory_mib, 320);
    for vm in [&id, &small] {
        host.vm_ok(&["rm", vm]);
        host.wait_state(vm, VmState::Destroyed, Duration::from_secs(60));
    }
}

#[test]
fn vm_the_cli_image_runs_claude_codex_and_gemini() {
    if hearth_testkit::static_agent().is_none() || !is_root() {
        eprintln!("skipped: needs root (Debian base) and a static agent");
        return;
    }
    ensure_assets("cli");
    let mut host = Host::new(&[]);
    host.start();
    let id = host.create(&["--image", "cli", "--wait", "ready", "--timeout", "400"]);
    let vm = host.vm(&id);
    assert_eq!(
        (vm.vcpus, vm.memory_mib),
        (2, 2048),
        "the cli recipe's size"
    );
    let node = exec(&mut host, &id, &["node", "--version"]);
    assert!(node.starts_with("v22."), "{node}");
    let user = exec(&mut host, &id, &["id", "hearth"]);
    assert!(user.starts_with("uid=1000(hearth)"), "{user}");
    for tool in ["claude", "codex", "gemini"] {
        let out = exec(
            &mut host,
            &id,
            &[
                "runuser",
                "-u",
                "hearth",
                "--",
                "env",
                "HOME=/home/hearth",
                tool,
                "--version",
            ],
        );
        assert!(
            out.trim().chars().any(|c| c.is_ascii_digit()) && out.contains('.'),
            "{tool} --version printed {out:?}"
        );
        eprintln!("{tool} --version: {}", out.trim());
    }
    host.vm_ok(&["rm", &id]);
    host.wait_state(&id, VmState::Destroyed, Duration::from_secs(60));
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
