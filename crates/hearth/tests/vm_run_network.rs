//! `hearth vm run --network nat`: a foreground VM with a NIC the run makes
//! and removes itself (no server, no store of VMs). The `hearth` process
//! runs inside the lab's host namespace, so its VM networks hang off it and
//! NAT to the lab's internet namespace; no packet leaves the namespaces the
//! test made.

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::netlab::{can_run, serve_in, Lab, HOST_ADDR, INTERNET_ADDR};
use hearth_store::{NetSlotStore, SqliteStore};

/// The names foreground runs give their namespaces and links.
const RUN_PREFIX: &str = "hrun";

/// `hearth vm run ARGS` in the lab's host namespace.
fn run_in(lab: &Lab, args: &[&str]) -> Command {
    let ns = std::fs::File::open(format!("/run/netns/{}", lab.host_ns)).expect("the namespace");
    let mut cmd = common::hearth(&["vm", "run"]);
    cmd.args(args);
    // SAFETY: setns(2) is async-signal-safe; `ns` stays open in the parent
    // until the spawn returns, which is after the child ran this.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// The slots foreground runs hold in the shared data directory.
fn held_run_slots() -> usize {
    let path = common::data_dir().join("runs/network/slots.db");
    if !path.exists() {
        return 0;
    }
    let store = SqliteStore::open(&path).expect("the runs' slot store");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(store.net_slots()).unwrap().len()
}

/// The command's output lines, without the console's CRs.
fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect()
}

/// Waits until the killed-to-be run's namespace and host link exist.
fn wait_for_network(lab: &Lab, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while lab.leftovers_of(RUN_PREFIX).len() < 2 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended before its network was made: {status}");
        }
        assert!(Instant::now() < deadline, "no network after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A run interrupted (SIGINT) while its VM is up stops it and removes
/// its network. A run killed with SIGKILL leaves its network; the
/// next networked run removes it before it makes its own, reaches the
/// internet namespace's server through NAT (which sees the host's
/// address), and removes its own network when its VM powers off.
#[test]
fn vm_run_with_a_nat_network_reaches_the_internet_and_leaves_nothing() {
    if !can_run() {
        return;
    }
    common::ensure_assets("minimal");
    let mut lab = Lab::new();
    lab.also_remove.push(RUN_PREFIX.to_owned());
    assert_eq!(lab.leftovers_of(RUN_PREFIX), Vec::<String>::new());
    let port = serve_in(&lab.internet_ns).to_string();

    let mut interrupted = run_in(&lab, &["--network", "nat", "--quiet", "--", "sleep", "600"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hearth vm run");
    wait_for_network(&lab, &mut interrupted);
    common::serve::signal(interrupted.id(), libc::SIGINT);
    let out = interrupted.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", common::text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("interrupted by SIGINT"),
        "{}",
        common::text(&out)
    );
    assert_eq!(
        lab.leftovers_of(RUN_PREFIX),
        Vec::<String>::new(),
        "an interrupted run removes its network"
    );
    assert_eq!(held_run_slots(), 0);

    let mut killed = run_in(&lab, &["--network", "nat", "--quiet", "--", "sleep", "600"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hearth vm run");
    wait_for_network(&lab, &mut killed);
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert_eq!(
        lab.leftovers_of(RUN_PREFIX).len(),
        2,
        "a killed run cannot remove its network: {:?}",
        lab.leftovers_of(RUN_PREFIX)
    );
    assert_eq!(held_run_slots(), 1, "its slot is still held");

    let fetch =
        format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc {INTERNET_ADDR} {port}; echo \"nc: $?\"");
    let out = run_in(
        &lab,
        &[
            "--network",
            "nat",
            "--timeout",
            "150",
            "--",
            "sh",
            "-c",
            &fetch,
        ],
    )
    .output()
    .expect("hearth vm run");
    assert!(out.status.success(), "{}", common::text(&out));
    let seen = lines(&out);
    let at = seen.iter().position(|l| l == HOST_ADDR);
    assert!(
        at.is_some_and(|i| seen.get(i + 1).is_some_and(|l| l == "nc: 0")),
        "the server saw the host's address, and nc succeeded: {}",
        common::text(&out)
    );
    assert_eq!(lab.leftovers_of(RUN_PREFIX), Vec::<String>::new());
    assert_eq!(held_run_slots(), 0, "both slots are released");
}

/// Policy flags without a NIC, and a policy that cannot be applied, are
/// refused before anything is booted or made.
#[test]
fn vm_run_refuses_a_policy_without_a_nic_or_one_that_is_wrong() {
    let out = common::run(&["vm", "run", "--net-deny", "203.0.113.0/24", "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("add --network nat"),
        "{}",
        common::text(&out)
    );
    let out = common::run(&[
        "vm",
        "run",
        "--network",
        "nat",
        "--net-deny",
        "203.0.113.1/24",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("203.0.113.1/24"), "{}", common::text(&out));
}
