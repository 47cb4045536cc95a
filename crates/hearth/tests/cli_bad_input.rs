//! Bad input to `hearth vm run` and friends: each gets a clear error naming
//! the problem, a non-zero exit, and leaves nothing behind.

mod common;

use common::*;

/// Runs `vm run` with `args`, expects exit 2 with `needle` on stderr and no
/// new VM directory.
fn refused(args: &[&str], needle: &str) {
    let before = vm_dirs();
    let mut full = vec!["vm", "run"];
    full.extend_from_slice(args);
    let out = run(&full);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(needle),
        "stderr lacks {needle:?}:\n{}",
        text(&out)
    );
    assert!(!stderr.contains("panicked"), "{}", text(&out));
    assert_eq!(vm_dirs(), before, "a VM directory was left behind");
}

#[test]
fn a_missing_kernel_is_named() {
    ensure_assets("minimal");
    refused(
        &["--kernel", "/nonexistent/vmlinuz", "--", "true"],
        "/nonexistent/vmlinuz",
    );
}

#[test]
fn a_file_that_is_not_a_kernel_is_refused() {
    ensure_assets("minimal");
    let dir = tempfile::tempdir().expect("tempdir");
    let bogus = dir.path().join("not-a-kernel");
    std::fs::write(&bogus, b"just some text, not a kernel\n").expect("write");
    refused(
        &["--kernel", bogus.to_str().expect("utf-8"), "--", "true"],
        "not-a-kernel",
    );
}

#[test]
fn an_image_that_is_not_ext4_is_refused() {
    ensure_assets("minimal");
    let dir = tempfile::tempdir().expect("tempdir");
    let bogus = dir.path().join("bogus.ext4");
    std::fs::write(&bogus, vec![0u8; 4096]).expect("write");
    refused(
        &["--image", bogus.to_str().expect("utf-8"), "--", "true"],
        "ext4",
    );
}

#[test]
fn an_unknown_image_name_says_how_to_build_one() {
    refused(&["--image", "nosuchimage", "--", "true"], "nosuchimage");
}

#[test]
fn zero_memory_and_zero_vcpus_are_refused() {
    refused(&["--memory", "0", "--", "true"], "0 MiB of memory");
    refused(&["--vcpus", "0", "--", "true"], "0 vCPUs");
}

#[test]
fn an_unknown_backend_is_refused_by_name() {
    refused(&["--backend", "xen", "--", "true"], "xen");
}

#[test]
fn doctor_explains_the_acceleration_it_chose() {
    ensure_assets("minimal");
    let out = run(&["doctor"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("acceleration:"), "{}", text(&out));
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        assert!(
            stdout.contains("kvm-pvm") && stdout.contains("tcg"),
            "{}",
            text(&out)
        );
    }
    assert!(
        out.status.success(),
        "doctor says this host cannot boot VMs:\n{}",
        text(&out)
    );
}

#[test]
fn doctor_warns_of_an_agent_image_builds_would_refuse() {
    let out = hearth(&["doctor"])
        .env("HEARTH_AGENT", "/bin/sh")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with(
            "warn image builds will fail: the agent /bin/sh is not a statically linked"
        )),
        "{}",
        text(&out)
    );
}

#[test]
fn doctor_says_which_isolation_this_host_gives_hypervisors() {
    let out = hearth(&["doctor"])
        .env_remove("HEARTH_JAILER")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let isolation: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("isolation:"))
        .collect();
    assert_eq!(
        isolation.len(),
        4,
        "user, cgroup, seccomp, jailer:\n{}",
        text(&out)
    );
    assert!(
        isolation[3].contains("HEARTH_JAILER is not set"),
        "{}",
        text(&out)
    );
    // SAFETY: geteuid(2) cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    match hearth_vmm::isolation::CgroupHost::detect() {
        Ok(cgroups) if root => {
            assert!(
                isolation[0].starts_with("ok   isolation: each hypervisor runs as a uid"),
                "{}",
                text(&out)
            );
            let version = format!("isolation: cgroup v{}", cgroups.version());
            assert!(isolation[1].contains(&version), "{}", text(&out));
        }
        _ => {}
    }
    if !root {
        assert!(isolation[0].contains("not root"), "{}", text(&out));
    }
    let jailer = hearth(&["doctor"])
        .env("HEARTH_JAILER", "/no/such/jailer")
        .output()
        .expect("runs");
    assert_eq!(jailer.status.code(), Some(1), "{}", text(&jailer));
    assert!(
        String::from_utf8_lossy(&jailer.stdout)
            .contains("FAIL isolation: jailer binary not found at /no/such/jailer"),
        "{}",
        text(&jailer)
    );
}

#[test]
fn doctor_fails_on_an_empty_data_dir_and_says_what_to_run() {
    let empty = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("--data-dir")
        .arg(empty.path())
        .arg("doctor")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("hearth kernel fetch") && stdout.contains("hearth image build minimal"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_dynamically_linked_agent_is_refused_and_no_image_is_built() {
    let empty = tempfile::tempdir().expect("tempdir");
    // What `cargo build` makes of hearth-agent: linked against the host's libc.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("--data-dir")
        .arg(empty.path())
        .args(["image", "build", "minimal"])
        .env("HEARTH_AGENT", "/bin/sh")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/bin/sh")
            && stderr.contains("not a statically linked")
            && stderr.contains("scripts/build-agent")
            && stderr.contains("--no-agent"),
        "{}",
        text(&out)
    );
    assert!(!empty.path().join("images/minimal").exists());

    // An image without the agent is built only when asked for.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("--data-dir")
        .arg(empty.path())
        .args(["image", "build", "minimal", "--no-agent"])
        .env("HEARTH_AGENT", "/bin/sh")
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("without the guest agent, as asked"),
        "{}",
        text(&out)
    );
    let manifest = std::fs::read_to_string(empty.path().join("images/minimal/manifest.json"))
        .expect("a manifest");
    assert!(
        manifest.contains("\"agent_sha256\": \"none\""),
        "{manifest}"
    );
}
