//! A warm pool of the `browser` image serving login sessions, against a
//! real `hearth serve`, real VMs under QEMU (TCG here) and a real headless
//! Chromium on the host opening each session's viewer link: a session
//! start takes the pooled VM and its viewer shows the desktop; the pool
//! refills to its size; with the pool empty, a session still starts
//! (cold). Prints session start to the viewer's first frame, pooled and
//! cold, and their ratio (docs/benchmarks.md).

mod common;

use std::time::{Duration, Instant};

use common::serve::{Api, Host};
use common::webdriver::Browser;
use hearth_types::api::Vm;
use hearth_types::pool::{Pool, PoolVmState};
use hearth_types::session::Session;
use hearth_types::VmState;

/// A login that waits, on the browser image, started once the browser is.
const WAITER: &str = r#"
name = "desk"
description = "a login that waits on the browser image, for tests"
image = "browser"
login = ["sleep", "3600"]
opens_browser_with = "browser-env"
domains = ["login.desk.test"]

[capture]
stable_ms = 200

[[capture.files]]
path = ".desk/token.json"
required_keys = ["/token"]
"#;

/// True once the viewer's canvas shows anything but black.
const DRAWN: &str = "const c = document.querySelector('#screen canvas'); if (!c || !c.width) return false; \
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
for (let i = 0; i < d.length; i += 4096) { if (d[i] || d[i + 1] || d[i + 2]) return true; } return false;";

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
        let p: Pool = api.json("GET", "/v1/pools/browser", None, 200);
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

/// Starts a session for `user` and opens its viewer link: the session, and
/// the time from the start to the viewer's first frame.
fn session_to_first_frame(api: &Api, browser: &Browser, user: &str) -> (Session, Duration) {
    browser.open("about:blank");
    let started = Instant::now();
    let body = format!(r#"{{"user": "{user}", "provider": "desk"}}"#);
    let s: Session = api.json("POST", "/v1/sessions", Some(&body), 201);
    let link = s
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
    browser.wait_for(Duration::from_secs(120), "a frame", DRAWN);
    (s, started.elapsed())
}

#[test]
fn vm_a_browser_pool_serves_a_session_refills_and_an_empty_pool_still_starts_sessions() {
    if hearth_testkit::static_agent().is_none() {
        return;
    }
    let Some(browser) = Browser::start(1280, 800) else {
        return;
    };
    common::ensure_assets("browser");
    let mut host = Host::new(&[]);
    let providers = host.data().join("providers");
    std::fs::create_dir_all(&providers).unwrap();
    std::fs::write(providers.join("desk.toml"), WAITER).unwrap();
    host.add_serve_args(&["--providers", providers.to_str().unwrap()]);
    host.start();
    let admin = host.api();
    let mut team = host.api();
    team.token = host.mint(&["--tenant", "team-a"]);

    let body = r#"{"size": 1, "ttl_secs": 3600, "refill_per_min": 60}"#;
    let _: Pool = admin.json("PUT", "/v1/pools/browser", Some(body), 200);
    let full = wait_pool(&host, &admin, Duration::from_secs(300), |p| {
        waiting(p).len() == 1
    });
    let pooled = waiting(&full)[0].clone();
    assert_eq!(host.vm(&pooled).tenant.as_str(), "_pool");

    let (first, from_pool) = session_to_first_frame(&team, &browser, "alice");
    let vm = first.vm.clone().expect("a VM").to_string();
    assert_eq!(vm, pooled, "the session did not take the pooled VM");
    eprintln!(
        "session start to the viewer's first frame, pooled: {:.1} s",
        from_pool.as_secs_f64()
    );

    // The pool refills behind the session's VM.
    let refilled = wait_pool(&host, &admin, Duration::from_secs(300), |p| {
        waiting(p).len() == 1 && waiting(p)[0] != pooled
    });
    assert_eq!(refilled.handed_out, 1);
    let _: Session = team.json(
        "POST",
        &format!("/v1/sessions/{}/cancel", first.id),
        None,
        200,
    );
    host.wait_state(&vm, VmState::Destroyed, Duration::from_secs(120));

    // Emptied, the pool still lets sessions start: cold.
    let _: Pool = admin.json("PUT", "/v1/pools/browser", Some(r#"{"size": 0}"#), 200);
    wait_pool(&host, &admin, Duration::from_secs(120), |p| {
        p.vms.is_empty()
    });
    let (second, cold) = session_to_first_frame(&team, &browser, "bob");
    let cold_vm = second.vm.clone().expect("a VM").to_string();
    assert_ne!(cold_vm, pooled);
    eprintln!(
        "session start to the viewer's first frame, cold: {:.1} s; cold / pooled: {:.2}",
        cold.as_secs_f64(),
        cold.as_secs_f64() / from_pool.as_secs_f64()
    );
    let _: Session = team.json(
        "POST",
        &format!("/v1/sessions/{}/cancel", second.id),
        None,
        200,
    );
    host.wait_state(&cold_vm, VmState::Destroyed, Duration::from_secs(120));

    let _: Pool = admin.json("DELETE", "/v1/pools/browser", None, 200);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let all: Vec<Vm> = admin.json("GET", "/v1/vms", None, 200);
        if all.iter().all(|v| v.state == VmState::Destroyed) {
            break;
        }
        assert!(Instant::now() < deadline, "left: {all:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    host.assert_clean();
}
