//! A login session end to end, offline, as a person does it: a real
//! `hearth serve`; a browser VM (the `login-test` recipe: the browser
//! image with a fake Codex CLI) under QEMU with no NIC; a fake OAuth
//! provider on the host, reached from the VM only by name through the
//! agent's loopback proxy and hearth-egress; and a real headless Chromium
//! on the host that opens the session's viewer link and clicks "Authorize"
//! in the VM's browser. The tool (authorization code with PKCE, its
//! loopback callback in the VM, its file rewritten in place) logs in, the
//! agent captures the file, the vault seals it, the VM goes.
//!
//! Then: the session is completed, its VM destroyed with its logs
//! archived, the credential opens to exactly the tokens the provider
//! issued, and none of them is anywhere in the data directory, the logs,
//! the events, the console, the egress records or this test's output.
//! The vault's key is rotated and the old one retired; it still opens.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::login::{Rig, PROVIDER_HOST, USER};
use common::serve::{Api, Host};
use common::webdriver::Browser;
use hearth_types::session::{EgressConnection, SessionEvent};
use hearth_types::{SessionState, VmState};

#[test]
fn vm_a_person_logs_in_through_the_viewer_and_the_credential_is_sealed() {
    if hearth_testkit::static_agent().is_none() {
        return;
    }
    let Some(browser) = Browser::start(1280, 800) else {
        return;
    };
    let mut rig = Rig::start(&[]);
    let started = Instant::now();
    let session = rig.start_session();
    let id = session.id.to_string();
    let vm = session.vm.clone().expect("a VM").to_string();
    let link = session.viewer.and_then(|v| v.url).expect("a viewer link");

    let waiting = rig.wait(&id, Duration::from_secs(600), |s| {
        s.state != SessionState::Starting
    });
    assert_eq!(
        waiting.state,
        SessionState::WaitingForUser,
        "{waiting:?}\n{}",
        rig.host.serve_logs()
    );
    println!("session waiting for the user after {:?}", started.elapsed());
    let canvas = rig.open_consent_page(&browser, &link, Duration::from_secs(300));
    println!("consent page on the viewer after {:?}", started.elapsed());
    let login = rig.wait(&id, Duration::from_secs(5), |_| true).login_output;
    assert!(
        login.iter().any(|l| l.contains("/oauth/authorize")),
        "the login command's URL is not in the session: {login:?}"
    );

    browser.click(&canvas, 0, 0);
    let done = rig.wait(&id, Duration::from_secs(300), |s| !s.state.is_live());
    assert_eq!(
        done.state,
        SessionState::Completed,
        "{done:?}\n{}",
        rig.host.serve_logs()
    );
    println!("session completed after {:?}", started.elapsed());
    assert_eq!(rig.fake.approvals(), 1);
    assert_eq!(
        rig.fake.token_grants(),
        1,
        "the tool exchanged its code once"
    );
    let hosts = rig.fake.hosts_seen();
    assert!(
        hosts.iter().all(|h| h.starts_with(PROVIDER_HOST)),
        "{hosts:?}"
    );

    rig.host
        .wait_state(&vm, VmState::Destroyed, Duration::from_secs(120));
    let console: serde_json::Value =
        rig.api
            .json("GET", &format!("/v1/vms/{vm}/console?lines=50"), None, 200);
    assert_eq!(
        console["archived"], true,
        "the VM's logs were not archived: {console}"
    );

    let issued = rig.fake.issued();
    assert_eq!(issued.len(), 1);
    let (path, mode, opened) = rig.open_credential();
    assert_eq!((path.as_str(), mode), (".codex/auth.json", 0o600));
    let auth: serde_json::Value = serde_json::from_slice(&opened).expect("auth.json is JSON");
    let tokens = &auth["tokens"];
    assert_eq!(tokens["access_token"], issued[0].access_token.as_str());
    assert_eq!(tokens["refresh_token"], issued[0].refresh_token.as_str());
    assert_eq!(tokens["id_token"], issued[0].id_token.as_str());
    assert!(auth.get("OPENAI_API_KEY").is_some(), "{auth}");

    let secrets = issued[0].secrets();
    search_everywhere(&rig.host, &rig.api, &id, &vm, &secrets, &login);
    rotate_and_retire(&rig.host, &opened);
}

/// No secret in any file of the data directory (the store's file
/// included: only ciphertext), the server's logs, the session's events
/// and egress records, the VM's events and console, or the login output.
fn search_everywhere(
    host: &Host,
    api: &Api,
    id: &str,
    vm: &str,
    secrets: &[&str],
    login: &[String],
) {
    let mut places: Vec<(String, Vec<u8>)> = Vec::new();
    collect_files(&host.data(), &mut places);
    places.push(("serve logs".into(), host.serve_logs().into_bytes()));
    for path in [
        format!("/v1/sessions/{id}"),
        format!("/v1/sessions/{id}/events"),
        format!("/v1/sessions/{id}/egress"),
        format!("/v1/vms/{vm}/events"),
        format!("/v1/vms/{vm}/console?lines=10000"),
        format!("/v1/users/{USER}/credentials"),
        "/metrics".to_owned(),
    ] {
        let (_, body) = api.call("GET", &path, None);
        places.push((path, body.into_bytes()));
    }
    places.push(("login output".into(), login.join("\n").into_bytes()));
    assert!(
        places.len() > 10,
        "too few places searched: {}",
        places.len()
    );
    for (place, bytes) in &places {
        for secret in secrets {
            assert!(
                !contains(bytes, secret.as_bytes()),
                "a credential secret is in {place}"
            );
        }
    }
    let events: Vec<SessionEvent> =
        api.json("GET", &format!("/v1/sessions/{id}/events"), None, 200);
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("sealed as version 1")),
        "{events:?}"
    );
    let egress: Vec<EgressConnection> =
        api.json("GET", &format!("/v1/sessions/{id}/egress"), None, 200);
    assert!(
        egress
            .iter()
            .any(|c| c.host.as_deref() == Some(PROVIDER_HOST) && c.outcome == "allowed"),
        "{egress:?}"
    );
}

/// Every regular file under `dir`, not following links (the shared
/// kernels and images are links).
fn collect_files(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            collect_files(&path, out);
        } else if kind.is_file() {
            if let Ok(bytes) = std::fs::read(&path) {
                out.push((path.display().to_string(), bytes));
            }
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `hearth vault rotate`, then retiring the old key: the credential still
/// opens to the same bytes, and no credential is left under the old one.
fn rotate_and_retire(host: &Host, before: &[u8]) {
    let out = host.hearth(&["vault", "rotate"]).output().unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    assert!(
        common::text(&out).contains("1 credential versions rewrapped"),
        "{}",
        common::text(&out)
    );
    let out = host.hearth(&["vault", "retire", "1"]).output().unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    assert_eq!(common::login::open_credential(&host.data()).2, before);
    let out = host
        .hearth(&["vault", "status", "--json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let old = status["versions"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["version"] == 1))
        .cloned()
        .unwrap_or_default();
    assert!(!old["retired_at"].is_null(), "{status}");
    assert_eq!(old["credentials"], 0, "{status}");
}
