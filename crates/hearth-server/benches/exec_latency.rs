//! Exec round trip through `hearth serve`'s API against the same command
//! written straight on the VM's open agent link (no HTTP, no controller
//! checks), on one real VM (`minimal`, QEMU, TCG here). The link is the
//! one persistent channel the controller keeps per VM, so the difference
//! is what the API, the controller and JSON add. Goal: ratio at most 1.2.
//! Then the same for interactive input: a line typed into `cat` and its
//! echo, through the exec WebSocket against the link's own exec input.
//!
//! `cargo bench -p hearth-server --bench exec_latency` (RUNS, default 30).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hearth_control::agent_link::{ExecEvent, ExecSpec, FileEvent, LinkHandle};
use hearth_control::controller::{Controller, ControllerConfig};
use hearth_guestkit::image::{AgentChoice, ImageName};
use hearth_guestkit::DataDir;
use hearth_server::{mint_token, ServerConfig};
use hearth_store::SqliteStore;
use hearth_types::api::{
    ExecClientMessage, ExecEvent as ExecEventLine, ExecRequest, ExecResult, Vm,
};
use hearth_types::{VmId, VmState};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn main() {
    let Some(agent) = hearth_testkit::static_agent() else {
        return;
    };
    if std::env::var_os("HEARTH_AGENT").is_none() {
        std::env::set_var("HEARTH_AGENT", agent);
    }
    let shared = DataDir::new(hearth_testkit::test_data_dir());
    hearth_guestkit::kernel::fetch_debian_cloud_kernel(&shared, &mut |_| {}).expect("kernel");
    hearth_guestkit::image::ensure_image(
        &shared,
        ImageName::Minimal,
        false,
        AgentChoice::Find,
        &mut |_| {},
    )
    .expect("image");
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(bench(runs));
}

async fn bench(runs: usize) {
    let dir = hearth_testkit::private_data_dir();
    let data = DataDir::new(dir.path());
    let store = SqliteStore::open(&data.store_file()).expect("store");
    let ctl = Controller::new(Arc::new(store), ControllerConfig::new(data));
    ctl.start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(hearth_server::serve_on(
        listener,
        Arc::clone(&ctl),
        ServerConfig::default(),
        std::future::pending(),
    ));
    let (token, record) = mint_token("bench".parse().unwrap(), false);
    ctl.store().insert_token(&record).await.unwrap();
    let http = reqwest::Client::new();
    let vm: Vm = http
        .post(format!("{base}/v1/vms"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"image": "minimal"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let started = Instant::now();
    while ctl.store().vm(&vm.id).await.unwrap().unwrap().vm.state != VmState::Ready {
        assert!(started.elapsed() < Duration::from_secs(120), "not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Boot: the hypervisor's start (the `booting` event; microvm loads the
    // kernel directly) to the agent's hello over the link, and to ready.
    let events = ctl.store().events(&vm.id).await.unwrap();
    let at = |state: VmState| events.iter().find(|e| e.state == state).map(|e| e.at);
    let booting = at(VmState::Booting).expect("booting event");
    let hello = ctl
        .store()
        .agent_status(&vm.id)
        .await
        .unwrap()
        .and_then(|s| s.hello);
    let ready = at(VmState::Ready).expect("ready event");
    println!(
        "hypervisor started to agent connected: {:.2?}; to ready: {:.2?}",
        hello.map(|h| h.connected_at.since(booting)),
        ready.since(booting)
    );
    let link = ctl.agent_link(&vm.id).expect("link");
    let url = format!("{base}/v1/vms/{}/exec", vm.id);
    let (mut api, mut bare, mut direct) = (Vec::new(), Vec::new(), Vec::new());
    let mut echo = Vec::new();
    let scope = hearth_control::controller::Scope {
        tenant: "bench".parse().unwrap(),
        admin: false,
    };
    for _ in 0..runs {
        let t = Instant::now();
        let req = hearth_types::api::ExecRequest {
            argv: vec!["echo".into(), "hi".into()],
            timeout_secs: None,
            env: vec![],
        };
        let r = ctl.exec(&scope, &vm.id, req).await.unwrap();
        direct.push(t.elapsed());
        assert_eq!(r.stdout, "hi\n");
        let t = Instant::now();
        let r: ExecResult = http
            .post(&url)
            .bearer_auth(&token)
            .json(&serde_json::json!({"argv": ["echo", "hi"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        api.push(t.elapsed());
        assert_eq!(r.stdout, "hi\n");
        let t = Instant::now();
        let mut events = link
            .exec(
                vec!["echo".into(), "hi".into()],
                Some(Duration::from_secs(10)),
                false,
            )
            .unwrap();
        while let Some(e) = events.recv().await {
            if matches!(e, ExecEvent::Exit { .. }) {
                break;
            }
        }
        bare.push(t.elapsed());
        let t = Instant::now();
        agent_echo(&link).await;
        echo.push(t.elapsed());
    }
    let (a, b, e) = (median(api), median(bare), median(echo));
    println!(
        "controller.exec without HTTP, median of {runs}: {:.2?}",
        median(direct)
    );
    println!(
        "exec `echo hi`, median of {runs} alternating: through the API {a:.2?}, bare on the open link {b:.2?}, ratio {:.2}",
        a.as_secs_f64() / b.as_secs_f64()
    );
    println!(
        "agent echo without a process (read of the 1-line /etc/hostname), median of {runs}: {e:.2?}; exec through the API / echo: {:.2}",
        a.as_secs_f64() / e.as_secs_f64()
    );
    keystrokes(&base, &token, &vm.id, &link, runs).await;
    ctl.destroy(
        &hearth_control::controller::Scope {
            tenant: "bench".parse().unwrap(),
            admin: true,
        },
        &vm.id,
    )
    .await
    .ok();
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A line typed into a running `cat` until its echo is back, alternating
/// between the exec WebSocket (HTTP upgrade done once; the server, the
/// controller, the link) and the open link's own exec input.
async fn keystrokes(base: &str, token: &str, vm: &VmId, link: &LinkHandle, runs: usize) {
    let url = format!("{base}/v1/vms/{vm}/exec/attach").replacen("http://", "ws://", 1);
    let mut request = url.into_client_request().unwrap();
    let auth = format!("Bearer {token}").parse().unwrap();
    request.headers_mut().insert("authorization", auth);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
        .await
        .expect("the exec WebSocket");
    let start = ExecClientMessage::Start {
        request: ExecRequest {
            argv: vec!["cat".into()],
            timeout_secs: Some(600),
            env: vec![],
        },
        tty: false,
        size: None,
    };
    send(&mut ws, &start).await;
    let spec = ExecSpec {
        argv: vec!["cat".into()],
        stdin: true,
        timeout: Some(Duration::from_secs(600)),
        ..ExecSpec::default()
    };
    let mut bare = link.start_exec(spec).expect("the link takes the exec");
    let (mut via_ws, mut via_link) = (Vec::new(), Vec::new());
    for n in 0..runs {
        let line = format!("key{n}\n");
        let t = Instant::now();
        let data = hearth_agent_proto::encode_data(line.as_bytes());
        send(&mut ws, &ExecClientMessage::Stdin { data }).await;
        ws_echo(&mut ws, &line).await;
        via_ws.push(t.elapsed());
        let t = Instant::now();
        bare.input.send(line.clone().into_bytes()).unwrap();
        link_echo(&mut bare.events, &line).await;
        via_link.push(t.elapsed());
    }
    send(&mut ws, &ExecClientMessage::StdinEnd).await;
    bare.input.end().unwrap();
    let (w, l) = (median(via_ws), median(via_link));
    println!(
        "a line typed into cat and echoed, median of {runs} alternating: through the exec WebSocket {w:.2?}, on the open link {l:.2?}, ratio {:.2}",
        w.as_secs_f64() / l.as_secs_f64()
    );
}

async fn send(ws: &mut Ws, msg: &ExecClientMessage) {
    let text = serde_json::to_string(msg).unwrap();
    ws.send(Message::text(text))
        .await
        .expect("the frame is sent");
}

/// Output frames until `line` came back.
async fn ws_echo(ws: &mut Ws, line: &str) {
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains(line) {
        let frame = ws.next().await.expect("a frame").expect("a good frame");
        let Message::Text(text) = frame else { continue };
        match serde_json::from_str(text.as_str()).unwrap() {
            ExecEventLine::Output { data, .. } => {
                out.extend(hearth_agent_proto::decode_data(&data).unwrap())
            }
            other => panic!("cat ended: {other:?}"),
        }
    }
}

/// Output events until `line` came back.
async fn link_echo(events: &mut tokio::sync::mpsc::UnboundedReceiver<ExecEvent>, line: &str) {
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains(line) {
        match events.recv().await.expect("an event") {
            ExecEvent::Output(_, bytes) => out.extend(bytes),
            other => panic!("cat ended: {other:?}"),
        }
    }
}

/// A round trip the agent answers itself, starting no process: the
/// channel's own cost, the floor under any exec.
async fn agent_echo(link: &LinkHandle) {
    let mut events = link
        .read_file("/etc/hostname".into(), 4096)
        .expect("the link is up");
    while let Some(e) = events.recv().await {
        match e {
            FileEvent::Chunk(_) => {}
            FileEvent::Done { .. } => return,
            other => panic!("the echo failed: {other:?}"),
        }
    }
    panic!("the link ended during the echo");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
