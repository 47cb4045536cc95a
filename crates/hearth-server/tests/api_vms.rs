//! Real VMs through the API: created over HTTP, booted by QEMU (TCG when
//! KVM is unusable), followed to ready, read, streamed and destroyed, with
//! their console and events readable after they are gone.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hearth_types::api::{ConsoleTail, Vm, VmEvent};
use hearth_types::VmState;

const BOOT: Duration = Duration::from_secs(120);
const STOP: Duration = Duration::from_secs(60);

async fn create(server: &Server, token: &str, body: &str) -> (Vm, Duration) {
    let started = Instant::now();
    let r = server.post(token, "/v1/vms", body).await;
    let took = started.elapsed();
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let vm: Vm = ok_json(r).await;
    assert_eq!(location, format!("/v1/vms/{}", vm.id));
    (vm, took)
}

async fn console(server: &Server, token: &str, id: &str) -> ConsoleTail {
    ok_json(
        server
            .get(token, &format!("/v1/vms/{id}/console?lines=10000"))
            .await,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_boots_is_destroyed_and_keeps_its_console_and_events() {
    let server = vm_server().await;
    let token = server.token("team-a", false).await;
    let (vm, post_took) = create(&server, &token, r#"{"command":["sleep","600"]}"#).await;
    assert_eq!(vm.state, VmState::Requested);
    let id = vm.id.to_string();

    let ready = server.wait_state(&token, &id, VmState::Ready, BOOT).await;
    assert!(ready.ready_at.is_some());
    let tail = console(&server, &token, &id).await;
    assert!(!tail.archived);
    assert!(
        tail.lines.iter().any(|l| l.contains("Linux version")),
        "no kernel boot lines: {:?}",
        tail.lines
    );
    assert!(tail.lines.iter().any(|l| l.trim() == "hearth: ready"));
    let last2: ConsoleTail = ok_json(
        server
            .get(&token, &format!("/v1/vms/{id}/console?lines=2"))
            .await,
    )
    .await;
    assert_eq!(last2.lines.len(), 2);

    let admin = server.token("ops", true).await;
    let metrics = server.get(&admin, "/metrics").await.text().await.unwrap();
    for series in [
        "hearth_vms_created_total 1",
        "hearth_vms{state=\"ready\"} 1",
        "hearth_boot_seconds_count 1",
        "hearth_api_request_duration_seconds_count{route=\"/v1/vms\",status=\"2xx\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }

    let mut gets = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let r = server.get(&token, &format!("/v1/vms/{id}")).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        gets.push(started.elapsed());
    }
    eprintln!(
        "latency: POST /v1/vms {:.2} ms; GET /v1/vms/{{id}} median of 50 {:.2} ms",
        post_took.as_secs_f64() * 1000.0,
        median_ms(gets)
    );

    let r = server.delete(&token, &format!("/v1/vms/{id}")).await;
    assert_eq!(r.status(), 202);
    let stopping: Vm = ok_json(r).await;
    assert_eq!(stopping.state, VmState::Stopping);
    server
        .wait_state(&token, &id, VmState::Destroyed, STOP)
        .await;
    assert!(!server.dir.path().join("vms").join(&id).exists());

    let after = console(&server, &token, &id).await;
    assert!(after.archived);
    assert!(after.lines.iter().any(|l| l.contains("Linux version")));
    assert!(after.lines.iter().any(|l| l.trim() == "hearth: ready"));
    let hv = server
        .get(&token, &format!("/v1/vms/{id}/logs/hypervisor"))
        .await;
    assert!(ok_json::<ConsoleTail>(hv).await.archived);

    let events: Vec<VmEvent> =
        ok_json(server.get(&token, &format!("/v1/vms/{id}/events")).await).await;
    let states: Vec<VmState> = events.iter().map(|e| e.state).collect();
    use VmState::*;
    assert_eq!(
        states,
        [Requested, Preparing, Booting, Ready, Stopping, Stopped, Destroyed],
        "{events:#?}"
    );

    // Following a destroyed VM: the archived tail, then the end.
    let sse = server
        .get(&token, &format!("/v1/vms/{id}/console?follow=true&lines=3"))
        .await;
    let text = within(Duration::from_secs(10), "a finished stream", sse.text())
        .await
        .unwrap();
    assert_eq!(text.matches("data: ").count(), 4, "{text}");
    assert!(text.contains("event: end"), "{text}");

    let metrics = server.get(&admin, "/metrics").await.text().await.unwrap();
    assert!(metrics.contains("hearth_vms_cleaned_total 1"), "{metrics}");
    assert!(metrics.contains("hearth_vms{state=\"destroyed\"} 1"));
}

/// Reads a Server-Sent Events body until `until` holds for an event; the
/// events so far, as (name, data).
async fn read_events(
    r: &mut reqwest::Response,
    buf: &mut String,
    until: impl Fn(&str, &str) -> bool,
) -> Vec<(String, String)> {
    let mut events = Vec::new();
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut name = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if block.starts_with(':') {
                continue; // keep-alive
            }
            let done = until(&name, &data);
            events.push((name, data));
            if done {
                return events;
            }
        }
        match r.chunk().await.expect("stream readable") {
            Some(bytes) => buf.push_str(&String::from_utf8_lossy(&bytes)),
            None => return events,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_streams_a_running_vms_console_until_it_stops() {
    let server = vm_server().await;
    let token = server.token("team-a", false).await;
    let (vm, _) = create(&server, &token, "{}").await;
    let id = vm.id.to_string();
    server
        .wait_vm(&token, &id, BOOT, |vm| {
            vm.state == VmState::Booting || vm.state == VmState::Ready
        })
        .await;

    let mut r = server
        .get(&token, &format!("/v1/vms/{id}/console?follow=true&lines=1"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    let ready_line = serde_json::to_string("hearth: ready").unwrap();
    let events = within(
        BOOT,
        "the ready line through SSE",
        read_events(&mut r, &mut buf, |name, data| {
            name == "message" && data == ready_line
        }),
    )
    .await;
    assert!(
        events.last().is_some_and(|(_, d)| *d == ready_line),
        "{events:?}"
    );
    for (name, data) in &events {
        assert_eq!(name, "message");
        serde_json::from_str::<String>(data).expect("each line is a JSON string");
    }

    assert_eq!(
        server
            .delete(&token, &format!("/v1/vms/{id}"))
            .await
            .status(),
        202
    );
    let events = within(
        STOP,
        "the end of the stream",
        read_events(&mut r, &mut buf, |name, _| name == "end"),
    )
    .await;
    let (name, data) = events.last().expect("an end event");
    assert_eq!(name, "end", "{events:?}");
    assert!(data.contains("console closed"), "{data}");
    server
        .wait_state(&token, &id, VmState::Destroyed, STOP)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_answer_at_once_and_vms_destroyed_while_booting_end_destroyed() {
    let server = vm_server().await;
    let token = server.token("team-a", false).await;
    let mut posts = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (vm, took) = create(&server, &token, "{}").await;
        posts.push(took);
        ids.push(vm.id.to_string());
    }
    eprintln!(
        "latency: POST /v1/vms median of 5 {:.2} ms",
        median_ms(posts)
    );
    for id in &ids {
        let r = server.delete(&token, &format!("/v1/vms/{id}")).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
    for id in &ids {
        let vm = server
            .wait_vm(&token, id, STOP, |vm| vm.state == VmState::Destroyed)
            .await;
        let events: Vec<VmEvent> =
            ok_json(server.get(&token, &format!("/v1/vms/{id}/events")).await).await;
        assert!(
            !events.iter().any(|e| e.state == VmState::Ready),
            "{vm:?} {events:#?}"
        );
    }
    // Destroying a destroyed VM again is no error: it answers its state.
    let again = server.delete(&token, &format!("/v1/vms/{}", ids[0])).await;
    assert_eq!(again.status(), 202);
    assert_eq!(ok_json::<Vm>(again).await.state, VmState::Destroyed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_console_streams_and_leaves_vms_running() {
    let mut server = vm_server().await;
    let token = server.token("team-a", false).await;
    let (vm, _) = create(&server, &token, "{}").await;
    let id = vm.id.to_string();
    server.wait_state(&token, &id, VmState::Ready, BOOT).await;
    let mut r = server
        .get(&token, &format!("/v1/vms/{id}/console?follow=true&lines=1"))
        .await;
    let mut buf = String::new();
    within(
        Duration::from_secs(10),
        "the tail through SSE",
        read_events(&mut r, &mut buf, |name, _| name == "message"),
    )
    .await;

    within(
        Duration::from_secs(10),
        "graceful shutdown",
        server.shut_down(),
    )
    .await
    .expect("serve_on returns Ok");
    let events = within(
        Duration::from_secs(10),
        "the end of the stream",
        read_events(&mut r, &mut buf, |name, _| name == "end"),
    )
    .await;
    let (name, data) = events.last().expect("an end event");
    assert_eq!(name, "end");
    assert!(data.contains("shutting down"), "{data}");

    // The VM outlives the server.
    let scope = hearth_control::controller::Scope {
        tenant: "team-a".parse().unwrap(),
        admin: false,
    };
    let ctl = &server.controller;
    assert_eq!(ctl.vm(&scope, &vm.id).await.unwrap().state, VmState::Ready);
    ctl.destroy(&scope, &vm.id).await.unwrap();
    within(STOP, "destroyed without the server", async {
        while ctl.vm(&scope, &vm.id).await.unwrap().state != VmState::Destroyed {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}
