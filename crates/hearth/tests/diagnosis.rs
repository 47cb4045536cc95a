//! Deliberately broken guests, booted for real: each must explain itself.
//! `hearth vm run` prints the findings after its verdict (`hearth: cause:
//! ... [rule]`, `hearth: evidence: ...`, `hearth: fix: ...`), and `hearth
//! vm why` asks `hearth serve` for the same diagnosis, also after the VM is
//! destroyed. A healthy guest has no findings.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::findings::{printed_findings, Printed};
use common::serve::Host;
use common::*;
use hearth_types::api::Diagnosis;
use hearth_types::VmState;

/// Boots `args` with `hearth vm run --quiet` and returns the finding of
/// `rule`, checked: a cause, a fix, and evidence with `telling` in it.
fn run_and_find(args: &[&str], rule: &str, telling: &str) -> (Output, Printed) {
    ensure_assets("minimal");
    let mut full = vec!["vm", "run", "--quiet"];
    full.extend_from_slice(args);
    let out = run(&full);
    let mut found = printed_findings(&out);
    let at = found
        .iter()
        .position(|f| f.rule == rule)
        .unwrap_or_else(|| panic!("no {rule} finding:\n{}", text(&out)));
    let f = found.swap_remove(at);
    assert!(!f.cause.is_empty() && !f.fix.is_empty(), "{f:?}");
    assert!(f.evidence.len() <= 3, "at most 3 evidence lines: {f:?}");
    assert!(
        f.evidence.iter().any(|l| l.contains(telling)),
        "no evidence line with {telling:?}: {f:?}\n{}",
        text(&out)
    );
    (out, f)
}

#[test]
fn a_healthy_guest_has_no_findings() {
    ensure_assets("minimal");
    let out = run(&["vm", "run", "--quiet", "--", "echo", "hello"]);
    assert!(out.status.success(), "{}", text(&out));
    let found = printed_findings(&out);
    assert!(found.is_empty(), "{found:?}\n{}", text(&out));
}

#[test]
fn a_kernel_panic_is_explained_with_the_panic_line() {
    let (out, f) = run_and_find(
        &["--", "sh", "-c", "echo c > /proc/sysrq-trigger"],
        "kernel_panic",
        "Kernel panic - not syncing: sysrq triggered crash",
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(f.cause.contains("/proc/sysrq-trigger"), "{f:?}");
}

#[test]
fn running_out_of_memory_names_the_killed_process() {
    // Doubling a shell string: 128 MiB are gone in a few steps.
    let (out, f) = run_and_find(
        &[
            "--memory",
            "128",
            "--",
            "sh",
            "-c",
            "x=a; while :; do x=$x$x; done",
        ],
        "out_of_memory",
        "Out of memory: Killed process",
    );
    assert_eq!(out.status.code(), Some(137), "{}", text(&out));
    assert!(
        f.cause.contains("(sh)") || f.cause.contains("sh (pid"),
        "{f:?}"
    );
    assert!(f.fix.contains("--memory"), "{f:?}");
}

#[test]
fn a_command_killed_by_sigill_is_blamed_on_the_cpu() {
    let (out, f) = run_and_find(
        &["--", "sh", "-c", "kill -ILL $$"],
        "killed_by_sigill",
        "hearth: exit status 132",
    );
    assert_eq!(out.status.code(), Some(132), "{}", text(&out));
    assert!(
        f.evidence.iter().any(|l| l == "Illegal instruction"),
        "{f:?}"
    );
    assert!(f.fix.contains("x86-64"), "{f:?}");
}

#[test]
fn a_file_that_is_not_a_program_is_an_exec_format_error() {
    // busybox sh runs any file it cannot exec as a script; su execs the
    // "shell" directly, so the kernel's ENOEXEC reaches the console.
    let script = "printf '\\177ELF\\002\\001\\001' > /tmp/x; chmod +x /tmp/x; su -s /tmp/x root";
    let (_, f) = run_and_find(
        &["--", "sh", "-c", script],
        "exec_format_error",
        "can't execute '/tmp/x': Exec format error",
    );
    assert!(f.cause.contains("`/tmp/x`"), "{f:?}");
}

#[test]
fn a_timeout_says_which_boot_stage_was_reached() {
    // An image whose init never says it is ready: the run times out
    // however fast this boot happens to be, with the kernel's lines on the
    // console by then.
    let dir = tempfile::tempdir().expect("tempdir");
    let image = never_ready_image(dir.path());
    let image = image.to_str().expect("utf-8");
    let (out, f) = run_and_find(
        &["--image", image, "--timeout", "10", "--", "true"],
        "never_ready",
        "] ",
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // How far it got depends on the host's load; that it says so does not.
    assert!(f.cause.contains("when it was stopped, "), "{f:?}");
    assert!(f.fix.contains("--timeout"), "{f:?}");
}

/// busybox and an init that sleeps without printing `hearth: ready`.
fn never_ready_image(dir: &std::path::Path) -> std::path::PathBuf {
    let tree = dir.join("tree");
    for sub in ["bin", "sbin", "proc", "sys", "dev"] {
        std::fs::create_dir_all(tree.join(sub)).expect("tree");
    }
    std::fs::copy("/bin/busybox", tree.join("bin/busybox")).expect("static busybox");
    for applet in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(applet)).expect("link");
    }
    let init = tree.join("sbin/init");
    std::fs::write(
        &init,
        "#!/bin/sh\necho 'an init that never gets ready'\nexec sleep 600\n",
    )
    .expect("init");
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let image = dir.join("never-ready.ext4");
    ext4_image(&tree, &image, "16M");
    image
}

#[test]
fn too_little_memory_for_the_kernel_is_named() {
    // With 64 MiB the guest resets before the kernel prints a line.
    let (out, f) = run_and_find(
        &["--memory", "64", "--", "true"],
        "hypervisor_exited",
        "Probing EDD",
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(f.fix.contains("--memory 128"), "{f:?}");
}

#[test]
fn vm_why_explains_a_served_vm_also_after_it_is_destroyed() {
    let mut host = Host::new(&["--grace", "120"]);
    host.start();
    let id = host.create(&["--readiness-timeout", "2"]);
    host.wait_state(&id, VmState::Failed, Duration::from_secs(60));
    // The failed VM is then killed: diagnose its console once it is whole.
    let deadline = Instant::now() + Duration::from_secs(15);
    while host.hypervisor_of(&id).is_some() {
        assert!(
            Instant::now() < deadline,
            "the failed VM's hypervisor runs on"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let said = host.vm_ok(&["why", &id]);
    assert!(said.starts_with(&format!("{id}: ")), "{said}");
    assert!(said.contains("[never_ready]"), "{said}");
    assert!(
        said.contains("   evidence:") && said.contains("   fix: "),
        "{said}"
    );
    let live: Diagnosis =
        serde_json::from_str(&host.vm_ok(&["why", &id, "--json"])).expect("a Diagnosis");
    assert_eq!(live.findings[0].rule, "never_ready", "{live:#?}");
    assert!(live.findings[0].cause.contains("not ready within 2 s"));

    host.vm_ok(&["rm", &id]);
    host.wait_state(&id, VmState::Destroyed, Duration::from_secs(30));
    let archived: Diagnosis =
        serde_json::from_str(&host.vm_ok(&["why", &id, "--json"])).expect("a Diagnosis");
    assert_eq!(archived, live, "the archived logs give the same diagnosis");
    host.assert_clean();
}
