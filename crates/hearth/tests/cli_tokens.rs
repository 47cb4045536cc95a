//! `hearth token create|list|revoke` against a real `hearth serve` on a
//! private data directory (no kernel or image needed: no VM boots). The
//! secrets must never show in any output but `create`'s stdout.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `hearth --data-dir DATA ARGS...`, without the caller's HEARTH_* settings.
fn hearth(data: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.arg("--data-dir").arg(data).args(args);
    cmd.env_remove("HEARTH_URL").env_remove("HEARTH_TOKEN");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("hearth runs")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A new token's secret, from `create`'s stdout.
fn create(data: &Path, args: &[&str]) -> String {
    let mut full = vec!["token", "create"];
    full.extend_from_slice(args);
    let out = run(&mut hearth(data, &full));
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `hearth serve` on a free port of `data`, killed when dropped.
struct Serve {
    child: Child,
    url: String,
}

impl Serve {
    fn start(data: &Path) -> Serve {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let child = hearth(data, &["serve", "--listen", &listen])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("hearth serve starts");
        let serve = Serve {
            child,
            url: format!("http://{listen}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&listen).is_err() {
            assert!(Instant::now() < deadline, "hearth serve did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        serve
    }

    /// `hearth ARGS... --url URL --token TOKEN`.
    fn client(&self, data: &Path, args: &[&str], token: &str) -> Output {
        let mut cmd = hearth(data, args);
        cmd.args(["--url", &self.url]).env("HEARTH_TOKEN", token);
        run(&mut cmd)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tokens_are_listed_without_secrets_revoked_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let admin = create(data, &["--admin"]);
    let tenant = create(data, &["--tenant", "team-a"]);
    let brief = create(data, &["--tenant", "team-b", "--expires-in", "1"]);
    let serve = Serve::start(data);

    let out = serve.client(data, &["token", "list"], &admin);
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    for secret in [&admin, &tenant, &brief] {
        assert!(
            shown.contains(&secret[..12]),
            "{} not listed:\n{shown}",
            &secret[..12]
        );
        assert!(
            !shown.contains(&secret[12..]),
            "a secret is shown:\n{shown}"
        );
    }
    assert!(
        shown.contains("team-a") && shown.contains("never"),
        "{shown}"
    );

    // Revoked: its next request is refused.
    let out = serve.client(data, &["vm", "list"], &tenant);
    assert!(out.status.success(), "{}", text(&out));
    let out = serve.client(data, &["token", "revoke", &tenant[..12]], &admin);
    assert!(out.status.success(), "{}", text(&out));
    let out = serve.client(data, &["vm", "list"], &tenant);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("unauthorized"), "{}", text(&out));
    assert!(!text(&out).contains(&tenant[12..]), "{}", text(&out));

    // A whole token given to revoke is refused before it is sent, unechoed.
    let out = serve.client(data, &["token", "revoke", &admin], &admin);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(&admin[12..]), "{}", text(&out));

    // Expired: refused, and saying so.
    std::thread::sleep(Duration::from_millis(1_100));
    let out = serve.client(data, &["vm", "list"], &brief);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("expired"), "{}", text(&out));

    // A tenant's token may not list.
    let other = create(data, &["--tenant", "team-c"]);
    let out = serve.client(data, &["token", "list"], &other);
    assert!(text(&out).contains("admin token"), "{}", text(&out));
}

#[test]
fn an_expiry_of_zero_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&mut hearth(
        dir.path(),
        &["token", "create", "--expires-in", "0"],
    ));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--expires-in"), "{}", text(&out));
    assert!(out.stdout.is_empty(), "a token was printed: {}", text(&out));
}
