//! The login fixtures on the host, no VM: `fixtures/fake-codex login`
//! against `hearth_testkit::fake_oauth::FakeOAuth`, every request to the
//! provider going by name (`auth.fake-provider.test`, which only the
//! proxy's static hosts table knows) through a real `hearth_egress::Egress`
//! on a loopback TCP port, as the guest's loopback proxy does. `$BROWSER`
//! is a small script standing in for the person: it fetches the consent
//! page through the proxy and submits it, and follows the redirect to the
//! tool's loopback callback.
//!
//! Shows PKCE and the loopback callback (the fake refuses anything else),
//! the proxying (the records and the `Host` headers), and the in-place
//! rewrite of auth.json (a partial file, then the full one in the same
//! inode); the tokens land in auth.json and nowhere in the tool's output.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_egress::testing::MemorySink;
use hearth_egress::{Egress, IpNet, Kind, Outcome, Policy, Ports, StaticHosts, TcpConnector};
use hearth_testkit::fake_oauth::FakeOAuth;

const NAME: &str = "auth.fake-provider.test";

/// Stands in for the person at the browser: fetches the consent page
/// (through the proxy, from the environment), submits its form, and opens
/// the redirect (to localhost: no proxy) as a browser would.
const TEST_BROWSER: &str = r#"#!/usr/bin/env python3
import html.parser, sys, urllib.error, urllib.parse, urllib.request

class Form(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.action, self.fields = None, {}
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.action = a.get("action")
        if tag == "input" and a.get("name"):
            self.fields[a["name"]] = a.get("value", "")

class Keep(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None

def fail(why):
    print(f"test browser: {why}", file=sys.stderr, flush=True)
    sys.exit(1)

url = sys.argv[1]
form = Form()
form.feed(urllib.request.urlopen(url, timeout=30).read().decode())
if not form.action:
    fail("no form on the consent page")
body = urllib.parse.urlencode(form.fields).encode()
try:
    urllib.request.build_opener(Keep).open(urllib.parse.urljoin(url, form.action), body, timeout=30)
    fail("the approval did not redirect")
except urllib.error.HTTPError as e:
    if e.code != 302:
        fail(f"the approval answered {e.code}")
    location = e.headers["Location"]
if not location.startswith("http://localhost:"):
    fail("the redirect is not to the loopback callback")
page = urllib.request.urlopen(location, timeout=60).read().decode()
if "Signed in to fake Codex" not in page:
    fail("the callback did not say signed in")
"#;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn have_python() -> bool {
    Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The egress proxy on 127.0.0.1, one `serve` per connection: the fake's
/// name resolves to 127.0.0.1 through the static hosts table, and the
/// policy allows that name, the fake's port and 127.0.0.1/32 only.
fn start_proxy(
    runtime: &tokio::runtime::Runtime,
    fake: SocketAddr,
    sink: Arc<MemorySink>,
) -> SocketAddr {
    let hosts = StaticHosts::system()
        .with(NAME, &[IpAddr::from([127, 0, 0, 1])])
        .unwrap();
    let egress = Egress::new(Arc::new(hosts), Arc::new(TcpConnector::default()), sink);
    let policy = Policy::allow_list([NAME])
        .unwrap()
        .with_ports(Ports::Only(vec![fake.port()]))
        .allow_network(IpNet::parse("127.0.0.1/32").unwrap());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (egress, policy) = (egress.clone(), policy.clone());
            tokio::spawn(async move { egress.serve(stream, &policy).await });
        }
    });
    addr
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Every (inode, content) auth.json had, polled until `stop`.
fn watch(path: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<(u64, String)>> {
    std::thread::spawn(move || {
        let mut seen: Vec<(u64, String)> = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            if let (Ok(meta), Ok(text)) = (std::fs::metadata(&path), std::fs::read_to_string(&path))
            {
                let now = (meta.ino(), text);
                if !now.1.is_empty() && seen.last() != Some(&now) {
                    seen.push(now);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        seen
    })
}

fn wait_with_deadline(mut child: Child, deadline: Duration) -> std::process::Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "fake-codex did not finish in {deadline:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn fake_codex_logs_in_through_the_egress_proxy_and_rewrites_auth_json_in_place() {
    if !have_python() {
        println!("skipped: python3 is not installed (fake-codex needs it)");
        return;
    }
    let fake = FakeOAuth::start().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sink = Arc::new(MemorySink::default());
    let proxy = start_proxy(&runtime, fake.addr(), sink.clone());
    let home = tempfile::tempdir().unwrap();
    let browser = home.path().join("test-browser");
    std::fs::write(&browser, TEST_BROWSER).unwrap();
    std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755)).unwrap();
    let codex_home = home.path().join(".codex");
    let auth = codex_home.join("auth.json");
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(auth.clone(), stop.clone());

    let proxy_url = format!("http://{proxy}");
    let port = free_port();
    let child = Command::new(fixture("fake-codex"))
        .args(["login", "--port", &port.to_string()])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("CODEX_HOME", &codex_home)
        .env(
            "FAKE_OAUTH_ISSUER",
            format!("http://{NAME}:{}", fake.addr().port()),
        )
        .env("BROWSER", &browser)
        .envs(["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"].map(|k| (k, &proxy_url)))
        .envs(["no_proxy", "NO_PROXY"].map(|k| (k, "127.0.0.1,localhost")))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_with_deadline(child, Duration::from_secs(60));
    stop.store(true, Ordering::SeqCst);
    let seen = watcher.join().unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{output}");
    assert!(
        output.contains(&format!(
            "Starting local login server on http://localhost:{port}."
        )),
        "{output}"
    );
    assert!(
        output.contains("navigate to this URL to authenticate:"),
        "{output}"
    );
    assert!(output.contains("Successfully logged in"), "{output}");

    // The provider: one page, one approval, one grant, no failure, all by name.
    assert_eq!(
        (
            fake.pages_served(),
            fake.approvals(),
            fake.token_grants(),
            fake.token_failures()
        ),
        (1, 1, 1, 0)
    );
    let by_name = format!("{NAME}:{}", fake.addr().port());
    assert_eq!(fake.hosts_seen(), [by_name.as_str(); 3]);
    let issued = fake.issued();
    let tokens = &issued[0];

    // The proxy carried all three, as forwarded requests to the name.
    let records = sink.records();
    assert_eq!(records.len(), 3, "{records:?}");
    for r in &records {
        assert_eq!(r.outcome, Outcome::Allowed, "{r:?}");
        assert_eq!(
            (r.kind, r.host.as_deref()),
            (Some(Kind::Forward), Some(NAME))
        );
    }

    // auth.json: the tokens, in place, private.
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&auth).unwrap()).unwrap();
    assert_eq!(written["OPENAI_API_KEY"], serde_json::Value::Null);
    assert_eq!(written["tokens"]["access_token"], tokens.access_token);
    assert_eq!(written["tokens"]["refresh_token"], tokens.refresh_token);
    assert_eq!(written["tokens"]["id_token"], tokens.id_token);
    assert_eq!(written["tokens"]["account_id"], tokens.account_id);
    assert!(
        written["last_refresh"].as_str().unwrap().ends_with('Z'),
        "{written}"
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&codex_home), mode(&auth)), (0o700, 0o600));
    let partial: serde_json::Value = serde_json::json!({ "OPENAI_API_KEY": null, "tokens": null });
    let first: serde_json::Value = serde_json::from_str(&seen[0].1).unwrap();
    assert_eq!(first, partial, "the partial file first: {seen:?}");
    assert_eq!(
        seen.last().unwrap().1,
        std::fs::read_to_string(&auth).unwrap()
    );
    assert!(
        seen.iter().all(|(ino, _)| *ino == seen[0].0),
        "rewritten in place, not renamed"
    );

    for secret in tokens.secrets() {
        assert!(
            !output.contains(secret),
            "fake-codex printed a token:\n{output}"
        );
        assert!(
            !format!("{records:?}").contains(secret),
            "a record holds a token"
        );
    }
}

#[test]
fn fake_codex_refuses_a_callback_with_the_wrong_state() {
    if !have_python() {
        println!("skipped: python3 is not installed (fake-codex needs it)");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    // The "browser" goes straight to the callback with a state of its own.
    let browser = home.path().join("forged-callback");
    let script = format!(
        "#!/bin/sh\nexec curl -s -o /dev/null --noproxy '*' \
         'http://127.0.0.1:{port}/auth/callback?code=c&state=forged'\n"
    );
    std::fs::write(&browser, script).unwrap();
    std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755)).unwrap();
    let child = Command::new(fixture("fake-codex"))
        .args(["login", "--port", &port.to_string()])
        .env("HOME", home.path())
        .env("FAKE_OAUTH_ISSUER", "http://auth.fake-provider.test:1")
        .env("BROWSER", &browser)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_with_deadline(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "fake-codex: the callback's state does not match: login aborted"
    );
    assert!(!home.path().join(".codex/auth.json").exists());

    let unset = Command::new(fixture("fake-codex"))
        .arg("login")
        .env_remove("FAKE_OAUTH_ISSUER")
        .output()
        .unwrap();
    assert_eq!(unset.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unset.stderr).contains("FAKE_OAUTH_ISSUER"));
}
