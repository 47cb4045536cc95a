//! The guest agent's channel end to end: a real `hearth serve`, real VMs
//! under QEMU whose image carries the static `hearth-agent`, the VM's
//! configuration sent over the persistent link, and what the agent
//! records read back through the API and the CLI.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::serve::Host;
use common::text;
use hearth_types::api::{ServiceLogs, VmHealth};
use hearth_types::guest::{ServiceState, Stream};
use hearth_types::VmState;

/// `hearth vm create --config FILE --wait ready`: the id.
fn create_with(host: &mut Host, config: &serde_json::Value, extra: &[&str]) -> String {
    let file = host.data().join(format!("config-{}.json", rand_suffix()));
    std::fs::write(&file, config.to_string()).unwrap();
    let mut args = vec!["--config", file.to_str().unwrap(), "--wait", "ready"];
    args.extend_from_slice(extra);
    host.create(&args)
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn health(host: &mut Host, id: &str) -> VmHealth {
    host.api()
        .json("GET", &format!("/v1/vms/{id}/health"), None, 200)
}

fn logs(host: &mut Host, id: &str, service: &str) -> ServiceLogs {
    let path = format!("/v1/vms/{id}/services/{service}/logs?tail=10000");
    host.api().json("GET", &path, None, 200)
}

/// Polls `f` until it returns `Some`, for at most `within`.
fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn destroy(host: &mut Host, id: &str) {
    host.vm_ok(&["rm", id]);
    host.wait_state(id, VmState::Destroyed, Duration::from_secs(30));
}

#[test]
fn vm_a_crashing_services_error_exit_and_crash_loop_outlive_the_vm() {
    if hearth_testkit::static_agent().is_none() {
        return;
    }
    let mut host = Host::new(&[]);
    host.start();
    let config = serde_json::json!({"services": [{
        "name": "broken",
        "argv": ["sh", "-c", "echo 'fatal: cannot open /etc/app.conf' >&2; exit 3"],
        "restart": "always",
        "crash_loop": {"restarts": 3, "window_secs": 60}
    }]});
    let id = create_with(&mut host, &config, &[]);
    wait_for(Duration::from_secs(60), "a crash loop", || {
        let h = health(&mut host, &id);
        h.services.iter().any(|s| s.crash_loop).then_some(())
    });
    destroy(&mut host, &id);

    let h = health(&mut host, &id);
    let s = h
        .services
        .iter()
        .find(|s| s.name == "broken")
        .expect("the service");
    assert!(s.crash_loop, "{s:?}");
    assert_eq!(s.state, ServiceState::CrashLooping, "{s:?}");
    assert!(s.restarts >= 2, "{s:?}");
    assert_eq!(s.last_exit.expect("an exit").status.code, Some(3), "{s:?}");
    let lines = logs(&mut host, &id, "broken").lines;
    assert!(
        lines
            .iter()
            .any(|l| l.stream == Stream::Stderr && l.line == "fatal: cannot open /etc/app.conf"),
        "{lines:?}"
    );
    let out = host.vm_cli(&["logs", &id, "--service", "broken"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("stderr fatal: cannot open"));
    // The boot report too stays with the VM.
    let report: hearth_types::api::VmBootReport =
        host.api()
            .json("GET", &format!("/v1/vms/{id}/boot-report"), None, 200);
    assert!(report.report.kernel.contains("cloud-amd64"), "{report:?}");
    assert!(report.report.memory_total_kib > 0, "{report:?}");
    let out = host.vm_cli(&["report", &id]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("kernel:"),
        "{}",
        text(&out)
    );
    // The diagnosis reads the same records (AgentFacts from the store).
    let (status, body) = host.get(&format!("/v1/vms/{id}/diagnosis"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"crash_loop\""), "{body}");
    assert!(body.contains("fatal: cannot open"), "{body}");
    let out = host.vm_cli(&["health", &id]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("crash loop"),
        "{}",
        text(&out)
    );
}

#[test]
fn vm_exec_streams_and_cp_moves_files_both_ways_checked() {
    if hearth_testkit::static_agent().is_none() {
        return;
    }
    let mut host = Host::new(&["--max-file-bytes", "1048576"]);
    host.start();
    let id = host.create(&["--wait", "ready"]);

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

    // Like a shell: 127 for a program that is not there, 128+9 for the
    // kill at the timeout.
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

    // Another tenant's VM does not exist for it; bad input is refused.
    let bob = host.mint(&["--tenant", "bob"]);
    let out = host.vm_cli_as(&bob, &["exec", &id, "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no VM"), "{}", text(&out));
    // The same refusal, before the upgrade, for the exec WebSocket.
    let out = host.vm_cli_as(&bob, &["exec", "-i", &id, "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no VM"), "{}", text(&out));
    for bad in [
        &["exec", &id][..],
        &["exec", &id, "--timeout", "0", "--", "true"],
    ] {
        let out = host.vm_cli(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out));
    }

    // --tty: the command's stdout is a terminal (and stderr joins it).
    let out = host.vm_cli(&[
        "exec",
        "--tty",
        &id,
        "--",
        "sh",
        "-c",
        "test -t 1 && echo on-a-tty; echo joined-stderr >&2",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("on-a-tty") && stdout.contains("joined-stderr"),
        "{}",
        text(&out)
    );
    let out = host.vm_cli(&["exec", &id, "--", "sh", "-c", "test -t 1 || echo no-tty"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "no-tty\n",
        "{}",
        text(&out)
    );

    // -e: a variable for this command only; -i: our stdin is its stdin.
    let out = host.vm_cli(&["exec", "-e", "X=1", &id, "--", "sh", "-c", "echo $X"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1\n",
        "{}",
        text(&out)
    );
    let out = exec_with_stdin(&mut host, &["-i", &id, "--", "sort"], b"b\na\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "a\nb\n",
        "{}",
        text(&out)
    );
    the_clock_is_the_hosts(&mut host, &id);
    port_forward_reaches_guest_servers(&mut host, &id);
    large_stdin_goes_through_whole(&mut host, &id);
    sigint_is_forwarded_without_a_terminal(&mut host, &id);
    exec_on_a_local_terminal(&mut host, &id);

    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("payload");
    let data: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    let target = format!("{id}:/tmp/payload");
    let out = host.vm_cli(&["cp", local.to_str().unwrap(), &target]);
    assert!(out.status.success(), "{}", text(&out));
    let ours = hex_sha256(&data);
    let out = host.vm_cli(&["exec", &id, "--", "sha256sum", "/tmp/payload"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&ours),
        "{}",
        text(&out)
    );

    let back = work.path().join("back");
    let out = host.vm_cli(&["cp", &target, back.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&back).unwrap(), data);
    a_dynamic_program_names_its_missing_loader(&mut host, &id);

    // Over the bound (1 MiB here), in either direction: refused, named.
    let big = work.path().join("big");
    std::fs::write(&big, vec![1u8; 2 << 20]).unwrap();
    let out = host.vm_cli(&["cp", big.to_str().unwrap(), &format!("{id}:/tmp/big")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("1048576"), "{}", text(&out));
    let out = host.vm_cli(&[
        "exec",
        &id,
        "--",
        "dd",
        "if=/dev/zero",
        "of=/tmp/big",
        "bs=1M",
        "count=2",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = host.vm_cli(&["cp", &format!("{id}:/tmp/big"), big.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("1048576"), "{}", text(&out));
    destroy(&mut host, &id);
}

/// The host's glibc `/bin/true` in the busybox-only minimal image: there,
/// yet "not found" to the kernel, because its loader is not; the agent
/// names the loader.
fn a_dynamic_program_names_its_missing_loader(host: &mut Host, id: &str) {
    let out = host.vm_cli(&["cp", "/bin/true", &format!("{id}:/tmp/hello")]);
    assert!(out.status.success(), "{}", text(&out));
    let out = host.vm_cli(&["exec", id, "--", "chmod", "+x", "/tmp/hello"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = host.vm_cli(&["exec", id, "--", "/tmp/hello"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "cannot start \"/tmp/hello\": its ELF interpreter /lib64/ld-linux-x86-64.so.2 is missing"
        ),
        "{}",
        text(&out)
    );
}

/// 4 MiB of random bytes piped through `cat` come back identical, and
/// into `sha256sum` give our digest: input the guest takes slower than we
/// send it is held back, never dropped, and output is read meanwhile.
fn large_stdin_goes_through_whole(host: &mut Host, id: &str) {
    use std::io::Read;
    let mut data = vec![0u8; 4 << 20];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    let ours = hex_sha256(&data);
    let out = exec_with_stdin(host, &["-i", id, "--", "cat"], &data);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), data.len(), "cat's output length");
    assert_eq!(hex_sha256(&out.stdout), ours, "cat's output differs");
    let out = exec_with_stdin(host, &["-i", id, "--", "sha256sum"], &data);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let digest = String::from_utf8_lossy(&out.stdout);
    assert!(digest.starts_with(&ours), "{ours} != {digest}");
}

/// `hearth vm exec ARGS` with `stdin` piped into it, to its end.
fn exec_with_stdin(host: &mut Host, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cli(host, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hearth runs");
    let mut pipe = child.stdin.take().expect("stdin piped");
    // Fed from a thread while the output is read: a large input echoed
    // back would otherwise fill both pipes and stop us and hearth alike.
    let stdin = stdin.to_vec();
    let feed = std::thread::spawn(move || pipe.write_all(&stdin));
    let out = child.wait_with_output().unwrap();
    feed.join()
        .unwrap()
        .expect("hearth read its stdin to the end");
    out
}

/// `hearth vm exec ARGS`, not yet run, as admin against the host's server.
fn cli(host: &mut Host, args: &[&str]) -> std::process::Command {
    let api = host.api();
    let mut full = vec!["vm", "exec"];
    full.extend_from_slice(args);
    let mut cmd = host.hearth(&full);
    cmd.env("HEARTH_URL", &api.url)
        .env("HEARTH_TOKEN", &api.token);
    cmd
}

/// `hearth vm exec -it ID -- sh` on a real pseudo-terminal, as a user at a
/// terminal would run it: the remote terminal has our size (and follows a
/// resize), what we type runs, the remote exit status is ours, and our
/// terminal's settings are back as they were afterwards (it was raw
/// meanwhile).
fn exec_on_a_local_terminal(host: &mut Host, id: &str) {
    let pty = pty::Pty::open(33, 97);
    let before = pty.attr();
    let mut child = cli(host, &["-it", id, "--", "sh"])
        .stdin(pty.slave_stdio())
        .stdout(pty.slave_stdio())
        .stderr(pty.slave_stdio())
        .spawn()
        .expect("hearth runs");
    wait_for(Duration::from_secs(30), "the terminal in raw mode", || {
        (pty.attr().c_lflag & libc::ECHO == 0).then_some(())
    });
    let mut screen = pty::Screen::new(&pty);
    screen.type_until("stty size\r", "33 97", Duration::from_secs(60));
    // A resize: the new size, then SIGWINCH (the kernel sends it only to a
    // terminal's own session; the CLI's is ours).
    pty.resize(41, 120);
    // SAFETY: kill with the pid of our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGWINCH) }, 0);
    screen.type_until("stty size\r", "41 120", Duration::from_secs(30));
    // Ctrl-C is a key for the remote terminal: it interrupts the remote
    // foreground program, not us.
    screen.type_until(
        "sh -c 'echo sle''eping; exec sleep 60'\r",
        "sleeping",
        Duration::from_secs(30),
    );
    screen.type_until("\x03echo rc=$?\r", "rc=130", Duration::from_secs(30));
    screen.type_text("exit 7\r");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(7), "{}", screen.text());
    assert!(
        hearth_testkit::pty::same_settings(&pty.attr(), &before),
        "the terminal was left changed"
    );
}

/// `hearth vm exec -i` without a terminal: a SIGINT sent to the CLI goes
/// to the command, which decides what it means (here: a trap, exit 5), and
/// the CLI waits for its end.
fn sigint_is_forwarded_without_a_terminal(host: &mut Host, id: &str) {
    use std::io::Read;
    use std::process::Stdio;
    let script = "trap 'echo got-int; exit 5' INT; echo ready; while :; do sleep 1; done";
    let mut child = cli(host, &["-i", id, "--", "sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hearth runs");
    let mut stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            let _ = tx.send(buf[..n].to_vec());
        }
    });
    let mut shown = Vec::new();
    let mut wait_shown = |want: &str| {
        wait_for(Duration::from_secs(30), want, || {
            while let Ok(chunk) = rx.try_recv() {
                shown.extend(chunk);
            }
            String::from_utf8_lossy(&shown).contains(want).then_some(())
        })
    };
    wait_shown("ready\n");
    // SAFETY: kill with the pid of our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    wait_shown("got-int\n");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(5));
}

/// The guest's clock is the host's (the minimal image has no clock device:
/// without the host's time it would be 1970), and the boot report says
/// how it was set.
fn the_clock_is_the_hosts(host: &mut Host, id: &str) {
    let error = common::guest_clock::guest_clock_error(host, id);
    assert!(
        error < Duration::from_secs(1),
        "the guest's clock is {error:?} off"
    );
    let report: hearth_types::api::VmBootReport =
        host.api()
            .json("GET", &format!("/v1/vms/{id}/boot-report"), None, 200);
    let clock = report
        .report
        .clock
        .expect("the boot report shows the clock");
    assert!(clock.syncs >= 1 && clock.error.is_none(), "{clock:?}");
}

/// `hearth vm port-forward` to busybox's httpd on the guest's loopback: a
/// page, 64 MiB whole, 20 requests at once; a port with nothing behind it
/// is named on stderr; another tenant finds no VM.
fn port_forward_reaches_guest_servers(host: &mut Host, id: &str) {
    let setup = "mkdir -p /tmp/www && echo 'hello from the guest' > /tmp/www/index.html \
        && dd if=/dev/urandom of=/tmp/www/big bs=1048576 count=64 2>/dev/null \
        && sha256sum /tmp/www/big && httpd -p 127.0.0.1:8080 -h /tmp/www";
    let out = host.vm_cli(&["exec", id, "--timeout", "300", "--", "sh", "-c", setup]);
    assert!(out.status.success(), "{}", text(&out));
    let guest_sha = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned();

    let (mut forward, ports) = host.port_forward(id, &[":8080", ":9"]);
    let (web, nothing) = (ports[0], ports[1]);

    let page = http_get(web, "/");
    assert!(page.contains("hello from the guest"), "{page}");
    let big = http_get_bytes(web, "/big");
    assert_eq!(big.len(), 64 << 20);
    assert_eq!(hex_sha256(&big), guest_sha);
    let many: Vec<_> = (0..20)
        .map(|_| std::thread::spawn(move || http_get(web, "/")))
        .collect();
    for page in many {
        assert!(page.join().unwrap().contains("hello from the guest"));
    }

    // Nothing behind guest port 9: the local connection just ends, and
    // the forwarder says why.
    assert!(http_get_bytes(nothing, "/").is_empty());
    interrupt(&forward);
    let status = wait_exit(&mut forward, Duration::from_secs(10));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut forward.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.contains("nothing listens on port 9"), "{stderr}");

    let bob = host.mint(&["--tenant", "bob"]);
    let out = host.vm_cli_as(&bob, &["port-forward", id, ":8080"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no VM"), "{}", text(&out));
}

/// SIGINT to a child, as Ctrl-C would send it.
fn interrupt(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The body of `GET path` (HTTP/1.0, so the server closes after it). A
/// reset (a forwarder dropping a connection it could not carry, with our
/// request unread) ends it like a close.
fn http_get_bytes(port: u16, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(c, "GET {path} HTTP/1.0\r\nHost: guest\r\n\r\n").unwrap();
    let mut all = Vec::new();
    if let Err(e) = c.read_to_end(&mut all) {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    match all.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => all.split_off(at + 4),
        None => all,
    }
}

fn http_get(port: u16, path: &str) -> String {
    String::from_utf8_lossy(&http_get_bytes(port, path)).into_owned()
}

/// The child's status, within `within` (polled: a child has no fd to wait on).
fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    wait_for(within, "the CLI's exit", || child.try_wait().unwrap())
}

fn hex_sha256(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

#[test]
fn vm_records_printed_while_the_controller_was_down_arrive_once() {
    if hearth_testkit::static_agent().is_none() {
        return;
    }
    let mut host = Host::new(&[]);
    host.start();
    let config = serde_json::json!({"services": [{
        "name": "ticker",
        "argv": ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done"],
    }]});
    let id = create_with(&mut host, &config, &[]);
    let before = wait_for(Duration::from_secs(60), "ticks", || {
        let n = logs(&mut host, &id, "ticker").lines.len();
        (n >= 3).then_some(n)
    });
    assert!(host.stop_serve().success());
    std::thread::sleep(Duration::from_secs(4));
    host.start();
    // 4 s away at one line per 0.3 s: at least ~10 lines came meanwhile.
    let lines = wait_for(
        Duration::from_secs(60),
        "the lines printed meanwhile",
        || {
            let lines = logs(&mut host, &id, "ticker").lines;
            (lines.len() >= before + 15).then_some(lines)
        },
    );
    let mut seen = BTreeMap::new();
    for l in &lines {
        let n: u32 = l
            .line
            .strip_prefix("tick ")
            .and_then(|n| n.parse().ok())
            .expect("a tick");
        *seen.entry(n).or_insert(0) += 1;
    }
    let last = *seen.keys().last().unwrap();
    for n in 1..=last {
        assert_eq!(seen.get(&n), Some(&1), "tick {n} in {lines:?}");
    }
    assert!(
        lines.windows(2).all(|w| w[0].at <= w[1].at),
        "times out of order"
    );
    destroy(&mut host, &id);
}

#[test]
fn vm_debian_is_ready_only_once_its_services_port_opens() {
    if hearth_testkit::static_agent().is_none() {
        return;
    }
    common::ensure_assets("debian");
    let mut host = Host::new(&[]);
    host.start();
    let config = serde_json::json!({"services": [{
        "name": "late",
        "argv": ["sh", "-c", "sleep 4; echo opening; while true; do busybox nc -l -p 8080 </dev/null; done"],
        "readiness": {"kind": "tcp", "port": 8080}
    }]});
    let id = create_with(
        &mut host,
        &config,
        &["--image", "debian", "--memory", "512"],
    );
    let vm = host.vm(&id);
    let ready_at = vm.ready_at.expect("ready_at");
    let lines = logs(&mut host, &id, "late").lines;
    let opening = lines
        .iter()
        .find(|l| l.line == "opening")
        .unwrap_or_else(|| panic!("no 'opening' line: {lines:?}"));
    assert!(
        ready_at >= opening.at,
        "ready at {ready_at} before the port opened at {}",
        opening.at
    );
    let h = health(&mut host, &id);
    assert!(h.ready && h.services[0].ready, "{h:?}");
    // systemd starts the clock at its own build date at the earliest: the
    // host's time must win.
    let error = common::guest_clock::guest_clock_error(&mut host, &id);
    assert!(
        error < Duration::from_secs(1),
        "the guest's clock is {error:?} off"
    );
    destroy(&mut host, &id);
}

#[test]
fn vm_a_vm_waiting_on_a_service_that_never_gets_ready_can_be_looked_into() {
    if hearth_testkit::static_agent().is_none() {
        return;
    }
    let mut host = Host::new(&[]);
    host.start();
    // And a script whose #! interpreter the minimal image lacks: there,
    // yet ENOENT to the kernel; the agent and the diagnosis name it.
    let config = serde_json::json!({
        "files": [{"path": "/opt/app.py", "content": "#!/usr/bin/python3\nprint('hi')\n", "mode": 493}],
        "services": [{
            "name": "never",
            "argv": ["sleep", "600"],
            "readiness": {"kind": "tcp", "port": 9999}
        }, {
            "name": "script",
            "argv": ["/opt/app.py"],
            "restart": "never"
        }]
    });
    let file = host.data().join("never.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let id = host.create(&[
        "--config",
        file.to_str().unwrap(),
        "--readiness-timeout",
        "90",
    ]);
    wait_for(Duration::from_secs(60), "the agent connected", || {
        health(&mut host, &id).agent.connected.then_some(())
    });
    assert_eq!(
        host.vm(&id).state,
        VmState::Booting,
        "readiness never passes"
    );
    let out = host.vm_cli(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo looking; ps | grep -c 'sleep 600'",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("looking\n"),
        "{}",
        text(&out)
    );
    let h = health(&mut host, &id);
    assert!(!h.ready && !h.services[0].ready, "{h:?}");
    assert_eq!(h.services[0].state, ServiceState::Starting, "{h:?}");
    let path = format!("/v1/vms/{id}/diagnosis");
    let body = wait_for(Duration::from_secs(30), "the script's finding", || {
        let (status, body) = host.get(&path);
        (status == 200 && body.contains("\"missing_interpreter\"")).then_some(body)
    });
    assert!(
        body.contains(
            r#"script: could not be started: cannot start \"/opt/app.py\": its interpreter /usr/bin/python3 (from its #! line) is missing"#
        ),
        "{body}"
    );
    destroy(&mut host, &id);
}

/// The minimal image's init is the agent: it must raise `lo` itself, or a
/// service listening on 127.0.0.1 can never pass its TCP check (found by
/// the quick start: busybox httpd up, the VM never ready).
#[test]
fn vm_a_minimal_vm_reaches_its_own_loopback_port_and_gets_ready() {
    if hearth_testkit::static_agent().is_none() {
        return;
    }
    let mut host = Host::new(&[]);
    host.start();
    let config = serde_json::json!({
        "services": [{
            "name": "web",
            "argv": ["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/tmp"],
            "readiness": {"kind": "tcp", "port": 8080}
        }]
    });
    let id = create_with(&mut host, &config, &["--readiness-timeout", "60"]);
    let web = health(&mut host, &id)
        .services
        .into_iter()
        .find(|s| s.name == "web")
        .expect("web in the health");
    assert!(web.ready, "{web:?}");
    assert_eq!(web.state, ServiceState::Running, "{web:?}");
    let flags = host.vm_cli(&["exec", &id, "--", "cat", "/sys/class/net/lo/flags"]);
    assert_eq!(
        String::from_utf8_lossy(&flags.stdout).trim(),
        "0x9",
        "lo is up"
    );
    destroy(&mut host, &id);
}

/// A real pseudo-terminal for the CLI to run on, and what it shows.
mod pty {
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::{AsFd, OwnedFd};
    use std::process::Stdio;
    use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
    use std::time::{Duration, Instant};

    pub struct Pty {
        master: File,
        pub slave: OwnedFd,
    }

    impl Pty {
        /// A new pair whose terminal is `rows` x `cols`.
        pub fn open(rows: u16, cols: u16) -> Pty {
            let (master, slave) = hearth_testkit::pty::openpty();
            let pty = Pty {
                master: File::from(master),
                slave,
            };
            pty.resize(rows, cols);
            pty
        }

        pub fn resize(&self, rows: u16, cols: u16) {
            hearth_testkit::pty::set_size(&self.slave, rows, cols);
        }

        /// The terminal's settings now.
        pub fn attr(&self) -> libc::termios {
            hearth_testkit::pty::settings(&self.slave)
        }

        /// The terminal as a child's stdin, stdout or stderr.
        pub fn slave_stdio(&self) -> Stdio {
            Stdio::from(self.slave.as_fd().try_clone_to_owned().unwrap())
        }
    }

    /// What the terminal showed so far (read by a thread from the master
    /// side), and the keyboard.
    pub struct Screen {
        keys: File,
        chunks: Receiver<Vec<u8>>,
        shown: Vec<u8>,
    }

    impl Screen {
        pub fn new(pty: &Pty) -> Screen {
            let mut reader = pty.master.try_clone().unwrap();
            let (tx, chunks) = channel();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                // Ends with EIO once every slave fd is closed.
                while let Ok(n @ 1..) = reader.read(&mut buf) {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            });
            Screen {
                keys: pty.master.try_clone().unwrap(),
                chunks,
                shown: Vec::new(),
            }
        }

        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.shown).into_owned()
        }

        pub fn type_text(&mut self, keys: &str) {
            self.keys.write_all(keys.as_bytes()).unwrap();
        }

        /// Types `keys` and waits for `want` (a size, "ROWS COLS") to be
        /// shown after it; types them again each time the remote shell
        /// answered another size.
        pub fn type_until(&mut self, keys: &str, want: &str, within: Duration) {
            let deadline = Instant::now() + within;
            let mut from = self.shown.len();
            self.type_text(keys);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(
                    !left.is_zero(),
                    "no {want:?} within {within:?}: {}",
                    self.text()
                );
                let chunk = match self.chunks.recv_timeout(left) {
                    Ok(chunk) => chunk,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => {
                        panic!("the terminal closed before {want:?}: {}", self.text())
                    }
                };
                self.shown.extend(chunk);
                let new = String::from_utf8_lossy(&self.shown[from..]).into_owned();
                if new.contains(want) {
                    return;
                }
                // Another size answered (the resize came later): ask again.
                if answers_another_size(&new, want) {
                    from = self.shown.len();
                    self.type_text(keys);
                }
            }
        }
    }

    /// Whether `shown` has a whole line "ROWS COLS" other than `want`.
    fn answers_another_size(shown: &str, want: &str) -> bool {
        shown.split('\n').rev().skip(1).any(|line| {
            let line = line.trim_end_matches('\r');
            let words: Vec<&str> = line.split_whitespace().collect();
            words.len() == 2
                && words.iter().all(|w| w.bytes().all(|b| b.is_ascii_digit()))
                && line != want
        })
    }
}
