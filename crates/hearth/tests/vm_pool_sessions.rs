//! A warm pool serving login sessions, restored from a template, against
//! a real `hearth serve`, real VMs under QEMU (TCG here) and a real
//! headless Chromium on the host opening each session's viewer link: the
//! `login-test` image (the browser image with the fake Codex) is booted
//! once with no configuration and snapshotted (a template, its desktop and
//! browser up); the pool restores its VMs from it; a session start takes
//! the restored VM, whose already running browser shows the fake
//! provider's consent page on the viewer, and a click logs the tool in;
//! the pool refills to its size; with the pool empty, a session still
//! starts (cold) and reaches the same page. Prints session start to the
//! consent page on the viewer, pooled and cold, and their ratio
//! (docs/benchmarks.md).

mod common;

use std::time::{Duration, Instant};

use common::login::{self, Rig};
use common::serve::{Api, Host};
use common::webdriver::Browser;
use hearth_types::api::Vm;
use hearth_types::pool::{Pool, PoolVmState};
use hearth_types::session::Session;
use hearth_types::{SessionState, VmState};

const IMAGE: &str = "login-test";

fn waiting(p: &Pool) -> Vec<String> {
    p.vms
        .iter()
        .filter(|v| v.state == PoolVmState::Waiting)
        .map(|v| v.id.to_string())
        .collect()
}

fn wait_pool(host: &Host, api: &Api, within: Duration, done: impl Fn(&Pool) -> bool) -> Pool {
    let deadline = Instant::now() + within;
    loop {
        let p: Pool = api.json("GET", &format!("/v1/pools/{IMAGE}"), None, 200);
        if done(&p) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "the pool never got there: {p:?}\n--- serve\n{}",
            host.serve_logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `hearth ARGS` as the admin.
fn admin_cli(host: &Host, api: &Api, args: &[&str]) -> std::process::Output {
    host.hearth(args)
        .env("HEARTH_URL", &api.url)
        .env("HEARTH_TOKEN", &api.token)
        .output()
        .unwrap()
}

/// A session's start, its viewer's first frame, and the consent page on it.
struct Timed {
    session: Session,
    canvas: serde_json::Value,
    first_frame: Duration,
    consent: Duration,
}

/// Starts a session, opens its viewer link, and waits for its first frame
/// and then for the consent page on it.
fn session_to_consent_page(rig: &Rig, browser: &Browser) -> Timed {
    browser.open("about:blank");
    let started = Instant::now();
    let at = hearth_types::Timestamp::now();
    let session = rig.start_session();
    let link = session
        .viewer
        .as_ref()
        .and_then(|v| v.url.clone())
        .expect("a viewer link");
    browser.open(&link);
    browser.wait_for(
        Duration::from_secs(400),
        "the viewer to connect",
        "return document.getElementById('status').classList.contains('hidden')",
    );
    browser.wait_for(Duration::from_secs(120), "a frame", login::DRAWN);
    let first_frame = started.elapsed();
    let canvas = rig.wait_for_consent_page(browser, &link, Duration::from_secs(400));
    eprintln!(
        "first frame at {:.1} s, consent page at {:.1} s",
        first_frame.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    print_events(rig, &session, at);
    Timed {
        session,
        canvas,
        first_frame,
        consent: started.elapsed(),
    }
}

/// The session's and its VM's events, each at its time since `from`.
fn print_events(rig: &Rig, s: &Session, from: hearth_types::Timestamp) {
    let vm = s.vm.clone().expect("a VM");
    let vm_events: Vec<hearth_types::api::VmEvent> =
        rig.api
            .json("GET", &format!("/v1/vms/{vm}/events"), None, 200);
    let events: Vec<hearth_types::session::SessionEvent> =
        rig.api
            .json("GET", &format!("/v1/sessions/{}/events", s.id), None, 200);
    let mut lines: Vec<(i64, String)> = vm_events
        .iter()
        .map(|e| (e.at.as_millis(), format!("vm: {}", e.message)))
        .chain(
            events
                .iter()
                .map(|e| (e.at.as_millis(), format!("session: {}", e.message))),
        )
        .collect();
    lines.sort();
    for (at, line) in lines {
        let secs = (at - from.as_millis()) as f64 / 1000.0;
        eprintln!("  {secs:>7.1} s  {line}");
    }
}

fn cancel(rig: &mut Rig, s: &Session) {
    let _: Session = rig
        .api
        .json("POST", &format!("/v1/sessions/{}/cancel", s.id), None, 200);
    let vm = s.vm.clone().expect("a VM").to_string();
    rig.host
        .wait_state(&vm, VmState::Destroyed, Duration::from_secs(120));
}

#[test]
fn vm_a_template_pool_serves_a_login_session_refills_and_an_empty_pool_still_starts_sessions() {
    if hearth_testkit::static_agent().is_none() {
        return;
    }
    let Some(browser) = Browser::start(1280, 800) else {
        return;
    };
    let mut rig = Rig::start(&[]);
    let admin = rig.host.api();

    let made = Instant::now();
    let out = admin_cli(
        &rig.host,
        &admin,
        &["snapshot", "create", "login-tpl", "--image", IMAGE],
    );
    assert!(out.status.success(), "{}", common::text(&out));
    eprintln!("template made in {:.1} s", made.elapsed().as_secs_f64());
    let body = r#"{"size": 1, "ttl_secs": 3600, "refill_per_min": 60, "template": "login-tpl"}"#;
    let _: Pool = admin.json("PUT", &format!("/v1/pools/{IMAGE}"), Some(body), 200);
    let full = wait_pool(&rig.host, &admin, Duration::from_secs(300), |p| {
        waiting(p).len() == 1
    });
    let pooled = waiting(&full)[0].clone();
    assert_eq!(rig.host.vm(&pooled).tenant.as_str(), "_pool");

    let pooled_run = session_to_consent_page(&rig, &browser);
    let first = pooled_run.session.clone();
    let vm = first.vm.clone().expect("a VM").to_string();
    assert_eq!(vm, pooled, "the session did not take the pooled VM");
    eprintln!(
        "from the template pool: session start to the viewer's first frame {:.1} s, to the consent page {:.1} s",
        pooled_run.first_frame.as_secs_f64(),
        pooled_run.consent.as_secs_f64()
    );
    browser.click(&pooled_run.canvas, 0, 0);
    let id = first.id.to_string();
    let done = rig.wait(&id, Duration::from_secs(300), |s| !s.state.is_live());
    assert_eq!(
        done.state,
        SessionState::Completed,
        "{done:?}\n{}",
        rig.host.serve_logs()
    );
    let issued = rig.fake.issued();
    let (_, _, opened) = rig.open_credential();
    let auth: serde_json::Value = serde_json::from_slice(&opened).expect("auth.json is JSON");
    assert_eq!(
        auth["tokens"]["access_token"],
        issued[0].access_token.as_str()
    );
    rig.host
        .wait_state(&vm, VmState::Destroyed, Duration::from_secs(120));

    // The pool refills behind the session's VM.
    let refilled = wait_pool(&rig.host, &admin, Duration::from_secs(300), |p| {
        waiting(p).len() == 1 && waiting(p)[0] != pooled
    });
    assert_eq!(refilled.handed_out, 1);

    // Past its time to live, a waiting VM is replaced by a new restore.
    let old = waiting(&refilled)[0].clone();
    let short = r#"{"size": 1, "ttl_secs": 10, "refill_per_min": 60, "template": "login-tpl"}"#;
    let _: Pool = admin.json("PUT", &format!("/v1/pools/{IMAGE}"), Some(short), 200);
    wait_pool(&rig.host, &admin, Duration::from_secs(300), |p| {
        !p.vms.iter().any(|v| v.id.to_string() == old) && !p.vms.is_empty()
    });
    let events: Vec<hearth_types::api::VmEvent> =
        admin.json("GET", &format!("/v1/vms/{old}/events"), None, 200);
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("older than its pool's time to live")),
        "{events:?}"
    );

    // Emptied, the pool still lets sessions start: cold.
    let _: Pool = admin.json(
        "PUT",
        &format!("/v1/pools/{IMAGE}"),
        Some(r#"{"size": 0}"#),
        200,
    );
    wait_pool(&rig.host, &admin, Duration::from_secs(120), |p| {
        p.vms.is_empty()
    });
    let cold = session_to_consent_page(&rig, &browser);
    let second = cold.session.clone();
    assert_ne!(second.vm.clone().expect("a VM").to_string(), pooled);
    let ratio = |c: Duration, p: Duration| c.as_secs_f64() / p.as_secs_f64();
    eprintln!(
        "cold: session start to the viewer's first frame {:.1} s ({:.1}x the pooled), to the consent page {:.1} s ({:.1}x)",
        cold.first_frame.as_secs_f64(),
        ratio(cold.first_frame, pooled_run.first_frame),
        cold.consent.as_secs_f64(),
        ratio(cold.consent, pooled_run.consent)
    );
    cancel(&mut rig, &second);

    let _: Pool = admin.json("DELETE", &format!("/v1/pools/{IMAGE}"), None, 200);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let all: Vec<Vm> = admin.json("GET", "/v1/vms", None, 200);
        if all.iter().all(|v| v.state == VmState::Destroyed) {
            break;
        }
        assert!(Instant::now() < deadline, "left: {all:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = admin_cli(&rig.host, &admin, &["snapshot", "rm", "login-tpl"]);
    assert!(out.status.success(), "{}", common::text(&out));
    rig.host.assert_clean();
}
