//! A VM with a NIC end to end: a real `hearth serve` whose VM networks
//! hang off a namespace this test made (`--network-namespace`), joined to
//! an "internet" namespace with an HTTP server that answers with the
//! address it saw; a VM on the `minimal` image created with
//! `--network nat` whose agent service fetches from that server the moment
//! it starts. No packet leaves the namespaces the test made.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use common::netlab::{can_run, ip, serve_at, serve_in, serve_on, Lab, HOST_ADDR, INTERNET_ADDR};
use common::serve::Host;
use hearth_store::{NetSlotStore, SqliteStore};
use hearth_types::VmState;

/// `hearth serve` with its VM networks off the lab's host namespace.
fn networked_host(lab: &Lab) -> Host {
    networked_host_with(lab, &[])
}

/// The same with more `hearth serve` arguments.
fn networked_host_with(lab: &Lab, more: &[&str]) -> Host {
    let mut args = vec![
        "--network-prefix",
        &lab.prefix,
        "--network-namespace",
        &lab.host_ns,
    ];
    args.extend_from_slice(more);
    let mut host = Host::new(&args);
    host.start();
    host
}

/// A configuration file (`NAME.json` in the host's data dir) whose one
/// service fetches from the internet namespace's server with `nc` (the
/// command, with its flags) the moment it starts, once, and keeps the
/// answer and nc's status in /tmp/seen, its readiness.
fn fetch_at_start(host: &Host, name: &str, nc: &str, port: u16) -> std::path::PathBuf {
    let fetch = format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | {nc} {INTERNET_ADDR} {port} > /tmp/seen.part; \
         echo \"nc: $?\" >> /tmp/seen.part; mv /tmp/seen.part /tmp/seen; exec sleep 100000"
    );
    let config = serde_json::json!({"services": [{
        "name": "fetch",
        "argv": ["sh", "-c", fetch],
        "readiness": {"kind": "command", "argv": ["test", "-s", "/tmp/seen"]}
    }]});
    let file = host.data().join(format!("{name}.json"));
    std::fs::write(&file, config.to_string()).unwrap();
    file
}

fn held_slots(host: &Host) -> usize {
    let store = SqliteStore::open(&host.data().join("hearth.db")).expect("the store");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(store.net_slots()).expect("slots").len()
}

#[test]
fn vm_with_a_nat_network_reaches_the_internet_before_its_first_service() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let port = serve_in(&lab.internet_ns);
    let mut host = networked_host(&lab);
    // Once, the moment the service starts: an address not yet in place
    // fails it at once, and the file says so (nc's status last).
    let file = fetch_at_start(&host, "network-config", "nc", port);
    let id = host.create(&[
        "--config",
        file.to_str().unwrap(),
        "--network",
        "nat",
        "--wait",
        "ready",
    ]);
    assert_eq!(lab.leftovers().len(), 2, "its namespace and host link");
    assert_eq!(held_slots(&host), 1);
    let seen = host.vm_ok(&["exec", &id, "--", "cat", "/tmp/seen"]);
    let answer = format!("\r\n\r\n{HOST_ADDR}\nnc: 0\n");
    assert!(
        seen.ends_with(&answer),
        "the service's connection reached the server, which saw the host's address: {seen:?}"
    );

    host.vm_ok(&["rm", &id]);
    host.wait_state(&id, VmState::Destroyed, Duration::from_secs(60));
    assert_eq!(lab.leftovers(), Vec::<String>::new());
    assert_eq!(held_slots(&host), 0, "the slot is released");
    host.assert_clean();
}

/// A VM whose policy denies the server's address: its service's connection
/// fails, and the refusal is counted on the VM (`hearth vm network`). A
/// policy that cannot be applied is refused before anything is made.
#[test]
fn a_vm_whose_policy_denies_the_server_cannot_reach_it_and_the_denial_is_counted() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let port = serve_in(&lab.internet_ns);
    let mut host = networked_host(&lab);
    let bad = host.vm_cli(&["create", "--network", "nat", "--net-deny", "203.0.113.2/24"]);
    let said = common::text(&bad);
    assert!(!bad.status.success(), "{said}");
    assert!(
        said.contains("host bits set") && said.contains("203.0.113.0/24"),
        "{said}"
    );
    assert_eq!(
        lab.leftovers(),
        Vec::<String>::new(),
        "a refused policy makes nothing"
    );

    let file = fetch_at_start(&host, "denied-config", "nc -w 3", port);
    let id = host.create(&[
        "--config",
        file.to_str().unwrap(),
        "--network",
        "nat",
        "--net-deny",
        &format!("{INTERNET_ADDR}"),
        "--net-bandwidth",
        "8000",
        "--wait",
        "ready",
    ]);
    let seen = host.vm_ok(&["exec", &id, "--", "cat", "/tmp/seen"]);
    assert!(
        !seen.contains(HOST_ADDR) && !seen.ends_with("nc: 0\n"),
        "the denied server was reached: {seen:?}"
    );
    let shown = host.vm_ok(&["network", &id, "--json"]);
    let info: serde_json::Value = serde_json::from_str(&shown).expect("JSON");
    assert!(
        info["refused_packets"].as_u64().unwrap_or(0) >= 1,
        "the denial is counted on the VM: {shown}"
    );
    let address = format!(
        "{}/{}",
        hearth_net::GUEST_ADDRESS,
        hearth_net::GUEST_PREFIX_LEN
    );
    assert_eq!(info["address"], address.as_str(), "{shown}");

    host.vm_ok(&["rm", &id]);
    host.wait_state(&id, VmState::Destroyed, Duration::from_secs(60));
    assert_eq!(lab.leftovers(), Vec::<String>::new());
    host.assert_clean();
}

/// What the guest sees fetching from the internet namespace's server now
/// (through `hearth vm exec`): the answer and nc's status.
fn fetch_now(host: &mut Host, id: &str, port: u16) -> String {
    let fetch = format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {INTERNET_ADDR} {port}; echo \"nc: $?\""
    );
    host.vm_ok(&["exec", id, "--", "sh", "-c", &fetch])
}

/// kill -9 of the controller with a networked VM running, and again right
/// after a second networked VM was asked for (its network half made or not
/// yet), then of the first VM's hypervisor: the restarted controller adopts
/// the running VM with its network still working, the killed hypervisor
/// fails its VM, and once both are removed no namespace, link or slot of
/// either is left.
#[test]
fn a_killed_controller_leaves_a_networked_vm_working_and_nothing_behind() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let port = serve_in(&lab.internet_ns);
    let mut host = networked_host(&lab);
    let id = host.create(&["--network", "nat", "--wait", "ready"]);
    let answer = format!("{HOST_ADDR}\nnc: 0\n");
    assert!(fetch_now(&mut host, &id, port).ends_with(&answer));

    host.kill_serve();
    host.start();
    host.wait_state(&id, VmState::Ready, Duration::from_secs(60));
    let after = fetch_now(&mut host, &id, port);
    assert!(
        after.ends_with(&answer),
        "the adopted VM's network works: {after:?}"
    );
    // Its resolver is served again by the new controller: a name that does
    // not resolve is answered (NXDOMAIN, or SERVFAIL if the host's own
    // resolver is slow), not left to time out.
    let asked = "nslookup nowhere.invalid 2>&1; true";
    let dns = host.vm_ok(&["exec", &id, "--", "sh", "-c", asked]);
    assert!(
        dns.contains("NXDOMAIN") || dns.contains("SERVFAIL"),
        "the adopted VM's resolver: {dns}"
    );
    assert_eq!(
        lab.leftovers().len(),
        2,
        "its namespace and host link, kept"
    );

    let second = host.create(&["--network", "nat"]);
    host.kill_serve();
    host.start();
    let qemu = host
        .hypervisor_of(&id)
        .expect("the adopted VM's hypervisor");
    // SAFETY: kill(2) of a process this test's server started.
    unsafe { libc::kill(qemu as i32, libc::SIGKILL) };
    host.wait_state(&id, VmState::Failed, Duration::from_secs(60));
    for vm in [&id, &second] {
        host.vm_ok(&["rm", vm]);
    }
    for vm in [&id, &second] {
        host.wait_state(vm, VmState::Destroyed, Duration::from_secs(90));
    }
    assert_eq!(lab.leftovers(), Vec::<String>::new());
    assert_eq!(held_slots(&host), 0, "both slots released");
    host.assert_clean();
}

/// The same on the `debian` image (systemd as init, the agent one of its
/// units): the address is in place before the agent's first service starts,
/// which reaches the server at once, and no unit waits on
/// network-online.target.
#[test]
fn a_debian_vm_has_its_address_before_its_first_service() {
    if !can_run() {
        return;
    }
    common::ensure_assets("debian");
    let lab = Lab::new();
    let port = serve_in(&lab.internet_ns);
    let mut host = networked_host(&lab);
    let file = fetch_at_start(&host, "debian-network-config", "busybox nc", port);
    let id = host.create(&[
        "--image",
        "debian",
        "--memory",
        "512",
        "--readiness-timeout",
        "300",
        "--config",
        file.to_str().unwrap(),
        "--network",
        "nat",
        "--wait",
        "ready",
    ]);
    let seen = host.vm_ok(&["exec", &id, "--", "cat", "/tmp/seen"]);
    assert!(
        seen.ends_with(&format!("\r\n\r\n{HOST_ADDR}\nnc: 0\n")),
        "the first service's connection reached the server: {seen:?}"
    );
    let jobs = host.vm_ok(&["exec", &id, "--", "systemctl", "list-jobs", "--no-legend"]);
    assert!(
        !jobs.contains("network-online"),
        "a unit waits on the network: {jobs}"
    );
    host.vm_ok(&["rm", &id]);
    host.wait_state(&id, VmState::Destroyed, Duration::from_secs(60));
    assert_eq!(lab.leftovers(), Vec::<String>::new());
    host.assert_clean();
}

/// An HTTP server on port 80 of the internet namespace (where the
/// proxy's connections for the guest's web traffic go), answering like
/// [`serve_in`].
fn serve_web_in(ns: &str) {
    serve_on(ns, INTERNET_ADDR, 80);
}

/// Domain rules from inside a real guest: its resolver is hearth's (the
/// gateway), which answers the allowed name and refuses another; its web
/// traffic goes through hearth's proxy, which reaches the allowed name,
/// refuses a name outside the rules and one that resolves to a private
/// address (whatever address the guest dialled), and nothing leaves
/// directly; every refusal is counted on the VM.
#[test]
fn domain_rules_allow_one_name_and_refuse_another_from_a_real_guest() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let port = serve_in(&lab.internet_ns);
    serve_web_in(&lab.internet_ns);
    let mut host = networked_host_with(
        &lab,
        &[
            "--egress-host",
            "good.test=203.0.113.2",
            "--egress-host",
            "bad.test=203.0.113.2",
            "--egress-host",
            "inside.test=10.9.9.9",
        ],
    );
    let bad_domain = host.vm_cli(&["create", "--network", "nat", "--net-allow-domain", "*"]);
    assert!(
        !bad_domain.status.success(),
        "{}",
        common::text(&bad_domain)
    );
    let id = host.create(&[
        "--network",
        "nat",
        "--net-allow-domain",
        "good.test",
        "--net-allow-domain",
        "inside.test",
        "--wait",
        "ready",
    ]);
    let resolv = host.vm_ok(&["exec", &id, "--", "cat", "/etc/resolv.conf"]);
    assert_eq!(resolv.trim(), "nameserver 172.31.0.1", "hearth's resolver");

    let good = host.vm_ok(&["exec", &id, "--", "nslookup", "good.test"]);
    assert!(good.contains("203.0.113.2"), "{good}");
    let refused = guest_sh(
        &mut host,
        &id,
        "nslookup bad.test 2>&1; echo \"status: $?\"",
    );
    assert!(
        !refused.contains("203.0.113.2") && refused.contains("REFUSED"),
        "{refused}"
    );
    let private = guest_sh(
        &mut host,
        &id,
        "nslookup inside.test 2>&1; echo \"status: $?\"",
    );
    assert!(
        !private.contains("10.9.9.9") && private.contains("REFUSED"),
        "never a private address: {private}"
    );

    // As a browser would: the address from the resolver, the name in the
    // request (busybox's static wget cannot resolve: glibc's NSS).
    let fetch = "addr=$(nslookup good.test | sed -n 's/^Address: *//p' | tail -n 1); \
                 printf 'GET / HTTP/1.0\\r\\nHost: good.test\\r\\n\\r\\n' | nc -w 5 \"$addr\" 80; \
                 echo \"nc: $?\"";
    let fetched = guest_sh(&mut host, &id, fetch);
    assert!(
        fetched.ends_with(&format!("{HOST_ADDR}\nnc: 0\n")),
        "the allowed name is reached through the proxy: {fetched:?}"
    );
    for (name, why) in [("bad.test", "allowed domains"), ("inside.test", "private")] {
        let asked = format!(
            "printf 'GET / HTTP/1.0\\r\\nHost: {name}\\r\\n\\r\\n' | nc -w 5 {INTERNET_ADDR} 80"
        );
        let said = guest_sh(&mut host, &id, &asked);
        assert!(
            said.starts_with("HTTP/1.1 403") && said.contains(why) && !said.contains(HOST_ADDR),
            "the proxy refuses {name}: {said:?}"
        );
    }
    let direct = fetch_now(&mut host, &id, port);
    assert!(
        !direct.contains(HOST_ADDR),
        "nothing leaves directly: {direct:?}"
    );

    let shown = host.vm_ok(&["network", &id, "--json"]);
    let info: serde_json::Value = serde_json::from_str(&shown).expect("JSON");
    assert_eq!(info["resolver"], "172.31.0.1", "{shown}");
    assert!(
        info["refused_queries"].as_u64().unwrap_or(0) >= 2,
        "{shown}"
    );
    assert!(
        info["refused_connections"].as_u64().unwrap_or(0) >= 2,
        "{shown}"
    );
    assert!(
        info["refused_packets"].as_u64().unwrap_or(0) >= 1,
        "{shown}"
    );

    // Its tenant's policy narrowed to inside.test: good.test is refused at
    // once by the resolver served again, and its counts go on.
    let tenant = host.vm(&id).tenant.to_string();
    let admin = host.admin_token();
    let narrow = [
        "network",
        "set",
        &tenant,
        "--net-allow-domain",
        "inside.test",
    ];
    let out = tenant_cli(&host, &admin, &narrow);
    assert!(out.status.success(), "{}", common::text(&out));
    let now = guest_sh(
        &mut host,
        &id,
        "nslookup good.test 2>&1; echo \"status: $?\"",
    );
    assert!(
        !now.contains("203.0.113.2") && now.contains("REFUSED"),
        "the narrowed VM still resolves good.test: {now}"
    );
    let policy = host.vm(&id).network_policy.expect("a NIC");
    assert_eq!(policy.allow_domains, ["inside.test"]);
    let shown = host.vm_ok(&["network", &id, "--json"]);
    let after: serde_json::Value = serde_json::from_str(&shown).expect("JSON");
    assert!(
        after["refused_queries"].as_u64() > info["refused_queries"].as_u64(),
        "the count goes on from {info} to {after}"
    );

    host.vm_ok(&["rm", &id]);
    host.wait_state(&id, VmState::Destroyed, Duration::from_secs(60));
    assert_eq!(lab.leftovers(), Vec::<String>::new());
    host.assert_clean();
}

/// Two real guests on one host: neither reaches the other, whether by its
/// namespace's transit address or the host side of its link.
#[test]
fn two_vms_cannot_reach_each_other() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let mut host = networked_host(&lab);
    let first = host.create(&["--network", "nat", "--wait", "ready"]);
    let second = host.create(&["--network", "nat", "--wait", "ready"]);
    // A server on every address of the test's host namespace: the second
    // VM's link there (and its namespace behind it) are the only ways
    // toward it from outside.
    let port = serve_at(&lab.host_ns, Ipv4Addr::UNSPECIFIED);
    let store = SqliteStore::open(&host.data().join("hearth.db")).expect("the store");
    let slots = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(store.net_slots())
        .expect("slots");
    let theirs = slots
        .iter()
        .find(|s| s.vm.to_string() == second)
        .expect("its slot");
    let slot = hearth_net::Slot::new(theirs.slot).expect("a slot");
    let pool = hearth_net::TransitPool::default();
    for target in [pool.host_address(slot), pool.namespace_address(slot)] {
        let asked = format!(
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {target} {port}; echo \"nc: $?\""
        );
        let said = guest_sh(&mut host, &first, &asked);
        assert!(
            !said.contains("HTTP/1.0 200"),
            "{target} answered the first VM: {said:?}"
        );
    }
    // The same server does answer from the host namespace itself.
    let from_host = Command::new("ip")
        .args(["netns", "exec", &lab.host_ns, "busybox", "nc", "-w", "3"])
        .arg(pool.host_address(slot).to_string())
        .arg(port.to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("nc");
    assert!(from_host.status.success(), "{}", common::text(&from_host));
    let info: serde_json::Value =
        serde_json::from_str(&host.vm_ok(&["network", &first, "--json"])).unwrap();
    assert!(info["refused_packets"].as_u64().unwrap_or(0) >= 1, "{info}");
    for vm in [&first, &second] {
        host.vm_ok(&["rm", vm]);
        host.wait_state(vm, VmState::Destroyed, Duration::from_secs(60));
    }
    assert_eq!(lab.leftovers(), Vec::<String>::new());
    host.assert_clean();
}

fn guest_sh(host: &mut Host, id: &str, script: &str) -> String {
    host.vm_ok(&["exec", id, "--", "sh", "-c", script])
}

/// A step of a networked VM's creation the test can see from outside, and
/// whose moment it kills at.
struct Step {
    name: &'static str,
    reached: fn(&Lab, &mut Host, &str) -> bool,
    /// Kill the hypervisor there instead of the controller.
    hypervisor: bool,
}

const CREATE_STEPS: &[Step] = &[
    Step {
        name: "recorded",
        reached: |_, _, _| true,
        hypervisor: false,
    },
    Step {
        name: "slot held",
        reached: |_, host, _| held_slots(host) == 1,
        hypervisor: false,
    },
    Step {
        name: "namespace made",
        reached: |lab, _, _| !lab.leftovers().is_empty(),
        hypervisor: false,
    },
    Step {
        name: "host link made",
        reached: |lab, _, _| lab.leftovers().len() == 2,
        hypervisor: false,
    },
    Step {
        name: "hypervisor spawned",
        reached: |_, host, id| host.hypervisor_of(id).is_some(),
        hypervisor: false,
    },
    Step {
        name: "booting",
        reached: |_, host, id| host.vm(id).state == VmState::Booting,
        hypervisor: false,
    },
    Step {
        name: "booting (its hypervisor)",
        reached: |_, host, id| host.vm(id).state == VmState::Booting,
        hypervisor: true,
    },
];

/// kill -9 of the controller, and of the hypervisor, at each step of
/// creating a networked VM that can be seen from outside, then a restart:
/// once the restarted controller has settled the VM (adopted to ready, or
/// failed and explained) and it is removed, no namespace, link, slot,
/// hypervisor, directory or layer of it is left.
#[test]
fn a_kill_at_each_step_of_a_networked_create_leaves_nothing_behind() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let mut host = networked_host(&lab);
    for step in CREATE_STEPS {
        let id = host.create(&["--network", "nat"]);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !(step.reached)(&lab, &mut host, &id) {
            assert!(
                std::time::Instant::now() < deadline,
                "step `{}` never seen",
                step.name
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        if step.hypervisor {
            let qemu = host.hypervisor_of(&id).expect("its hypervisor");
            common::serve::signal(qemu, libc::SIGKILL);
        } else {
            host.kill_serve();
            host.start();
        }
        let settled = host.wait_vm(&id, Duration::from_secs(180), |vm| {
            matches!(vm.state, VmState::Ready | VmState::Failed)
        });
        println!("killed at `{}`: settled {:?}", step.name, settled.state);
        if settled.state == VmState::Failed {
            let failure = settled.failure.as_ref().map(|f| f.message.as_str());
            assert!(
                failure.is_some_and(|m| !m.is_empty()),
                "killed at `{}`: failed without a reason",
                step.name
            );
        }
        host.vm_ok(&["rm", &id]);
        host.wait_state(&id, VmState::Destroyed, Duration::from_secs(90));
        let left = lab.leftovers();
        assert_eq!(left, Vec::<String>::new(), "killed at `{}`", step.name);
        assert_eq!(held_slots(&host), 0, "killed at `{}`: a slot", step.name);
        host.assert_clean();
    }
}

/// A private address on the internet namespace's side, for a tenant to
/// open: the server there sees the test host's address on that network.
const PRIVATE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 2);
const PRIVATE_HOST_ADDR: &str = "10.20.0.1";

/// `hearth tenant ARGS...` against the server with `token`.
fn tenant_cli(host: &Host, token: &str, args: &[&str]) -> std::process::Output {
    let mut full = vec!["tenant"];
    full.extend_from_slice(args);
    host.hearth(&full)
        .env("HEARTH_URL", &host.serve().url)
        .env("HEARTH_TOKEN", token)
        .output()
        .expect("hearth runs")
}

/// `hearth vm create ARGS` with a tenant's token: the new VM's id.
fn create_as(host: &Host, token: &str, args: &[&str]) -> String {
    let mut full = vec!["create"];
    full.extend_from_slice(args);
    let out = host.vm_cli_as(token, &full);
    assert!(out.status.success(), "{}", common::text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// What the guest sees fetching from `at:port` now: the answer and nc's
/// status.
fn fetch_from(host: &mut Host, id: &str, at: Ipv4Addr, port: u16) -> String {
    let fetch =
        format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {at} {port}; echo \"nc: $?\"");
    host.vm_ok(&["exec", id, "--", "sh", "-c", &fetch])
}

/// The host namespace's nftables tables of this lab's VMs (the hole
/// tables, `{prefix}-sN`).
fn slot_tables(lab: &Lab) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.host_ns, "nft", "list", "tables"])
        .output()
        .expect("nft runs");
    let ours = format!("table ip {}-s", lab.prefix);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&ours))
        .map(str::to_owned)
        .collect()
}

/// Three VMs of two tenants on a server whose default network is NAT, none
/// of them naming `network`. Tenant `closed` denies the internet server:
/// its VM cannot reach it (counted), nor the private network its own
/// policy allows (a VM's policy never opens one). Tenant `opened` is
/// allowed that private network by an admin: its VM reaches it and the
/// internet server, through the namespace's and the host's holes. A VM
/// created with `--network none` has no NIC whatever the default. Only an
/// admin sets a tenant's policy, and bad input is refused naming the fix.
#[test]
fn tenant_policies_bound_their_vms_and_the_default_network_gives_a_nic_unless_refused() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    ip(&[
        "-n",
        &lab.host_ns,
        "addr",
        "add",
        "10.20.0.1/24",
        "dev",
        "up0",
    ]);
    ip(&[
        "-n",
        &lab.internet_ns,
        "addr",
        "add",
        "10.20.0.2/24",
        "dev",
        "up1",
    ]);
    let port = serve_in(&lab.internet_ns);
    let private_port = serve_at(&lab.internet_ns, PRIVATE_ADDR);
    let mut host = networked_host_with(&lab, &["--default-network", "nat"]);
    let admin = host.admin_token();
    let closed_token = host.mint(&["--tenant", "closed"]);
    let opened_token = host.mint(&["--tenant", "opened"]);

    let not_admin = tenant_cli(
        &host,
        &opened_token,
        &["network", "set", "opened", "--net-allow", "10.20.0.0/16"],
    );
    assert!(!not_admin.status.success());
    assert!(
        common::text(&not_admin).contains("admin token"),
        "{}",
        common::text(&not_admin)
    );
    let loopback = tenant_cli(
        &host,
        &admin,
        &["network", "set", "opened", "--net-allow", "127.0.0.0/8"],
    );
    assert!(!loopback.status.success());
    let said = common::text(&loopback);
    assert!(
        said.contains("network_policy.allow: 127.0.0.0/8") && said.contains("loopback"),
        "{said}"
    );
    for (tenant, flags) in [
        ("closed", vec!["--net-deny", "203.0.113.2"]),
        (
            "opened",
            vec![
                "--net-allow",
                "10.20.0.0/16",
                "--net-allow",
                "203.0.113.0/24",
            ],
        ),
    ] {
        let mut args = vec!["network", "set", tenant];
        args.extend(flags);
        let out = tenant_cli(&host, &admin, &args);
        assert!(out.status.success(), "{}", common::text(&out));
    }
    let shown = tenant_cli(&host, &admin, &["network", "show", "closed"]);
    assert!(
        common::text(&shown).contains("deny 203.0.113.2/32"),
        "{}",
        common::text(&shown)
    );
    let wider = host.vm_cli_as(&opened_token, &["create", "--net-allow", "198.51.100.0/24"]);
    let said = common::text(&wider);
    assert!(
        !wider.status.success() && said.contains("outside what the VM's tenant may reach"),
        "{said}"
    );

    let closed = create_as(
        &host,
        &closed_token,
        &[
            "--net-allow",
            "10.20.0.0/16",
            "--net-allow",
            "203.0.113.0/24",
        ],
    );
    let opened = create_as(&host, &opened_token, &[]);
    let none = create_as(&host, &closed_token, &["--network", "none"]);
    for id in [&closed, &opened, &none] {
        host.wait_state(id, VmState::Ready, Duration::from_secs(300));
    }
    assert_eq!(
        slot_tables(&lab).len(),
        1,
        "one hole table: the opened VM's"
    );

    let denied = fetch_from(&mut host, &closed, INTERNET_ADDR, port);
    assert!(
        !denied.contains(HOST_ADDR) && !denied.ends_with("nc: 0\n"),
        "{denied:?}"
    );
    let private = fetch_from(&mut host, &closed, PRIVATE_ADDR, private_port);
    assert!(
        !private.contains(PRIVATE_HOST_ADDR) && !private.ends_with("nc: 0\n"),
        "a VM's own allow opened a private network: {private:?}"
    );
    let info: serde_json::Value =
        serde_json::from_str(&host.vm_ok(&["network", &closed, "--json"])).unwrap();
    assert!(
        info["refused_packets"].as_u64().unwrap_or(0) >= 2,
        "both refusals are counted: {info}"
    );
    let policy = host
        .vm(&closed)
        .network_policy
        .expect("the default gave it a NIC");
    assert_eq!(
        policy.deny,
        ["203.0.113.2/32"],
        "the tenant's denial is in the VM's record"
    );

    let reached = fetch_from(&mut host, &opened, INTERNET_ADDR, port);
    assert!(
        reached.ends_with(&format!("\r\n\r\n{HOST_ADDR}\nnc: 0\n")),
        "{reached:?}"
    );
    let inside = fetch_from(&mut host, &opened, PRIVATE_ADDR, private_port);
    assert!(
        inside.ends_with(&format!("\r\n\r\n{PRIVATE_HOST_ADDR}\nnc: 0\n")),
        "the opened private network: {inside:?}"
    );

    let no_nic = host.vm_cli(&["network", &none]);
    assert!(!no_nic.status.success(), "{}", common::text(&no_nic));
    assert!(host.vm(&none).network_policy.is_none());
    assert_eq!(
        lab.leftovers().len(),
        4,
        "two VMs' namespaces and host links"
    );

    narrowing_reaches_running_vms(&lab, &mut host, &admin, &opened, (port, private_port));

    for id in [&closed, &opened, &none] {
        host.vm_ok(&["rm", id]);
    }
    for id in [&closed, &opened, &none] {
        host.wait_state(id, VmState::Destroyed, Duration::from_secs(60));
    }
    assert_eq!(lab.leftovers(), Vec::<String>::new());
    assert_eq!(
        slot_tables(&lab),
        Vec::<String>::new(),
        "no hole table is left"
    );
    host.assert_clean();
}

/// The admin narrows tenant `opened` to its private network: its running
/// VM loses the internet server at once, keeps the private one, and its
/// record says so; a restarted server keeps it narrowed. Then the
/// tenant's policy is removed: the private network's holes go at once.
fn narrowing_reaches_running_vms(
    lab: &Lab,
    host: &mut Host,
    admin: &str,
    opened: &str,
    (port, private_port): (u16, u16),
) {
    let narrow = ["network", "set", "opened", "--net-allow", "10.20.0.0/16"];
    let out = tenant_cli(host, admin, &narrow);
    assert!(out.status.success(), "{}", common::text(&out));
    let refused = |seen: &str, what: &str| {
        assert!(
            !seen.contains("\r\n\r\n") && !seen.ends_with("nc: 0\n"),
            "{what} is still reached: {seen:?}"
        );
    };
    refused(
        &fetch_from(host, opened, INTERNET_ADDR, port),
        "the internet server",
    );
    let inside = fetch_from(host, opened, PRIVATE_ADDR, private_port);
    assert!(
        inside.ends_with(&format!("\r\n\r\n{PRIVATE_HOST_ADDR}\nnc: 0\n")),
        "the private network is still open: {inside:?}"
    );
    let policy = host.vm(opened).network_policy.expect("a NIC");
    assert_eq!(policy.allow, ["10.20.0.0/16"], "the record is narrowed");

    host.kill_serve();
    host.start();
    host.wait_state(opened, VmState::Ready, Duration::from_secs(60));
    refused(
        &fetch_from(host, opened, INTERNET_ADDR, port),
        "after a restart, the internet server",
    );

    let out = tenant_cli(host, admin, &["network", "rm", "opened"]);
    assert!(out.status.success(), "{}", common::text(&out));
    assert_eq!(
        slot_tables(lab),
        Vec::<String>::new(),
        "the hole table is gone"
    );
    refused(
        &fetch_from(host, opened, PRIVATE_ADDR, private_port),
        "the private network, its tenant's allowance taken back,",
    );
}

/// The pool's VMs now, as the admin sees them.
fn pooled_vms(host: &mut Host) -> Vec<hearth_types::pool::PooledVm> {
    let pool: hearth_types::pool::Pool = host.api().json("GET", "/v1/pools/minimal", None, 200);
    pool.vms
}

/// Waits until the pool has a VM waiting: its id.
fn waiting_vm(host: &mut Host) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let waiting = pooled_vms(host)
            .into_iter()
            .find(|v| v.state == hearth_types::pool::PoolVmState::Waiting);
        if let Some(vm) = waiting {
            return vm.id.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no pooled VM waits");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// On a server whose default network is NAT, a pool's VMs boot with a NIC
/// that is closed while they wait (everything denied, no name resolved).
/// A create that gets the default NIC is handed one: its NIC opens to the
/// create's policy before its agent gets the address, so it reaches the
/// internet server and its own denial is refused. A create with
/// `--network none` does not fit the pool and boots cold, without a NIC.
#[test]
fn a_pooled_vm_s_nic_opens_to_the_create_s_policy_at_its_hand_out() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let port = serve_in(&lab.internet_ns);
    let mut host = networked_host_with(&lab, &["--default-network", "nat"]);
    let body = r#"{"size": 1, "ttl_secs": 900}"#;
    let _: hearth_types::pool::Pool = host.api().json("PUT", "/v1/pools/minimal", Some(body), 200);
    let pooled = waiting_vm(&mut host);
    assert_eq!(
        lab.leftovers().len(),
        2,
        "the waiting VM's namespace and link"
    );
    let closed = host.vm(&pooled).network_policy.expect("a pooled NIC");
    assert_eq!(closed.deny, ["0.0.0.0/0"], "closed while it waits");

    let id = host.create(&["--net-deny", "198.51.100.0/24", "--wait", "ready"]);
    assert_eq!(id, pooled, "the create was handed the waiting VM");
    let policy = host.vm(&id).network_policy.expect("a NIC");
    assert_eq!(policy.deny, ["198.51.100.0/24"], "opened to the create's");
    let reached = fetch_from(&mut host, &id, INTERNET_ADDR, port);
    assert!(
        reached.ends_with(&format!("\r\n\r\n{HOST_ADDR}\nnc: 0\n")),
        "the handed-out VM reaches the internet server: {reached:?}"
    );
    let denied = fetch_from(&mut host, &id, Ipv4Addr::new(198, 51, 100, 7), port);
    assert!(!denied.ends_with("nc: 0\n"), "{denied:?}");
    let info: serde_json::Value =
        serde_json::from_str(&host.vm_ok(&["network", &id, "--json"])).unwrap();
    assert!(
        info["refused_packets"].as_u64().unwrap_or(0) >= 1,
        "its own denial is refused and counted: {info}"
    );

    let cold = host.create(&["--network", "none", "--wait", "ready"]);
    assert!(
        !pooled_vms(&mut host)
            .iter()
            .any(|v| v.id.to_string() == cold),
        "a create without a NIC was handed a pooled VM"
    );
    assert!(host.vm(&cold).network_policy.is_none());

    let (status, answer) = host.api().call("DELETE", "/v1/pools/minimal", None);
    assert_eq!(status, 200, "{answer}");
    for vm in [&id, &cold] {
        host.vm_ok(&["rm", vm]);
        host.wait_state(vm, VmState::Destroyed, Duration::from_secs(60));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !lab.leftovers().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "left: {:?}",
            lab.leftovers()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(held_slots(&host), 0);
}
