//! Users' CLI VMs against a real `hearth serve`, real VMs and the vault:
//! a credential a login session captured (the fake provider and the fake
//! Codex, on the small `cli-test` image) is in the user's CLI VM, the
//! user's and 0600, and the tool there is logged in as that login; a
//! refresh made in the VM is sealed as the next version and is what a
//! fresh CLI VM gets; another user of the tenant, and the same name in
//! another tenant, get nothing. No token appears in the server's output,
//! the data directory's files or any answer. The real `codex` CLI (the
//! `cli` image) reports a vault-given `auth.json` logged in with no
//! network.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::serve::{Api, Host};
use hearth_testkit::fake_oauth::FakeOAuth;
use hearth_types::session::Session;
use hearth_types::SessionState;
use serde_json::Value;

const PROVIDER_HOST: &str = "auth.fake-provider.test";
const AUTH: &str = "/home/hearth/.codex/auth.json";

/// Stands in for the person: fetches the consent page through the
/// proxy, submits it, follows the redirect to the tool's callback.
const APPROVE: &str = r#"#!/usr/bin/env python3
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
url = sys.argv[1]
form = Form()
form.feed(urllib.request.urlopen(url, timeout=30).read().decode())
body = urllib.parse.urlencode(form.fields).encode()
try:
    urllib.request.build_opener(Keep).open(urllib.parse.urljoin(url, form.action), body, timeout=30)
    sys.exit("the approval did not redirect")
except urllib.error.HTTPError as e:
    location = e.headers["Location"]
urllib.request.urlopen(location, timeout=60).read()
"#;

fn recipe() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    dir.join("cli-test.toml").display().to_string()
}

fn provider_entry(issuer: &str) -> String {
    let approve = APPROVE;
    format!(
        r#"
name = "fake-codex"
description = "Codex CLI's login against the tests' fake provider, no browser"
image = "cli-test"
login = ["fake-codex", "login"]
login_after = []
opens_browser_with = "xdg-open"
env = {{ FAKE_OAUTH_ISSUER = "{issuer}", BROWSER = "/home/hearth/approve" }}
domains = ["{PROVIDER_HOST}"]

[[setup_files]]
path = "approve"
mode = 0o755
content = '''{approve}'''

[capture]
stable_ms = 1000

[[capture.files]]
path = ".codex/auth.json"
required_keys = ["/tokens/access_token", "/tokens/refresh_token"]
"#
    )
}

struct Rig {
    fake: FakeOAuth,
    host: Host,
    a: Api,
    b: Api,
}

fn rig() -> Rig {
    common::ensure_assets(&recipe());
    let fake = FakeOAuth::start().expect("the fake provider starts");
    let port = fake.addr().port().to_string();
    let issuer = format!("http://{PROVIDER_HOST}:{port}");
    let pin = format!("{PROVIDER_HOST}=127.0.0.1");
    let mut host = Host::new(&[]);
    let providers = host.data().join("providers");
    std::fs::create_dir_all(&providers).unwrap();
    std::fs::write(providers.join("fake-codex.toml"), provider_entry(&issuer)).unwrap();
    let dir = providers.to_str().unwrap().to_owned();
    host.add_serve_args(&["--providers", &dir, "--egress-host", &pin]);
    host.add_serve_args(&[
        "--egress-allow-network",
        "127.0.0.1/32",
        "--egress-port",
        &port,
    ]);
    host.start();
    let mut a = host.api();
    a.token = host.mint(&["--tenant", "team-a"]);
    let mut b = host.api();
    b.token = host.mint(&["--tenant", "team-b"]);
    Rig { fake, host, a, b }
}

fn wait_session(api: &Api, id: &str, within: Duration) -> Session {
    let deadline = Instant::now() + within;
    loop {
        let s: Session = api.json("GET", &format!("/v1/sessions/{id}"), None, 200);
        if !s.state.is_live() {
            return s;
        }
        assert!(Instant::now() < deadline, "session {id} never ended: {s:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Polls the user's CLI VM until `done`; the last answer.
fn wait_cli(api: &Api, user: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let vm: Value = api.json("GET", &format!("/v1/cli/{user}"), None, 200);
        if done(&vm) {
            return vm;
        }
        assert!(
            Instant::now() < deadline,
            "the CLI VM of {user} never got there: {vm}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn version(vm: &Value, provider: &str) -> Option<u64> {
    vm["credentials"][provider].as_u64()
}

fn start_cli(api: &Api, user: &str, image: &str) -> Value {
    let body = format!(r#"{{"image": "{image}"}}"#);
    api.json("POST", &format!("/v1/cli/{user}"), Some(&body), 201)
}

/// `hearth cli exec USER -- runuser -u hearth -- ARGS` as the tenant:
/// (exit code, output).
fn exec_as_user(host: &Host, token: &str, user: &str, args: &[&str]) -> (i32, String) {
    let mut full = vec!["cli", "exec", user, "--", "runuser", "-u", "hearth", "--"];
    full.extend(["env", "HOME=/home/hearth"]);
    full.extend_from_slice(args);
    let out = host
        .hearth(&full)
        .env("HEARTH_URL", &host.serve().url)
        .env("HEARTH_TOKEN", token)
        .output()
        .expect("hearth runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// A VM's writable disk (its layer, sized in GiB, sparse): the guest's
/// own files, where a CLI VM's credential is meant to be; not searched.
fn is_disk(entry: &std::fs::DirEntry) -> bool {
    entry.metadata().is_ok_and(|m| m.len() > 64 << 20)
}

/// Every regular file under `dir` but VM disks, read whole.
fn files_under(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            files_under(&path, out);
        } else if kind.is_file() && !is_disk(&entry) {
            if let Ok(bytes) = std::fs::read(&path) {
                out.push((path.display().to_string(), bytes));
            }
        }
    }
}

fn assert_nowhere(host: &Host, secrets: &[String], answers: &str) {
    let mut files = Vec::new();
    for part in ["vms", "archives", "runs", "hearth.db", "hearth.db-wal"] {
        let path = host.data().join(part);
        if path.is_file() {
            files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        } else {
            files_under(&path, &mut files);
        }
    }
    let logs = host.serve_logs();
    for secret in secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a token is in the server's output"
        );
        assert!(
            !answers.contains(secret.as_str()),
            "a token is in an answer or output"
        );
        for (path, bytes) in &files {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "a token is in {path}");
        }
    }
}

#[test]
fn vm_a_login_reaches_the_users_cli_vm_its_refresh_is_sealed_and_others_get_nothing() {
    let mut rig = rig();
    let (a, b) = (&rig.a, &rig.b);
    let mut answers = String::new();

    // A login session captures alice's credential (version 1).
    let body = r#"{"user": "alice", "provider": "fake-codex", "ttl_secs": 900}"#;
    let s: Session = a.json("POST", "/v1/sessions", Some(body), 201);
    let s = wait_session(a, s.id.as_str(), Duration::from_secs(600));
    assert_eq!(
        s.state,
        SessionState::Completed,
        "{s:?}\n{}",
        rig.host.serve_logs()
    );
    assert_eq!(s.credential_version, Some(1));
    let issued = rig.fake.issued();
    let account = issued[0].account_id.clone();

    // Her CLI VM gets it at boot: the user's, 0600, and the tool there is
    // logged in as that login.
    let started = Instant::now();
    let vm = start_cli(a, "alice", "cli-test");
    answers.push_str(&vm.to_string());
    let vm = wait_cli(a, "alice", Duration::from_secs(600), |v| {
        version(v, "fake-codex") == Some(1)
    });
    let with_credentials = started.elapsed();
    let token = a.token.clone();
    let (code, said) = exec_as_user(&rig.host, &token, "alice", &["fake-codex", "whoami"]);
    answers.push_str(&said);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains(&format!("(account {account})")), "{said}");
    let (_, stat) = exec_as_user(&rig.host, &token, "alice", &["stat", "-c", "%a %U", AUTH]);
    assert_eq!(stat.trim(), "600 hearth");

    // A plain VM of the same image, for the ratio.
    let plain_started = Instant::now();
    let plain: Value = a.json("POST", "/v1/vms", Some(r#"{"image": "cli-test"}"#), 201);
    let plain_id = plain["id"].as_str().unwrap().to_owned();
    loop {
        let v: Value = a.json("GET", &format!("/v1/vms/{plain_id}"), None, 200);
        if v["state"] == "ready" {
            break;
        }
        assert!(plain_started.elapsed() < Duration::from_secs(600), "{v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let plain_ready = plain_started.elapsed();
    println!(
        "measure: cli vm start to credentials in place {} ms; plain vm to ready {} ms; ratio {:.2}",
        with_credentials.as_millis(),
        plain_ready.as_millis(),
        with_credentials.as_secs_f64() / plain_ready.as_secs_f64()
    );

    // A refresh inside the VM is sealed as version 2.
    let (_, before) = exec_as_user(&rig.host, &token, "alice", &["sha256sum", AUTH]);
    let (code, said) = exec_as_user(&rig.host, &token, "alice", &["fake-codex", "refresh"]);
    let refreshed = Instant::now();
    assert_eq!(code, 0, "{said}");
    let (_, after) = exec_as_user(&rig.host, &token, "alice", &["sha256sum", AUTH]);
    assert_ne!(before, after);
    wait_cli(a, "alice", Duration::from_secs(60), |v| {
        version(v, "fake-codex") == Some(2)
    });
    println!(
        "measure: refresh from the rewrite's end to version 2 seen sealed {} ms (stable_ms 1000)",
        refreshed.elapsed().as_millis()
    );
    let listed: Value = a.json("GET", "/v1/users/alice/credentials", None, 200);
    assert_eq!(listed[0]["version"], 2, "{listed}");

    // Stopped and started again (the same VM, its disk kept), it is given
    // the live copy: the refreshed file.
    let old_vm = vm["vm"].as_str().unwrap().to_owned();
    let _: Value = a.json("POST", "/v1/cli/alice/stop", None, 200);
    wait_cli(a, "alice", Duration::from_secs(120), |v| {
        v["state"] == "stopped"
    });
    let body = r#"{"image": "cli-test"}"#;
    let _: Value = a.json("POST", "/v1/cli/alice", Some(body), 200);
    // bob, of the same tenant, has no credential: his CLI VM has no file.
    start_cli(a, "bob", "cli-test");
    let fresh = wait_cli(a, "alice", Duration::from_secs(600), |v| {
        v["state"] == "ready" && version(v, "fake-codex") == Some(2)
    });
    assert_eq!(fresh["vm"].as_str().unwrap(), old_vm, "the same, kept VM");
    let (_, again) = exec_as_user(&rig.host, &token, "alice", &["sha256sum", AUTH]);
    assert_eq!(
        again, after,
        "the fresh CLI VM has another file than the refreshed one"
    );
    wait_cli(a, "bob", Duration::from_secs(600), |v| {
        v["state"] == "ready"
    });
    let (code, said) = exec_as_user(&rig.host, &token, "bob", &["ls", "-a", "/home/hearth"]);
    assert_eq!(code, 0, "{said}");
    assert!(!said.contains(".codex"), "{said}");
    let bob: Value = a.json("GET", "/v1/cli/bob", None, 200);
    assert!(bob["credentials"].as_object().unwrap().is_empty(), "{bob}");

    // Another tenant's alice is another user: nothing of this one.
    for path in [
        "/v1/cli/alice",
        "/v1/cli/bob",
        "/v1/users/alice/credentials",
    ] {
        let (status, body) = b.call("GET", path, None);
        assert_eq!(status, 404, "{path}: {body}");
        answers.push_str(&body);
    }
    let (status, body) = b.call("POST", "/v1/cli/alice/stop", None);
    assert_eq!(status, 404, "{body}");

    let mut secrets: Vec<String> = issued
        .iter()
        .flat_map(|t| t.secrets().into_iter().map(str::to_owned))
        .collect();
    secrets.dedup();
    assert_nowhere(&rig.host, &secrets, &answers);
    for user in ["alice", "bob"] {
        let _: Value = a.json("DELETE", &format!("/v1/cli/{user}"), None, 200);
    }
    let _: Value = a.json("DELETE", &format!("/v1/vms/{plain_id}"), None, 202);
    let _ = rig.host.stop_serve();
}

/// A Codex `auth.json` as `codex login` leaves it, made by the test: an
/// unsigned id token with the claims Codex reads, random tokens.
fn codex_auth(secret: &str) -> String {
    use base64::Engine;
    let part = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let claims = serde_json::json!({
        "email": "alice@example.com",
        "https://api.openai.com/auth": {"chatgpt_account_id": "acct-test", "chatgpt_plan_type": "plus"},
        "exp": 4_102_444_800u64,
    });
    let id_token = format!(
        "{}.{}.c2ln",
        part(serde_json::json!({"alg": "none"})),
        part(claims)
    );
    serde_json::json!({
        "OPENAI_API_KEY": null,
        "tokens": {"id_token": id_token, "access_token": secret, "refresh_token": format!("{secret}-r"), "account_id": "acct-test"},
        "last_refresh": "2026-12-02T00:00:00Z",
    })
    .to_string()
}

#[test]
fn vm_the_real_codex_in_a_cli_vm_is_logged_in_from_the_vault_with_no_network() {
    use hearth_vault::{CredentialFile, CredentialFiles, KeyFile, Secret, Vault};
    common::ensure_assets("cli");
    let mut host = Host::new(&[]);
    host.start();
    let mut a = host.api();
    a.token = host.mint(&["--tenant", "team-a"]);
    let secret = format!("test-access-{}", std::process::id());
    let store = std::sync::Arc::new(
        hearth_store::SqliteStore::open(&host.data().join("hearth.db")).unwrap(),
    );
    let vault = Vault::new(KeyFile::in_data_dir(&host.data()), store);
    let owner = hearth_store::CredentialOwner {
        tenant: "team-a".parse().unwrap(),
        user: "alice".parse().unwrap(),
        provider: "codex".parse().unwrap(),
    };
    let files = CredentialFiles {
        files: vec![CredentialFile {
            path: ".codex/auth.json".to_owned(),
            mode: 0o600,
            contents: Secret::new(codex_auth(&secret).into_bytes()),
        }],
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(vault.seal(&owner, &files)).unwrap();
    let vm = a.json::<Value>("POST", "/v1/cli/alice", Some("{}"), 201);
    assert_eq!(vm["image"], "cli");
    wait_cli(&a, "alice", Duration::from_secs(900), |v| {
        version(v, "codex") == Some(1)
    });
    let token = a.token.clone();
    let (code, said) = exec_as_user(&host, &token, "alice", &["codex", "login", "status"]);
    println!("codex login status: exit {code}: {}", said.trim());
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("Logged in"), "{said}");
    // No NIC: the VM's only interface is its loopback.
    let (_, links) = exec_as_user(&host, &token, "alice", &["ls", "/sys/class/net"]);
    assert_eq!(links.trim(), "lo", "{links}");
    assert_nowhere(&host, &[secret], &said);
    let _: Value = a.json("DELETE", "/v1/cli/alice", None, 200);
    let _ = host.stop_serve();
}
