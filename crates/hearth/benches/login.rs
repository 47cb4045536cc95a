//! A login session's numbers, on the rig of `tests/vm_login.rs` (the fake
//! provider, the fake Codex, a browser VM under QEMU, TCG here, and real
//! headless Chromium clicking through the viewer):
//!
//! - session start to the viewer showing the login page (cold boot of the
//!   browser VM, the login command, the VM's browser loading the page
//!   through the egress proxy, the viewer's first frames);
//! - the capture's latency: the tool's file complete (its "Successfully
//!   logged in", printed right after the final write) to the credential
//!   sealed (the session's event), with the provider's `stable_ms` (1 s)
//!   inside it by design;
//! - a download through the egress proxy from inside the VM (python's
//!   urllib, the proxy variables the session sets) against the same
//!   download straight from the host: throughput ratio, and the added
//!   latency per connection (20 small fetches each way, medians).
//!
//! `cargo bench -p hearth --bench login` (LOGIN_ROUNDS, default 3;
//! BULK_MIB, 64).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::login::Rig;
use common::webdriver::Browser;
use hearth_types::session::SessionEvent;
use hearth_types::SessionState;

/// Downloads `url` once and `small` 20 times: prints bytes, seconds, and
/// the 20 times in ms.
const FETCH: &str = r#"
import sys, time, urllib.request
url, small = sys.argv[1], sys.argv[2]
t = time.time(); n = len(urllib.request.urlopen(url).read()); dt = time.time() - t
lat = []
for _ in range(20):
    t = time.time(); urllib.request.urlopen(small).read(); lat.append((time.time() - t) * 1000)
print(n, dt, " ".join("%.2f" % x for x in lat))
"#;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if hearth_testkit::static_agent().is_none() {
        return;
    }
    let Some(browser) = Browser::start(1280, 800) else {
        return;
    };
    let bulk_mib = env("BULK_MIB", 64);
    let bulk = serve_bulk(bulk_mib << 20);
    let port = bulk.to_string();
    let rig = Rig::start(&[
        "--egress-host",
        "bulk.test=127.0.0.1",
        "--egress-allow",
        "bulk.test",
        "--egress-port",
        &port,
    ]);
    let rounds = env("LOGIN_ROUNDS", 3).max(1);
    let (mut to_page, mut capture) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let started = Instant::now();
        let session = rig.start_session();
        let id = session.id.to_string();
        let vm = session.vm.clone().unwrap().to_string();
        let link = session.viewer.and_then(|v| v.url).unwrap();
        rig.wait(&id, Duration::from_secs(600), |s| {
            s.state == SessionState::WaitingForUser
        });
        let canvas = rig.open_consent_page(&browser, &link, Duration::from_secs(300));
        to_page.push(started.elapsed());
        println!(
            "round {round}: session start to the login page on the viewer: {:.1} s",
            started.elapsed().as_secs_f64()
        );
        if round == 0 {
            egress_figures(&rig, &vm, bulk, bulk_mib);
        }
        browser.click(&canvas, 0, 0);
        let done = rig.wait(&id, Duration::from_secs(300), |s| !s.state.is_live());
        assert_eq!(done.state, SessionState::Completed, "{done:?}");
        let latency = capture_latency(&rig, &id, &vm);
        println!(
            "round {round}: file complete to sealed: {} ms",
            latency.as_millis()
        );
        capture.push(latency);
    }
    to_page.sort();
    capture.sort();
    println!(
        "session start to login page: median {:.1} s of {rounds} (min {:.1}, max {:.1})",
        to_page[rounds / 2].as_secs_f64(),
        to_page[0].as_secs_f64(),
        to_page[rounds - 1].as_secs_f64()
    );
    println!(
        "capture latency (file complete to sealed, stable_ms 1000 inside): median {} ms (min {}, max {})",
        capture[rounds / 2].as_millis(),
        capture[0].as_millis(),
        capture[rounds - 1].as_millis()
    );
}

/// From the login service's "Successfully logged in" line (host time of
/// its arrival) to the session's "sealed" event.
fn capture_latency(rig: &Rig, id: &str, vm: &str) -> Duration {
    let logs: serde_json::Value = rig.api.json(
        "GET",
        &format!("/v1/vms/{vm}/services/login/logs?tail=50"),
        None,
        200,
    );
    let written = logs["lines"]
        .as_array()
        .and_then(|l| {
            l.iter().find(|l| {
                l["line"]
                    .as_str()
                    .unwrap_or("")
                    .contains("Successfully logged in")
            })
        })
        .and_then(|l| l["at"].as_i64())
        .expect("the tool's success line");
    let events: Vec<SessionEvent> =
        rig.api
            .json("GET", &format!("/v1/sessions/{id}/events"), None, 200);
    let sealed = events
        .iter()
        .find(|e| e.message.contains("sealed"))
        .expect("the sealed event")
        .at
        .as_millis();
    Duration::from_millis((sealed - written).max(0) as u64)
}

/// The same fetches from inside the VM (through the proxy) and from the
/// host (straight).
fn egress_figures(rig: &Rig, vm: &str, port: u16, mib: usize) {
    let url = format!("http://bulk.test:{port}/bulk");
    let small = format!("http://bulk.test:{port}/small");
    let out = rig.host.vm_cli_as(
        &rig.api.token,
        &[
            "exec",
            vm,
            "--timeout",
            "600",
            "--",
            "python3",
            "-c",
            FETCH,
            &url,
            &small,
        ],
    );
    assert!(out.status.success(), "{}", common::text(&out));
    let through = parse(&String::from_utf8_lossy(&out.stdout));
    let direct_url = format!("http://127.0.0.1:{port}/bulk");
    let direct_small = format!("http://127.0.0.1:{port}/small");
    let out = std::process::Command::new("python3")
        .args(["-c", FETCH, &direct_url, &direct_small])
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .output()
        .expect("python3 on the host");
    let direct = parse(&String::from_utf8_lossy(&out.stdout));
    let rate = |(bytes, secs, _): &(u64, f64, f64)| *bytes as f64 / secs / (1 << 20) as f64;
    println!(
        "egress: {mib} MiB through the proxy from the VM {:.1} MiB/s, straight from the host {:.1} MiB/s: ratio {:.3}",
        rate(&through),
        rate(&direct),
        rate(&through) / rate(&direct)
    );
    println!(
        "egress: per-connection time of a small fetch, median of 20: {:.1} ms through the proxy from the VM, {:.2} ms straight: +{:.1} ms",
        through.2,
        direct.2,
        through.2 - direct.2
    );
}

/// (bytes, seconds, median small-fetch ms).
fn parse(line: &str) -> (u64, f64, f64) {
    let mut words = line.split_whitespace();
    let bytes = words.next().and_then(|w| w.parse().ok()).expect("bytes");
    let secs = words.next().and_then(|w| w.parse().ok()).expect("seconds");
    let mut lat: Vec<f64> = words.filter_map(|w| w.parse().ok()).collect();
    lat.sort_by(f64::total_cmp);
    (bytes, secs, lat[lat.len() / 2])
}

/// A plain HTTP server on the host's loopback: `/bulk` is `bytes` of
/// zeros, anything else 2 bytes. One thread per connection.
fn serve_bulk(bytes: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer(stream, bytes));
        }
    });
    port
}

fn answer(mut stream: std::net::TcpStream, bytes: usize) {
    let mut head = [0u8; 4096];
    let n = stream.read(&mut head).unwrap_or(0);
    let bulk = String::from_utf8_lossy(&head[..n]).contains("/bulk");
    let len = if bulk { bytes } else { 2 };
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    let chunk = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        if stream.write_all(&chunk[..n]).is_err() {
            return;
        }
        left -= n;
    }
}
