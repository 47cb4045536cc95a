//! `hearth vm exec` against a real `hearth serve`: the minimal image's
//! static `hearth-agent` runs commands; the CLI passes on their output and
//! status.

mod common;

use std::time::Duration;

use common::serve::Host;
use common::text;
use hearth_types::VmState;

#[test]
fn vm_exec_passes_on_the_guest_command_s_output_and_status() {
    // The shared minimal image carries the agent when one can be built
    // (common::ensure_assets passes it to the image build).
    if hearth_testkit::static_agent().is_none() {
        return;
    }
    let mut host = Host::new(&[]);
    host.start();
    let id = host.create(&["--wait", "ready"]);
    let vm = host.vm(&id);
    assert_eq!(vm.state, VmState::Ready);

    let out = host.vm_cli(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    let out = host.vm_cli(&["exec", &id, "--", "uname", "-s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Linux\n");

    let out = host.vm_cli(&["exec", &id, "--", "/no/such/program"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/no/such/program"),
        "{}",
        text(&out)
    );

    let out = host.vm_cli(&["exec", &id, "--timeout", "1", "--", "sleep", "30"]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out));
    assert!(text(&out).contains("timeout"), "{}", text(&out));

    let bob = host.mint(&["--tenant", "bob"]);
    let out = host.vm_cli_as(&bob, &["exec", &id, "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no VM"), "{}", text(&out));

    for bad in [
        &["exec", &id][..],
        &["exec", &id, "--timeout", "0", "--", "true"],
    ] {
        let out = host.vm_cli(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out));
    }

    host.vm_ok(&["rm", &id]);
    host.wait_vm(&id, Duration::from_secs(30), |vm| {
        vm.state == VmState::Destroyed
    });
}
