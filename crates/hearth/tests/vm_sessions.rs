//! Login sessions against a real `hearth serve` and real VMs, with a
//! provider whose login just waits (on the small `minimal` image, so these
//! are cheap): one live session per user and provider, other tenants see
//! nothing, cancel and expiry destroy the VM and leave the session
//! explained, the egress proxy refuses what the policy does not allow and
//! records it, and the old controller's routes work with the same rules.

mod common;

use std::time::{Duration, Instant};

use common::serve::{Api, Host};
use hearth_types::session::{EgressConnection, Session, SessionEvent};
use hearth_types::SessionState;

/// A provider whose "login" waits for as long as the session lives, on
/// the minimal image (no browser: it waits for nothing).
const WAITER: &str = r#"
name = "waiter"
description = "a login that waits, for tests"
image = "minimal"
user = "root"
login = ["sleep", "3600"]
login_after = []
opens_browser_with = "browser-env"
domains = ["login.waiter.test"]

[capture]
stable_ms = 200

[[capture.files]]
path = ".waiter/token.json"
required_keys = ["/token"]
"#;

fn host() -> Host {
    let mut host = Host::new(&[]);
    let providers = host.data().join("providers");
    std::fs::create_dir_all(&providers).unwrap();
    std::fs::write(providers.join("waiter.toml"), WAITER).unwrap();
    host.add_serve_args(&[
        "--providers",
        providers.to_str().unwrap(),
        "--egress-host",
        "rebind.test=127.0.0.2",
        "--egress-host",
        "private.test=10.1.2.3",
        "--egress-allow",
        "rebind.test",
        "--egress-allow",
        "private.test",
        "--egress-host",
        "login.waiter.test=198.51.100.7",
    ]);
    host.start();
    host
}

fn tenant_api(host: &mut Host, tenant: &str) -> Api {
    let mut api = host.api();
    api.token = host.mint(&["--tenant", tenant]);
    api
}

fn start(api: &Api, user: &str, extra: &str) -> Session {
    let body = format!(r#"{{"user": "{user}", "provider": "waiter"{extra}}}"#);
    api.json("POST", "/v1/sessions", Some(&body), 201)
}

fn wait_session(api: &Api, id: &str, within: Duration, done: impl Fn(&Session) -> bool) -> Session {
    let deadline = Instant::now() + within;
    loop {
        let s: Session = api.json("GET", &format!("/v1/sessions/{id}"), None, 200);
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "session {id} never got there: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn events(api: &Api, id: &str) -> Vec<SessionEvent> {
    api.json("GET", &format!("/v1/sessions/{id}/events"), None, 200)
}

#[test]
fn vm_a_session_is_one_per_user_hidden_from_other_tenants_and_cancel_destroys_its_vm() {
    let mut host = host();
    let a = tenant_api(&mut host, "team-a");
    let b = tenant_api(&mut host, "team-b");
    let s = start(&a, "alice", "");
    assert_eq!(s.state, SessionState::Starting);
    let link = s
        .viewer
        .as_ref()
        .and_then(|v| v.url.clone())
        .expect("a viewer link");
    assert!(link.contains("/viewer#vm="), "{link}");
    let vm = s.vm.clone().expect("a VM").to_string();

    // A second one for the same user and provider is refused while it lives.
    let (status, body) = a.call(
        "POST",
        "/v1/sessions",
        Some(r#"{"user": "alice", "provider": "waiter"}"#),
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("session_live") && body.contains(s.id.as_str()),
        "{body}"
    );

    // Another tenant sees nothing of it: not the session, its VM, its
    // viewer or its credentials; the same user name there is another user.
    let id = s.id.to_string();
    for path in [
        format!("/v1/sessions/{id}"),
        format!("/v1/sessions/{id}/events"),
        format!("/v1/sessions/{id}/egress"),
        format!("/v1/vms/{vm}"),
        format!("/v1/vms/{vm}/viewer-links"),
        "/v1/users/alice/credentials".to_owned(),
    ] {
        let (status, body) = b.call("GET", &path, None);
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (status, body) = b.call("POST", &format!("/v1/sessions/{id}/cancel"), None);
    assert_eq!(status, 404, "{body}");
    let listed: Vec<Session> = b.json("GET", "/v1/sessions", None, 200);
    assert!(listed.is_empty(), "{listed:?}");

    let s = wait_session(&a, &id, Duration::from_secs(240), |s| {
        s.state != SessionState::Starting
    });
    assert_eq!(s.state, SessionState::WaitingForUser, "{s:?}");

    let cancelled: Session = a.json("POST", &format!("/v1/sessions/{id}/cancel"), None, 200);
    assert_eq!(cancelled.state, SessionState::Cancelled);
    assert_eq!(
        cancelled.message.as_deref(),
        Some("cancelled by its caller")
    );
    host.wait_state(
        &vm,
        hearth_types::VmState::Destroyed,
        Duration::from_secs(120),
    );
    // ... and says so; the user may start again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !events(&a, &id)
        .iter()
        .any(|e| e.message.contains("destroyed"))
    {
        assert!(Instant::now() < deadline, "{:?}", events(&a, &id));
        std::thread::sleep(Duration::from_millis(300));
    }
    let (status, body) = a.call("POST", &format!("/v1/sessions/{id}/cancel"), None);
    assert_eq!(status, 409, "{body}");
    let again = start(&a, "alice", "");
    let cancelled: Session = a.json(
        "POST",
        &format!("/v1/sessions/{}/cancel", again.id),
        None,
        200,
    );
    assert_eq!(cancelled.state, SessionState::Cancelled);
}

#[test]
fn vm_an_expired_session_destroys_its_vm_and_says_why() {
    let mut host = host();
    let a = tenant_api(&mut host, "team-a");
    let s = start(&a, "bob", r#", "ttl_secs": 60"#);
    let id = s.id.to_string();
    let vm = s.vm.clone().unwrap().to_string();
    let s = wait_session(&a, &id, Duration::from_secs(150), |s| !s.state.is_live());
    assert_eq!(s.state, SessionState::Expired, "{s:?}");
    let why = s.message.unwrap_or_default();
    assert!(why.contains("within 60 s"), "{why}");
    host.wait_state(
        &vm,
        hearth_types::VmState::Destroyed,
        Duration::from_secs(120),
    );
    let states: Vec<SessionState> = events(&a, &id).iter().map(|e| e.state).collect();
    assert_eq!(states.first(), Some(&SessionState::Starting), "{states:?}");
    assert!(states.contains(&SessionState::Expired), "{states:?}");
}

#[test]
fn vm_the_egress_proxy_refuses_what_the_policy_does_not_allow_and_records_it() {
    let mut host = host();
    let a = tenant_api(&mut host, "team-a");
    let s = start(&a, "carol", "");
    let id = s.id.to_string();
    let vm = s.vm.clone().unwrap().to_string();
    wait_session(&a, &id, Duration::from_secs(240), |s| {
        s.state == SessionState::WaitingForUser
    });
    // busybox wget honours http_proxy, which the session's VM has.
    for url in [
        "http://evil.test/",
        "http://rebind.test/",
        "http://private.test/",
    ] {
        let out = host.vm_cli_as(
            &a.token,
            &["exec", &vm, "--", "busybox", "wget", "-q", "-O", "-", url],
        );
        assert!(
            !out.status.success(),
            "{url} was fetched: {}",
            common::text(&out)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let records = loop {
        let records: Vec<EgressConnection> =
            a.json("GET", &format!("/v1/sessions/{id}/egress"), None, 200);
        if records.len() >= 3 || Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let find = |host: &str| {
        records
            .iter()
            .find(|r| r.host.as_deref() == Some(host))
            .unwrap_or_else(|| panic!("no record of {host}: {records:?}"))
    };
    let evil = find("evil.test");
    assert_eq!(evil.outcome, "denied");
    assert!(
        evil.reason
            .as_deref()
            .unwrap_or("")
            .contains("allowed domains"),
        "{evil:?}"
    );
    // Allowed by name, refused by what the name resolves to.
    for (name, class) in [("rebind.test", "loopback"), ("private.test", "private")] {
        let r = find(name);
        assert_eq!(r.outcome, "denied", "{r:?}");
        assert!(r.reason.as_deref().unwrap_or("").contains(class), "{r:?}");
    }
    let _: Session = a.json("POST", &format!("/v1/sessions/{id}/cancel"), None, 200);
}

#[test]
fn vm_the_old_controllers_routes_start_a_session_and_read_the_console() {
    let mut host = host();
    let a = tenant_api(&mut host, "team-a");
    let (status, body) = a.call("GET", "/health", None);
    assert_eq!((status, body.contains("ok")), (200, true), "{body}");
    let started: serde_json::Value = a.json(
        "POST",
        "/api/auth/start",
        Some(r#"{"userId": "dave", "provider": "waiter"}"#),
        201,
    );
    let id = started["sessionId"].as_str().expect("sessionId").to_owned();
    let vm = started["vmId"].as_str().expect("vmId").to_owned();
    assert!(
        started["viewerUrl"]
            .as_str()
            .unwrap_or("")
            .contains("/viewer#vm="),
        "{started}"
    );
    let s = wait_session(&a, &id, Duration::from_secs(240), |s| {
        s.state == SessionState::WaitingForUser
    });
    assert_eq!(s.user.as_str(), "dave");

    let log: serde_json::Value = a.json(
        "GET",
        &format!("/api/vm/{vm}/console-log?lines=10"),
        None,
        200,
    );
    let lines = log["lines"].as_array().expect("lines");
    assert!(!lines.is_empty() && lines.len() <= 10, "{log}");
    for hostile in [
        "10;id",
        "10%3Bid",
        "-1",
        "0",
        "1e3",
        "$(id)",
        "10%20",
        "99999999999",
    ] {
        let (status, body) = a.call(
            "GET",
            &format!("/api/vm/{vm}/console-log?lines={hostile}"),
            None,
        );
        assert_eq!(status, 400, "lines={hostile}: {body}");
        assert!(
            body.contains("invalid_lines") || body.contains("invalid_request"),
            "{body}"
        );
    }
    // The same tenant rules as /v1.
    let b = tenant_api(&mut host, "team-b");
    let (status, _) = b.call("GET", &format!("/api/vm/{vm}/console-log?lines=10"), None);
    assert_eq!(status, 404);
    let (status, body) = a.call("POST", "/api/auth/start", Some(r#"{"userId": "dave"}"#));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("provider"), "{body}");
    let _: Session = a.json("POST", &format!("/v1/sessions/{id}/cancel"), None, 200);
}

#[test]
fn vm_a_users_upstream_proxy_carries_its_sessions_with_credentials_from_the_vault() {
    let (upstream, heads) = fake_upstream();
    let mut host = host();
    let a = tenant_api(&mut host, "team-a");
    let password = "pw-for-erin-upstream-91c4";
    let body = format!(
        r#"{{"upstream": {{"address": "{upstream}", "username": "erin-proxy", "password": "{password}"}}}}"#
    );
    let (status, text) = a.call("PUT", "/v1/users/erin/egress", Some(&body));
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains(password), "{text}");
    let s = start(&a, "erin", "");
    let id = s.id.to_string();
    let vm = s.vm.clone().unwrap().to_string();
    wait_session(&a, &id, Duration::from_secs(240), |s| {
        s.state == SessionState::WaitingForUser
    });
    let out = host.vm_cli_as(
        &a.token,
        &[
            "exec",
            &vm,
            "--",
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
            "http://login.waiter.test/hello",
        ],
    );
    assert!(out.status.success(), "{}", common::text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok");
    let seen = heads.lock().unwrap().join("\n---\n");
    assert!(
        seen.contains("GET http://login.waiter.test/hello"),
        "{seen}"
    );
    // Basic base64("erin-proxy:" + password), added on the host.
    let expected = base64_basic("erin-proxy", password);
    assert!(
        seen.contains(&format!("Proxy-Authorization: Basic {expected}")),
        "{seen}"
    );
    // The VM never had the password: not in its environment or files.
    let out = host.vm_cli_as(
        &a.token,
        &[
            "exec",
            &vm,
            "--",
            "sh",
            "-c",
            "env; cat /etc/hearth/*.json 2>/dev/null",
        ],
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(password));
    assert!(!host.serve_logs().contains(password));
    let _: Session = a.json("POST", &format!("/v1/sessions/{id}/cancel"), None, 200);
}

type Heads = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// An upstream HTTP proxy on the host's loopback that records each request
/// head and answers `ok`.
fn fake_upstream() -> (std::net::SocketAddr, Heads) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let heads: Heads = Default::default();
    let seen = heads.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 8192];
            let n = stream.read(&mut buf).unwrap_or(0);
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (addr, heads)
}

fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}
