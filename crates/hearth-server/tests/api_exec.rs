//! `POST /v1/vms/{id}/exec` and the exec WebSocket against real VMs: the
//! minimal image's static `hearth-agent`, served by a real controller and
//! server, spoken to over HTTP and a real WebSocket client.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hearth_control::agent_link::ExecEvent;
use hearth_control::controller::{Controller, ControllerConfig};
use hearth_guestkit::image::{AgentChoice, ImageName};
use hearth_guestkit::DataDir;
use hearth_server::{mint_token, ServerConfig};
use hearth_store::SqliteStore;
use hearth_types::api::ExecEvent as ExecEventLine;
use hearth_types::api::{ApiError, ExecClientMessage, ExecRequest, ExecResult, Vm};
use hearth_types::guest::{ExecSignal, Stream, TermSize};
use hearth_types::{TenantId, VmId, VmState};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// A data directory of its own whose (shared) `minimal` image carries the
/// static agent; `None`, after one printed skip line, without one.
fn data_dir_with_agent_image() -> Option<hearth_testkit::PrivateDir> {
    let agent = hearth_testkit::static_agent()?;
    // scripts/test exports it for the whole suite; set it when run alone,
    // so the shared image is built with the agent like everywhere else.
    if std::env::var_os("HEARTH_AGENT").is_none() {
        std::env::set_var("HEARTH_AGENT", agent);
    }
    let shared = DataDir::new(hearth_testkit::test_data_dir());
    hearth_guestkit::kernel::fetch_debian_cloud_kernel(&shared, &mut |_| {})
        .expect("kernel fetch (see `hearth kernel fetch`)");
    hearth_guestkit::image::ensure_image(
        &shared,
        ImageName::Minimal,
        false,
        AgentChoice::Find,
        &mut |_| {},
    )
    .expect("minimal image builds");
    Some(hearth_testkit::private_data_dir())
}

struct Api {
    base: String,
    http: reqwest::Client,
    controller: Arc<Controller>,
}

impl Api {
    async fn start(data: &Path) -> (Api, tokio::task::JoinHandle<()>) {
        let data = DataDir::new(data);
        let store = SqliteStore::open(&data.store_file()).expect("store opens");
        let mut cc = ControllerConfig::new(data);
        cc.tick = Duration::from_millis(200);
        let controller = Controller::new(Arc::new(store), cc);
        let reconcilers = controller.start().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let ctl = Arc::clone(&controller);
        tokio::spawn(hearth_server::serve_on(
            listener,
            ctl,
            ServerConfig::default(),
            std::future::pending(),
        ));
        let api = Api {
            base,
            http: reqwest::Client::new(),
            controller,
        };
        (api, reconcilers)
    }

    async fn token(&self, tenant: &str) -> String {
        let tenant: TenantId = tenant.parse().unwrap();
        let (secret, record) = mint_token(tenant, false);
        self.controller.store().insert_token(&record).await.unwrap();
        secret
    }

    async fn post(&self, token: &str, path: &str, body: &str) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    async fn get_vm(&self, token: &str, id: &str) -> Vm {
        let r = self
            .http
            .get(format!("{}/v1/vms/{id}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    /// The VM's events, as text.
    async fn events(&self, token: &str, id: &str) -> String {
        let url = format!("{}/v1/vms/{id}/events", self.base);
        let r = self.http.get(url).bearer_auth(token).send().await.unwrap();
        r.text().await.unwrap()
    }

    async fn exec(&self, token: &str, id: &str, body: &str) -> (u16, String) {
        let r = self.post(token, &format!("/v1/vms/{id}/exec"), body).await;
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

fn result(status: u16, body: &str) -> ExecResult {
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(body).expect("an ExecResult")
}

fn error(status: u16, want: u16, body: &str) -> ApiError {
    assert_eq!(status, want, "{body}");
    serde_json::from_str(body).expect("an ApiError")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_commands_in_a_served_vm_through_its_agent() {
    let dir = tokio::task::spawn_blocking(data_dir_with_agent_image)
        .await
        .unwrap();
    let Some(dir) = dir else { return };
    let (api, _reconcilers) = Api::start(dir.path()).await;
    let alice = api.token("alice").await;
    let bob = api.token("bob").await;

    let r = api.post(&alice, "/v1/vms", r#"{"image":"minimal"}"#).await;
    assert_eq!(r.status().as_u16(), 201);
    let vm: Vm = r.json().await.unwrap();
    let id = vm.id.to_string();

    // Not ready yet: 409 naming the state.
    let (status, body) = api.exec(&alice, &id, r#"{"argv":["true"]}"#).await;
    let e = error(status, 409, &body);
    assert_eq!(e.code, "invalid_state");
    assert!(e.message.contains("not ready"), "{}", e.message);

    let started = Instant::now();
    loop {
        let vm = api.get_vm(&alice, &id).await;
        assert_ne!(vm.state, VmState::Failed, "{vm:?}");
        if vm.state == VmState::Ready {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "{vm:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The round trip: both streams and the exit code.
    let body = r#"{"argv":["sh","-c","echo out; echo err >&2; exit 3"],"timeout_secs":20}"#;
    let (status, text) = api.exec(&alice, &id, body).await;
    let r = result(status, &text);
    assert_eq!(
        (r.stdout.as_str(), r.stderr.as_str(), r.exit_code, r.signal),
        ("out\n", "err\n", Some(3), None)
    );
    assert!(!r.timed_out && !r.truncated);

    // A missing program: 200, no exit code or signal, stderr says why.
    let (status, text) = api
        .exec(&alice, &id, r#"{"argv":["/no/such/program"]}"#)
        .await;
    let r = result(status, &text);
    assert_eq!((r.exit_code, r.signal), (None, None), "{r:?}");
    assert!(r.stderr.contains("/no/such/program"), "{r:?}");

    // A timeout kills the command.
    let (status, text) = api
        .exec(&alice, &id, r#"{"argv":["sleep","30"],"timeout_secs":1}"#)
        .await;
    let r = result(status, &text);
    assert!(r.timed_out && r.signal == Some(9), "{r:?}");

    // Another tenant sees nothing.
    let (status, body) = api.exec(&bob, &id, r#"{"argv":["true"]}"#).await;
    assert_eq!(error(status, 404, &body).code, "not_found");

    // Bad bodies: 400 before anything runs.
    for bad in [
        r#"{"argv":[]}"#,
        r#"{"argv":["true"],"shell":true}"#,
        r#"{"argv":["true"],"timeout_secs":0}"#,
        r#"{"argv":["true"],"timeout_secs":3601}"#,
        r#"{}"#,
    ] {
        let (status, body) = api.exec(&alice, &id, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // Events name the program, never its arguments.
    let events = api.events(&alice, &id).await;
    assert!(events.contains("exec: sh exited 3"), "{events}");
    assert!(!events.contains("echo out"), "{events}");

    // Back to back, the way scripts call it.
    for n in 0..10 {
        let body = format!(r#"{{"argv":["echo","{n}"]}}"#);
        let (status, text) = api.exec(&alice, &id, &body).await;
        assert_eq!(result(status, &text).stdout, format!("{n}\n"));
    }

    // Two at once share the one link: they run side by side.
    let body = r#"{"argv":["sh","-c","sleep 1; echo $$"]}"#;
    let t = Instant::now();
    let ((s1, t1), (s2, t2)) =
        tokio::join!(api.exec(&alice, &id, body), api.exec(&alice, &id, body));
    let (r1, r2) = (result(s1, &t1), result(s2, &t2));
    assert_eq!((r1.exit_code, r2.exit_code), (Some(0), Some(0)));
    assert_ne!(r1.stdout, r2.stdout, "two processes");
    assert!(
        t.elapsed() < Duration::from_millis(1900),
        "{:?}: they took turns",
        t.elapsed()
    );

    // Streamed: output as it is printed, then the exit.
    let body = r#"{"argv":["sh","-c","echo first; sleep 2; echo second >&2; exit 4"]}"#;
    let t = Instant::now();
    let mut r = api
        .http
        .post(format!("{}/v1/vms/{id}/exec?stream=true", api.base))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut text = String::new();
    let mut first_at = None;
    while let Some(chunk) = r.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if first_at.is_none() && text.contains("output") {
            first_at = Some(t.elapsed());
        }
    }
    let events: Vec<ExecEventLine> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let decode = |d: &str| hearth_agent_proto::decode_data(d).unwrap();
    assert!(
        matches!(&events[0], ExecEventLine::Output { stream: Stream::Stdout, data } if decode(data) == b"first\n"),
        "{events:?}"
    );
    assert!(
        matches!(&events[1], ExecEventLine::Output { stream: Stream::Stderr, data } if decode(data) == b"second\n"),
        "{events:?}"
    );
    assert_eq!(
        events[2],
        ExecEventLine::Exit {
            exit_code: Some(4),
            signal: None,
            timed_out: false
        }
    );
    assert!(
        first_at.unwrap() < Duration::from_millis(1500),
        "the first line came at {first_at:?}, not as printed"
    );
    let (status, body) = api.exec(&alice, &id, r#"{"argv":["true"]}"#).await;
    assert_eq!(status, 200, "{body}");

    // Per-command environment.
    let body = r#"{"argv":["sh","-c","echo \"$GREETING\""],"env":[{"name":"GREETING","value":"hi there"}]}"#;
    let (status, text) = api.exec(&alice, &id, body).await;
    assert_eq!(result(status, &text).stdout, "hi there\n");

    attach_checks(&api, &alice, &bob, &id).await;

    // Latency: through the API vs. a bare exec on an open channel.
    let mut through_api = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let (status, text) = api.exec(&alice, &id, r#"{"argv":["echo","hi"]}"#).await;
        through_api.push(t.elapsed());
        assert_eq!(result(status, &text).stdout, "hi\n");
    }
    // Bare: the same echo straight on the VM's open agent link (no HTTP,
    // no controller checks, no JSON answer).
    let vm_id: VmId = id.parse().unwrap();
    let link = api
        .controller
        .agent_link(&vm_id)
        .expect("a running VM has a link");
    let mut bare = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let mut events = link
            .exec(
                vec!["echo".into(), "hi".into()],
                Some(Duration::from_secs(10)),
                false,
            )
            .expect("the link runs");
        let mut out = Vec::new();
        loop {
            match events.recv().await.expect("an event") {
                ExecEvent::Output(_, bytes) => out.extend(bytes),
                ExecEvent::Exit { .. } => break,
                other => panic!("{other:?}"),
            }
        }
        bare.push(t.elapsed());
        assert_eq!(out, b"hi\n");
    }
    let (api_ms, bare_ms) = (median(through_api), median(bare));
    println!(
        "exec `echo hi`, median of 10: through the API {api_ms:?}, bare on an open channel {bare_ms:?}, ratio {:.1}",
        api_ms.as_secs_f64() / bare_ms.as_secs_f64()
    );

    // Destroyed: 409 again.
    let r = api
        .http
        .delete(format!("{}/v1/vms/{id}", api.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let (status, body) = api.exec(&alice, &id, r#"{"argv":["true"]}"#).await;
    assert_eq!(error(status, 409, &body).code, "invalid_state");
    let started = Instant::now();
    while api.get_vm(&alice, &id).await.state != VmState::Destroyed {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn bad_exec_bodies_are_refused_before_the_vm_is_looked_at() {
    let server = common::server(ServerConfig::default()).await;
    let token = server.token("alice", false).await;
    let path = "/v1/vms/vm-000000000000/exec";
    for (bad, needle) in [
        (r#"{"argv":[]}"#, "argv is empty"),
        (r#"{"argv":["true"],"shell":true}"#, "shell"),
        (r#"{"argv":["true"],"timeout_secs":0}"#, "out of range"),
        (r#"{"argv":["true"],"timeout_secs":-1}"#, "timeout_secs"),
        (r#"{"argv":"true"}"#, "argv"),
    ] {
        let r = server.post(&token, path, bad).await;
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains(needle), "{bad}: {body}");
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the exec WebSocket of VM `id`, or the HTTP error it was refused
/// with.
async fn attach(api: &Api, token: &str, id: &str) -> Result<Ws, (u16, ApiError)> {
    let url = format!("{}/v1/vms/{id}/exec/attach", api.base).replacen("http://", "ws://", 1);
    let mut request = url.into_client_request().unwrap();
    let auth = format!("Bearer {token}").parse().unwrap();
    request.headers_mut().insert("authorization", auth);
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(r)) => {
            let body = r.body().clone().unwrap_or_default();
            Err((r.status().as_u16(), serde_json::from_slice(&body).unwrap()))
        }
        Err(e) => panic!("{e}"),
    }
}

async fn send(ws: &mut Ws, msg: &ExecClientMessage) {
    let text = serde_json::to_string(msg).unwrap();
    ws.send(Message::text(text)).await.unwrap();
}

fn start(argv: &[&str], tty: bool, size: Option<TermSize>) -> ExecClientMessage {
    ExecClientMessage::Start {
        request: ExecRequest {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            timeout_secs: Some(60),
            env: vec![],
        },
        tty,
        size,
    }
}

fn stdin(bytes: &[u8]) -> ExecClientMessage {
    ExecClientMessage::Stdin {
        data: hearth_agent_proto::encode_data(bytes),
    }
}

/// The server's next frame as an event; `Err` with the close code at the
/// close. Within 30 s.
async fn next_event(ws: &mut Ws) -> Result<ExecEventLine, Option<CloseCode>> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a frame within 30 s");
        match frame {
            Some(Ok(Message::Text(text))) => {
                return Ok(
                    serde_json::from_str(text.as_str()).unwrap_or_else(|e| panic!("{e}: {text}"))
                )
            }
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| f.code)),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Output until `needle` shows (the program's output so far).
async fn output_until(ws: &mut Ws, needle: &str) -> Vec<u8> {
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains(needle) {
        match next_event(ws).await {
            Ok(ExecEventLine::Output { data, .. }) => {
                out.extend(hearth_agent_proto::decode_data(&data).unwrap())
            }
            other => panic!(
                "{other:?} before {needle:?}: {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    out
}

/// All output, the last event, and the close frame's code, which must
/// follow it.
async fn to_the_end(ws: &mut Ws) -> (Vec<u8>, ExecEventLine, Option<CloseCode>) {
    let mut out = Vec::new();
    loop {
        match next_event(ws).await {
            Ok(ExecEventLine::Output { data, .. }) => {
                out.extend(hearth_agent_proto::decode_data(&data).unwrap())
            }
            Ok(last) => {
                let close = next_event(ws)
                    .await
                    .expect_err("a close frame after the last event");
                return (out, last, close);
            }
            Err(close) => panic!("closed ({close:?}) without an exit or error"),
        }
    }
}

fn exited(code: Option<i32>, signal: Option<i32>) -> ExecEventLine {
    ExecEventLine::Exit {
        exit_code: code,
        signal,
        timed_out: false,
    }
}

/// 4 MiB written to `cat` as fast as the socket takes them while its
/// output is read: every byte comes back (input flow control loses
/// nothing) and neither side waits for the other for good.
async fn large_input_both_ways(api: &Api, alice: &str, id: &str) {
    let ws = attach(api, alice, id).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    let text = |m: &ExecClientMessage| Message::text(serde_json::to_string(m).unwrap());
    tx.send(text(&start(&["cat"], false, None))).await.unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..4 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        for chunk in sent.chunks(192 * 1024) {
            tx.send(text(&stdin(chunk))).await.unwrap();
        }
        tx.send(text(&ExecClientMessage::StdinEnd)).await.unwrap();
        tx
    });
    let mut out = Vec::new();
    let read = async {
        while let Some(frame) = rx.next().await {
            let Message::Text(t) = frame.unwrap() else {
                continue;
            };
            match serde_json::from_str(t.as_str()).unwrap() {
                ExecEventLine::Output { data, .. } => {
                    out.extend(hearth_agent_proto::decode_data(&data).unwrap())
                }
                last => return last,
            }
        }
        panic!("closed before the end")
    };
    let last = tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .unwrap_or_else(|_| panic!("stuck after {} of {} bytes back", out.len(), data.len()));
    assert_eq!(last, exited(Some(0), None));
    assert!(
        out == data,
        "cat gave back {} of {} bytes",
        out.len(),
        data.len()
    );
    let _ = writer.await;
}

/// Waits until the process in the guest's /tmp/attach.pid is gone.
async fn wait_gone(api: &Api, alice: &str, id: &str, when: &str) {
    let check = r#"{"argv":["sh","-c","kill -0 $(cat /tmp/attach.pid) 2>/dev/null && echo running || echo gone"]}"#;
    let t = Instant::now();
    loop {
        let (status, text) = api.exec(alice, id, check).await;
        if result(status, &text).stdout == "gone\n" {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "sleep still runs {when}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The exec WebSocket on the test's VM: input, terminal sizes, signals, a
/// client that drops, and the refusals.
async fn attach_checks(api: &Api, alice: &str, bob: &str, id: &str) {
    // Another tenant is refused before any upgrade.
    let (status, e) = attach(api, bob, id).await.expect_err("bob is refused");
    assert_eq!((status, e.code.as_str()), (404, "not_found"));

    // stdin round trip: what goes in comes out, then the end ends it.
    let mut ws = attach(api, alice, id).await.unwrap();
    send(&mut ws, &start(&["cat"], false, None)).await;
    let typed: Vec<u8> = (0..100_000u32).map(|i| (i % 256) as u8).collect();
    send(&mut ws, &stdin(&typed[..60_000])).await;
    send(&mut ws, &stdin(&typed[60_000..])).await;
    send(&mut ws, &ExecClientMessage::StdinEnd).await;
    let (out, last, close) = to_the_end(&mut ws).await;
    assert!(
        out == typed,
        "cat gave back {} of {} bytes",
        out.len(),
        typed.len()
    );
    assert_eq!(last, exited(Some(0), None));
    assert_eq!(close, Some(CloseCode::Normal));

    large_input_both_ways(api, alice, id).await;

    // A frame above 1 MiB: an error frame naming the bound, then 1009.
    let mut ws = attach(api, alice, id).await.unwrap();
    send(&mut ws, &start(&["cat"], false, None)).await;
    let big = format!(r#"{{"type":"stdin","data":"{}"}}"#, "QUFB".repeat(300_000));
    ws.send(Message::text(big)).await.unwrap();
    let (_, last, close) = to_the_end(&mut ws).await;
    assert!(
        matches!(&last, ExecEventLine::Error { code, message } if code == "invalid_request" && message.contains("larger than")),
        "{last:?}"
    );
    assert_eq!(close, Some(CloseCode::Size));

    // Keystroke echo through the API, the VM's agent and cat.
    let mut ws = attach(api, alice, id).await.unwrap();
    send(&mut ws, &start(&["cat"], false, None)).await;
    let mut echoes = Vec::new();
    for n in 0..10 {
        let t = Instant::now();
        send(&mut ws, &stdin(format!("key{n}\n").as_bytes())).await;
        output_until(&mut ws, &format!("key{n}")).await;
        echoes.push(t.elapsed());
    }
    send(&mut ws, &ExecClientMessage::StdinEnd).await;
    assert_eq!(to_the_end(&mut ws).await.1, exited(Some(0), None));
    println!(
        "exec WebSocket: a line typed to cat and echoed back, median of 10: {:?}",
        median(echoes)
    );

    // A whole exec over the WebSocket: connect, start, output, exit, close.
    let mut whole = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let mut ws = attach(api, alice, id).await.unwrap();
        send(&mut ws, &start(&["echo", "hi"], false, None)).await;
        let (out, last, _) = to_the_end(&mut ws).await;
        whole.push(t.elapsed());
        assert_eq!((out, last), (b"hi\n".to_vec(), exited(Some(0), None)));
    }
    println!(
        "exec WebSocket: `echo hi` from connect to close, median of 10: {:?}",
        median(whole)
    );

    // A terminal of the size asked for, then of the new size.
    let mut ws = attach(api, alice, id).await.unwrap();
    let size = TermSize {
        rows: 33,
        cols: 111,
    };
    let script = ["sh", "-c", "stty size; read x; stty size"];
    send(&mut ws, &start(&script, true, Some(size))).await;
    output_until(&mut ws, "33 111").await;
    let size = TermSize {
        rows: 50,
        cols: 132,
    };
    send(&mut ws, &ExecClientMessage::Resize { size }).await;
    send(&mut ws, &stdin(b"\r")).await;
    let (out, last, _) = to_the_end(&mut ws).await;
    assert!(String::from_utf8_lossy(&out).contains("50 132"), "{out:?}");
    assert_eq!(last, exited(Some(0), None));

    // Ctrl-C: INT ends sleep with signal 2. (A bare sleep: `sh -c` catches
    // INT until it execs, so a marker printed before the exec would race.)
    let mut ws = attach(api, alice, id).await.unwrap();
    send(&mut ws, &start(&["sleep", "100"], false, None)).await;
    let signal = ExecSignal::Int;
    send(&mut ws, &ExecClientMessage::Signal { signal }).await;
    assert_eq!(to_the_end(&mut ws).await.1, exited(None, Some(2)));

    // A client that drops mid-command leaves nothing running.
    let mut ws = attach(api, alice, id).await.unwrap();
    let script = "echo $$ > /tmp/attach.pid; echo started; exec sleep 100";
    send(&mut ws, &start(&["sh", "-c", script], false, None)).await;
    output_until(&mut ws, "started").await;
    drop(ws);
    wait_gone(api, alice, id, "after its client left").await;

    // Also when the server was holding its input back (the program reads
    // none, so the server reads no more frames from the client): a
    // client that drops then is found out by the server's pings.
    let mut ws = attach(api, alice, id).await.unwrap();
    send(&mut ws, &start(&["sh", "-c", script], false, None)).await;
    output_until(&mut ws, "started").await;
    let chunk = stdin(&vec![b'h'; 256 * 1024]);
    for _ in 0..24 {
        let text = Message::text(serde_json::to_string(&chunk).unwrap());
        let sent = tokio::time::timeout(Duration::from_secs(2), ws.send(text)).await;
        if sent.is_err() {
            break; // the socket's buffers are full: held back for sure
        }
    }
    drop(ws);
    wait_gone(api, alice, id, "after its held-back client left").await;

    // A first frame that is not `start`: an error frame, then 1008.
    let mut ws = attach(api, alice, id).await.unwrap();
    send(&mut ws, &stdin(b"early")).await;
    let (out, last, close) = to_the_end(&mut ws).await;
    assert!(out.is_empty());
    let ExecEventLine::Error { code, message } = last else {
        panic!("{last:?}")
    };
    assert_eq!(code, "invalid_request");
    assert!(message.contains("start"), "{message}");
    assert_eq!(close, Some(CloseCode::Policy));

    // A bad start names the field; nothing runs.
    let mut ws = attach(api, alice, id).await.unwrap();
    ws.send(Message::text(r#"{"type":"start","request":{"argv":[]}}"#))
        .await
        .unwrap();
    let (_, last, _) = to_the_end(&mut ws).await;
    assert!(
        matches!(&last, ExecEventLine::Error { code, message } if code == "invalid_request" && message.contains("argv")),
        "{last:?}"
    );

    // The events name the programs and their ends, never input.
    let events = api.events(alice, id).await;
    assert!(events.contains("exec: cat exited 0"), "{events}");
    assert!(events.contains("exec: sh killed by signal 1"), "{events}");
    assert!(!events.contains("key1"), "{events}");
}
