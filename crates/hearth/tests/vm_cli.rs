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
        if Instant::now() >= deadline {
            let id = vm["vm"].as_str().unwrap_or_default();
            let (_, detail) = api.call("GET", &format!("/v1/vms/{id}"), None);
            panic!("the CLI VM of {user} never got there: {vm}\n{detail}");
        }
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

/// `hearth vm exec ID -- sh -c SCRIPT` as the tenant (root in the guest):
/// its output; it must succeed.
fn vm_sh(host: &Host, token: &str, id: &str, script: &str) -> String {
    let out = host
        .hearth(&["vm", "exec", id, "--", "sh", "-c", script])
        .env("HEARTH_URL", &host.serve().url)
        .env("HEARTH_TOKEN", token)
        .output()
        .expect("hearth runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Writes `marker` (as `PREFIX-SUFFIX`, so the whole never is in a
/// command, an event or a log) to FILE in the guest and syncs it to disk.
fn write_marker(host: &Host, token: &str, id: &str, marker: &str, file: &str) {
    let (prefix, suffix) = marker.split_once('-').expect("a marker has a dash");
    let script = format!("printf '%s-%s' {prefix} {suffix} > {file} && sync");
    vm_sh(host, token, id, &script);
}

/// Every regular file under `dir`, disks included: its path and which of
/// `needles` are in its bytes (read in pieces, a disk's holes as zeros).
fn found_under(dir: &Path, needles: &[String]) -> Vec<(String, usize)> {
    let mut files = Vec::new();
    files_under(dir, &mut files);
    let mut found = Vec::new();
    for path in files {
        for i in found_in(&path, needles) {
            found.push((path.display().to_string(), i));
        }
    }
    found
}

/// Which of `needles` are in the file at `path`: only its data is read
/// (a sparse disk's holes are zeros, which hold no needle), in pieces that
/// overlap by the longest needle.
fn found_in(path: &Path, needles: &[String]) -> Vec<usize> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::fd::AsRawFd;
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let finders: Vec<_> = needles.iter().map(memchr::memmem::Finder::new).collect();
    let longest = needles.iter().map(String::len).max().unwrap_or(0);
    let mut hits = vec![false; needles.len()];
    let mut chunk = vec![0u8; 4 << 20];
    let mut at: i64 = 0;
    loop {
        // SAFETY: lseek(2) on a file this function holds open.
        let data = unsafe { libc::lseek(file.as_raw_fd(), at, libc::SEEK_DATA) };
        if data < 0 {
            break;
        }
        let n = file
            .seek(SeekFrom::Start(data as u64))
            .and_then(|_| file.read(&mut chunk))
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        for (i, finder) in finders.iter().enumerate() {
            hits[i] |= finder.find(&chunk[..n]).is_some();
        }
        let step = n.saturating_sub(longest).max(1);
        at = data + step as i64;
    }
    (0..needles.len()).filter(|&i| hits[i]).collect()
}

/// Every regular file under `dir`.
fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
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
        } else if kind.is_file() {
            out.push(path);
        }
    }
}

/// No secret is in the server's output, `answers`, or any file of the
/// data directory: the database, the archives, and every VM's directory,
/// the bytes of its disks included (a CLI VM's is encrypted).
fn assert_nowhere(host: &Host, secrets: &[String], answers: &str) {
    let mut found = Vec::new();
    for part in ["vms", "archives", "runs", "hearth.db", "hearth.db-wal"] {
        let path = host.data().join(part);
        if path.is_file() {
            found.extend(
                found_in(&path, secrets)
                    .into_iter()
                    .map(|i| (part.to_owned(), i)),
            );
        } else {
            found.extend(found_under(&path, secrets));
        }
    }
    assert!(
        found.is_empty(),
        "a token is in {:?}",
        found.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
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
    }
}

/// Stops `hearth serve` (its VMs run on) and starts it again on the same
/// data directory; `apis` are pointed at the new server.
fn restart_serve(host: &mut Host, apis: &mut [&mut Api]) {
    assert!(host.stop_serve().success(), "{}", host.serve_logs());
    host.start();
    for api in apis {
        api.url = host.serve().url.clone();
    }
}

/// How many credentials the store holds under `vm`'s id in team-a: its
/// disk key, or nothing.
fn disk_keys_of(host: &Host, vm: &str) -> usize {
    use hearth_store::CredentialStore;
    let store = hearth_store::SqliteStore::open(&host.data().join("hearth.db")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tenant = "team-a".parse().unwrap();
    let listed = rt.block_on(store.list_credentials(&tenant, &vm.parse().unwrap()));
    listed.expect("the store").len()
}

/// The access and refresh tokens of `user`'s fake-codex credential at
/// `version`, opened from the vault by the test itself.
fn vault_tokens(host: &Host, user: &str, version: u64) -> Vec<String> {
    use hearth_vault::{KeyFile, Vault};
    let store = hearth_store::SqliteStore::open(&host.data().join("hearth.db")).unwrap();
    let vault = Vault::new(
        KeyFile::in_data_dir(&host.data()),
        std::sync::Arc::new(store),
    );
    let owner = hearth_store::CredentialOwner {
        tenant: "team-a".parse().unwrap(),
        user: user.parse().unwrap(),
        provider: "fake-codex".parse().unwrap(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opened = rt.block_on(vault.open_version(&owner, version)).unwrap();
    let opened = opened.expect("the version is in the vault");
    let auth: Value = serde_json::from_slice(opened.files.files[0].contents.expose()).unwrap();
    let tokens = &auth["tokens"];
    ["access_token", "refresh_token"]
        .iter()
        .map(|k| tokens[k].as_str().expect("a token").to_owned())
        .collect()
}

/// The VM's kept disk is a qcow2 whose header says LUKS encryption
/// (`crypt_method`, bytes 32 to 36, is 2), and there is no raw one.
fn assert_encrypted_disk(dir: &Path) {
    assert!(!dir.join("disk.ext4").exists(), "a raw kept disk");
    let bytes = std::fs::read(dir.join("disk.qcow2")).expect("the encrypted disk");
    assert_eq!(&bytes[..4], b"QFI\xfb", "not a qcow2");
    assert_eq!(
        u32::from_be_bytes(bytes[32..36].try_into().unwrap()),
        2,
        "not LUKS"
    );
}

#[test]
fn vm_a_login_reaches_the_users_cli_vm_its_refresh_is_sealed_and_others_get_nothing() {
    let mut rig = rig();
    let (mut a, mut b) = (rig.a.clone(), rig.b.clone());
    let mut answers = String::new();

    // A login session captures alice's credential (version 1).
    let body = r#"{"user": "alice", "provider": "fake-codex", "ttl_secs": 900}"#;
    let s: Session = a.json("POST", "/v1/sessions", Some(body), 201);
    let s = wait_session(&a, s.id.as_str(), Duration::from_secs(600));
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
    let vm = start_cli(&a, "alice", "cli-test");
    answers.push_str(&vm.to_string());
    let vm = wait_cli(&a, "alice", Duration::from_secs(600), |v| {
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
    wait_cli(&a, "alice", Duration::from_secs(60), |v| {
        version(v, "fake-codex") == Some(2)
    });
    println!(
        "measure: refresh from the rewrite's end to version 2 seen sealed {} ms (stable_ms 1000)",
        refreshed.elapsed().as_millis()
    );
    let listed: Value = a.json("GET", "/v1/users/alice/credentials", None, 200);
    assert_eq!(listed[0]["version"], 2, "{listed}");
    // The refreshed tokens, which the test reads from the vault (never
    // from the VM's output): they too must be nowhere on the host's disk.
    let refreshed_tokens = vault_tokens(&rig.host, "alice", 2);

    // Alice's kept disk is QEMU's LUKS-encrypted qcow2, and what her VM
    // writes is not in its bytes; the same scan finds a marker in the
    // plain VM's unencrypted layer, so it would find the token unencrypted.
    let alice_vm = vm["vm"].as_str().unwrap().to_owned();
    let alice_dir = rig.host.vms_dir().join(&alice_vm);
    assert_encrypted_disk(&alice_dir);
    let pid = std::process::id();
    let (kept, plain_marker) = (format!("keptmarker-{pid}"), format!("plainmarker-{pid}"));
    write_marker(&rig.host, &token, &alice_vm, &kept, "/home/hearth/kept.txt");
    write_marker(
        &rig.host,
        &token,
        &plain_id,
        &plain_marker,
        "/root/plain.txt",
    );
    let plain_dir = rig.host.vms_dir().join(&plain_id);
    let seen = found_under(&plain_dir, std::slice::from_ref(&plain_marker));
    assert!(
        seen.iter().any(|(path, _)| path.ends_with("layer.ext4")),
        "the scan does not find a marker in a plain VM's layer: {seen:?}"
    );
    let mut needles = vec![kept.clone()];
    needles.extend(refreshed_tokens.iter().cloned());
    needles.extend(
        issued
            .iter()
            .flat_map(|t| t.secrets().into_iter().map(str::to_owned)),
    );
    let seen = found_under(&alice_dir, &needles);
    assert!(
        seen.is_empty(),
        "alice's VM directory holds a secret or her marker: {seen:?}"
    );

    // Stopped and started again (the same VM, its disk kept), it is given
    // the live copy: the refreshed file.
    let old_vm = vm["vm"].as_str().unwrap().to_owned();
    let _: Value = a.json("POST", "/v1/cli/alice/stop", None, 200);
    wait_cli(&a, "alice", Duration::from_secs(120), |v| {
        v["state"] == "stopped"
    });
    let body = r#"{"image": "cli-test"}"#;
    let _: Value = a.json("POST", "/v1/cli/alice", Some(body), 200);
    // bob, of the same tenant, has no credential: his CLI VM has no file.
    start_cli(&a, "bob", "cli-test");
    let fresh = wait_cli(&a, "alice", Duration::from_secs(600), |v| {
        v["state"] == "ready" && version(v, "fake-codex") == Some(2)
    });
    assert_eq!(fresh["vm"].as_str().unwrap(), old_vm, "the same, kept VM");
    let (_, again) = exec_as_user(&rig.host, &token, "alice", &["sha256sum", AUTH]);
    assert_eq!(
        again, after,
        "the fresh CLI VM has another file than the refreshed one"
    );
    let kept_file = "cat /home/hearth/kept.txt";
    assert_eq!(
        vm_sh(&rig.host, &token, &old_vm, kept_file),
        kept,
        "a file written in the VM went with the stop"
    );

    // A restart of hearth while the VM runs: adopted, the refreshed file
    // still in place, the vault at the same version.
    restart_serve(&mut rig.host, &mut [&mut a, &mut b]);
    let adopted = wait_cli(&a, "alice", Duration::from_secs(120), |v| {
        v["state"] == "ready" && version(v, "fake-codex") == Some(2)
    });
    assert_eq!(adopted["vm"].as_str().unwrap(), old_vm, "{adopted}");
    let (_, again) = exec_as_user(&rig.host, &token, "alice", &["sha256sum", AUTH]);
    assert_eq!(again, after, "after a restart of hearth: another file");

    // Stopped, hearth restarted, started again: a new server boots it,
    // opens its disk with the key from the vault, and writes the
    // refreshed version in.
    let _: Value = a.json("POST", "/v1/cli/alice/stop", None, 200);
    wait_cli(&a, "alice", Duration::from_secs(120), |v| {
        v["state"] == "stopped"
    });
    restart_serve(&mut rig.host, &mut [&mut a, &mut b]);
    let _: Value = a.json("POST", "/v1/cli/alice", Some(body), 200);
    let rebooted = wait_cli(&a, "alice", Duration::from_secs(600), |v| {
        v["state"] == "ready" && version(v, "fake-codex") == Some(2)
    });
    assert_eq!(rebooted["vm"].as_str().unwrap(), old_vm, "{rebooted}");
    let (_, again) = exec_as_user(&rig.host, &token, "alice", &["sha256sum", AUTH]);
    assert_eq!(again, after, "booted by a restarted hearth: another file");
    assert_eq!(vm_sh(&rig.host, &token, &old_vm, kept_file), kept);
    let listed: Value = a.json("GET", "/v1/users/alice/credentials", None, 200);
    assert_eq!(listed[0]["version"], 2, "{listed}");
    let seen = found_under(&alice_dir, &needles);
    assert!(
        seen.is_empty(),
        "alice's VM directory holds a secret or her marker: {seen:?}"
    );
    wait_cli(&a, "bob", Duration::from_secs(600), |v| {
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
    secrets.extend(refreshed_tokens);
    assert_nowhere(&rig.host, &secrets, &answers);
    // The disk key is sealed in the vault under the VM's id, out of reach
    // of the user's credential routes; `rm` destroys it with the disk.
    assert_eq!(disk_keys_of(&rig.host, &old_vm), 1, "the VM's disk key");
    let key_path = format!("/v1/users/{old_vm}/credentials");
    assert_eq!(a.call("GET", &key_path, None).0, 404, "listed to a tenant");
    let delete = format!("{key_path}/hearth-disk-key");
    let (code, said) = a.call("DELETE", &delete, None);
    assert!(
        code == 404 && said.contains("hearth vm rm"),
        "{code} {said}"
    );
    assert_eq!(disk_keys_of(&rig.host, &old_vm), 1, "a DELETE reached it");
    for user in ["alice", "bob"] {
        let _: Value = a.json("DELETE", &format!("/v1/cli/{user}"), None, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while disk_keys_of(&rig.host, &old_vm) != 0 {
        assert!(
            Instant::now() < deadline,
            "rm left the disk key in the vault"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!alice_dir.exists(), "rm left the VM's directory");
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
fn vm_the_real_codex_and_claude_in_a_cli_vm_are_logged_in_from_the_vault_with_no_network() {
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
    let claude_secret = format!("test-claude-access-{}", std::process::id());
    let claude = hearth_store::CredentialOwner {
        provider: "claude".parse().unwrap(),
        ..owner.clone()
    };
    rt.block_on(vault.seal(&claude, &claude_files(&claude_secret)))
        .unwrap();
    let vm = a.json::<Value>("POST", "/v1/cli/alice", Some("{}"), 201);
    assert_eq!(vm["image"], "cli");
    wait_cli(&a, "alice", Duration::from_secs(900), |v| {
        version(v, "codex") == Some(1) && version(v, "claude") == Some(1)
    });
    let token = a.token.clone();
    let (code, said) = exec_as_user(&host, &token, "alice", &["codex", "login", "status"]);
    println!("codex login status: exit {code}: {}", said.trim());
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("Logged in"), "{said}");
    // No NIC: the VM's only interface is its loopback.
    let (_, links) = exec_as_user(&host, &token, "alice", &["ls", "/sys/class/net"]);
    assert_eq!(links.trim(), "lo", "{links}");
    // Claude Code's own local check, offline: `claude auth status` reads
    // its two files and prints JSON.
    let (code, claude_said) = exec_as_user(&host, &token, "alice", &["claude", "auth", "status"]);
    println!("claude auth status: exit {code}: {}", claude_said.trim());
    assert_eq!(code, 0, "{claude_said}");
    assert!(
        claude_said.contains("\"loggedIn\": true") && claude_said.contains("alice@example.com"),
        "{claude_said}"
    );
    let said = format!("{said}{claude_said}");
    assert_nowhere(&host, &[secret, claude_secret], &said);
    let _: Value = a.json("DELETE", "/v1/cli/alice", None, 200);
    let _ = host.stop_serve();
}

/// Claude Code's login as its two files: the OAuth tokens and the account
/// in `~/.claude.json`, made by the test (no provider is reachable).
fn claude_files(access: &str) -> hearth_vault::CredentialFiles {
    use hearth_vault::{CredentialFile, CredentialFiles, Secret};
    let expires = (std::time::SystemTime::now() + Duration::from_secs(3600))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let tokens = serde_json::json!({"claudeAiOauth": {
        "accessToken": access,
        "refreshToken": format!("{access}-refresh"),
        "expiresAt": expires,
        "scopes": ["user:inference", "user:profile"],
        "subscriptionType": "pro"
    }});
    let account = serde_json::json!({
        "hasCompletedOnboarding": true,
        "oauthAccount": {
            "emailAddress": "alice@example.com",
            "accountUuid": "00000000-0000-4000-8000-000000000001",
            "organizationUuid": "00000000-0000-4000-8000-000000000002"
        }
    });
    let file = |path: &str, value: &Value| CredentialFile {
        path: path.to_owned(),
        mode: 0o600,
        contents: Secret::new(value.to_string().into_bytes()),
    };
    CredentialFiles {
        files: vec![
            file(".claude/.credentials.json", &tokens),
            file(".claude.json", &account),
        ],
    }
}
