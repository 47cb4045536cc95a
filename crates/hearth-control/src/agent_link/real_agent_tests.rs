//! The link against the real `hearth-agent` binary run on the host
//! (`--connect unix:PATH`), through a relay that plays QEMU's part: both
//! ends connect to it, and a host that hangs up makes the agent start
//! over. The agent runs a real service; the link stores what it prints.
//! The agent's stderr goes to `agent.log` in the test's directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hearth_store::{SqliteStore, Store};
use hearth_types::guest::{GuestConfig, RestartPolicy, ServiceSpec, Stream};
use hearth_types::VmId;
use tokio::net::UnixListener;
use tokio::sync::watch;

use super::*;

/// Accepts the host, then the agent, and splices them until either side
/// ends or `cut` ticks; then both are closed, as QEMU's hang-up would.
async fn relay(host_sock: &Path, agent_sock: &Path, mut cut: watch::Receiver<u32>) {
    let hosts = UnixListener::bind(host_sock).unwrap();
    let agents = UnixListener::bind(agent_sock).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut host, _)) = hosts.accept().await else {
                return;
            };
            let Ok((mut agent, _)) = agents.accept().await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut host, &mut agent) => {}
                _ = cut.changed() => {}
            }
        }
    });
}

async fn wait_until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..300 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within 30 s")
}

/// The real agent and a link to it through [`relay`].
struct RealAgent {
    dir: tempfile::TempDir,
    child: tokio::process::Child,
    store: Arc<SqliteStore>,
    vm: VmId,
    link: LinkHandle,
    /// Ticks cut the channel.
    cut: watch::Sender<u32>,
}

/// `None` (after a skip line) where no static agent can be built.
async fn real_agent(config: GuestConfig) -> Option<RealAgent> {
    let agent = hearth_testkit::static_agent()?;
    let dir = tempfile::tempdir().unwrap();
    let (host_sock, agent_sock) = (dir.path().join("host.sock"), dir.path().join("agent.sock"));
    let (cut, cut_rx) = watch::channel(0u32);
    relay(&host_sock, &agent_sock, cut_rx).await;
    let child = tokio::process::Command::new(&agent)
        .arg("--connect")
        .arg(format!("unix:{}", agent_sock.display()))
        .arg("--wait-config")
        .arg("--config")
        .arg(dir.path().join("none.json"))
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .arg("--console")
        .arg(dir.path().join("console"))
        .kill_on_drop(true)
        .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
        .spawn()
        .unwrap();

    let (store, vm) = crate::test_support::store_with_vm("vm-00000000000b").await;
    store.set_guest_config(&vm, &config).await.unwrap();
    let (tx, _notices) = mpsc::unbounded_channel();
    let link = spawn(LinkSpec {
        vm: vm.clone(),
        endpoint: hearth_vmm::AgentEndpoint::Unix(host_sock),
        store: store.clone(),
        notices: tx,
    });
    Some(RealAgent {
        dir,
        child,
        store,
        vm,
        link,
        cut,
    })
}

#[tokio::test]
async fn the_real_agent_runs_the_config_and_its_records_arrive_once_across_a_drop() {
    let service = ServiceSpec {
        name: "once".into(),
        argv: vec![
            "sh".into(),
            "-c".into(),
            "echo hello; echo oops >&2; exit 3".into(),
        ],
        env: vec![],
        user: None,
        restart: RestartPolicy::Never,
        readiness: None,
        crash_loop: Default::default(),
        after: vec![],
    };
    let config = GuestConfig {
        services: vec![service],
        ..Default::default()
    };
    let Some(RealAgent {
        dir: _dir,
        mut child,
        store,
        vm,
        link,
        cut,
    }) = real_agent(config).await
    else {
        return;
    };

    let exit = wait_until("the service's exit", async || {
        store
            .latest_agent_record(&vm, "service_exited")
            .await
            .unwrap()
    })
    .await;
    assert!(exit.body.contains(r#""code":3"#), "{}", exit.body);
    let lines = store.service_lines(&vm, "once", 10).await.unwrap();
    let got: Vec<_> = lines.iter().map(|l| (l.stream, l.line.as_str())).collect();
    assert!(got.contains(&(Stream::Stdout, "hello")), "{got:?}");
    assert!(got.contains(&(Stream::Stderr, "oops")), "{got:?}");
    let instance = store
        .agent_status(&vm)
        .await
        .unwrap()
        .unwrap()
        .hello
        .unwrap()
        .instance;

    // The channel drops: the agent reconnects, is welcomed with its ack and
    // sends nothing twice.
    // (Boot reports may still come; the service's records are done.)
    let of_service = async || {
        let all = store.agent_records(&vm).await.unwrap();
        all.into_iter()
            .filter(|r| r.service.as_deref() == Some("once"))
            .count()
    };
    let records_before = of_service().await;
    cut.send_modify(|n| *n += 1);
    wait_until("the link down", async || (!link.connected()).then_some(())).await;
    assert!(link.wait_connected(Duration::from_secs(20)).await);
    let mut events = link
        .exec(vec!["echo".into(), "hi".into()], None, false)
        .unwrap();
    let mut out = Vec::new();
    loop {
        match events.recv().await.unwrap() {
            ExecEvent::Output(_, bytes) => out.extend(bytes),
            ExecEvent::Exit { code, .. } => {
                assert_eq!(code, Some(0));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(out, b"hi\n");
    assert_eq!(
        store.service_lines(&vm, "once", 10).await.unwrap().len(),
        lines.len()
    );
    assert_eq!(of_service().await, records_before);
    let again = store
        .agent_status(&vm)
        .await
        .unwrap()
        .unwrap()
        .hello
        .unwrap();
    assert_eq!(again.instance, instance);
    child.kill().await.unwrap();
}

/// Output until the end: (all output, the last event).
async fn run_out(exec: &mut Exec) -> (Vec<u8>, ExecEvent) {
    let mut out = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), exec.events.recv())
            .await
            .expect("the exec ended within 30 s")
            .expect("an event");
        match event {
            ExecEvent::Output(_, bytes) => out.extend(bytes),
            last => return (out, last),
        }
    }
}

/// Output until it contains `needle` (within 30 s).
async fn out_until(exec: &mut Exec, needle: &str) -> Vec<u8> {
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains(needle) {
        let event = tokio::time::timeout(Duration::from_secs(30), exec.events.recv())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} within 30 s: {out:?}"));
        match event {
            Some(ExecEvent::Output(_, bytes)) => out.extend(bytes),
            other => panic!("{other:?} before {needle:?}: {out:?}"),
        }
    }
    out
}

fn spec(argv: &[&str]) -> ExecSpec {
    ExecSpec {
        argv: argv.iter().map(|a| a.to_string()).collect(),
        timeout: Some(Duration::from_secs(60)),
        stdin: true,
        ..ExecSpec::default()
    }
}

#[tokio::test]
async fn the_real_agent_takes_input_sizes_and_signals() {
    use hearth_types::guest::TermSize;
    let Some(agent) = real_agent(GuestConfig::default()).await else {
        return;
    };
    let link = &agent.link;
    assert!(link.wait_connected(Duration::from_secs(20)).await);
    assert_eq!(link.protocol(), Some(hearth_agent_proto::PROTOCOL));

    // stdin: bytes in, the same bytes out, then the end of input ends it.
    let mut cat = link.start_exec(spec(&["cat"])).unwrap();
    let typed: Vec<u8> = (0..200_000u32).map(|i| (i % 256) as u8).collect();
    cat.input.send(typed.clone()).unwrap();
    cat.input.end().unwrap();
    let (out, last) = run_out(&mut cat).await;
    assert!(
        out == typed,
        "cat gave back {} bytes of {}",
        out.len(),
        typed.len()
    );
    assert!(
        matches!(last, ExecEvent::Exit { code: Some(0), .. }),
        "{last:?}"
    );

    // A terminal of the size asked for, then of the new size.
    let tty = ExecSpec {
        tty: true,
        size: Some(TermSize {
            rows: 33,
            cols: 111,
        }),
        ..spec(&["sh", "-c", "stty size; read x; stty size"])
    };
    let mut sh = link.start_exec(tty).unwrap();
    out_until(&mut sh, "33 111").await;
    sh.input
        .resize(TermSize {
            rows: 50,
            cols: 132,
        })
        .unwrap();
    sh.input.send(b"\r".to_vec()).unwrap();
    let (out, last) = run_out(&mut sh).await;
    assert!(String::from_utf8_lossy(&out).contains("50 132"), "{out:?}");
    assert!(
        matches!(last, ExecEvent::Exit { code: Some(0), .. }),
        "{last:?}"
    );

    // Signals: INT, and a hang-up for a client that left. (A bare sleep:
    // `sh -c` catches INT until it execs, so a marker would race.)
    for (signal, how) in [(2, "int"), (1, "hup")] {
        let mut sleep = link.start_exec(spec(&["sleep", "100"])).unwrap();
        match how {
            "int" => sleep.input.signal(2).unwrap(),
            _ => sleep.input.hang_up().unwrap(),
        }
        let (_, last) = run_out(&mut sleep).await;
        let want = ExecEvent::Exit {
            code: None,
            signal: Some(signal),
            timed_out: false,
        };
        assert_eq!(last, want, "{how}");
    }

    // env reaches the command.
    let with_env = ExecSpec {
        env: vec![("GREETING".into(), "hi there".into())],
        stdin: false,
        ..spec(&["sh", "-c", "echo \"$GREETING\""])
    };
    let mut echo = link.start_exec(with_env).unwrap();
    let (out, _) = run_out(&mut echo).await;
    assert_eq!(out, b"hi there\n");
}

/// Flow control with the real agent: 4 MiB sent at once to a command that
/// reads only after a pause all reach it (the agent's own queue holds 1
/// MiB), and while it pauses the link holds the rest, not the agent.
#[tokio::test]
async fn the_real_agent_gets_all_of_a_large_input_sent_at_once() {
    let Some(agent) = real_agent(GuestConfig::default()).await else {
        return;
    };
    let link = &agent.link;
    assert!(link.wait_connected(Duration::from_secs(20)).await);
    let mut wc = link
        .start_exec(spec(&["sh", "-c", "sleep 1; wc -c"]))
        .unwrap();
    let total = 4 << 20;
    wc.input.send(vec![b'z'; total]).unwrap();
    wc.input.end().unwrap();
    assert!(!wc.input.has_room(), "the link should hold most of it");
    let (out, last) = run_out(&mut wc).await;
    assert_eq!(String::from_utf8_lossy(&out).trim(), total.to_string());
    assert!(
        matches!(last, ExecEvent::Exit { code: Some(0), .. }),
        "{last:?}"
    );
    assert!(wc.input.has_room(), "nothing is held once it ended");
}

/// A host TCP server (the real agent runs on the host, so its "guest
/// loopback" is this one) that answers each connection with the SHA-256
/// of all it read, then closes.
async fn digest_server() -> u16 {
    use sha2::{Digest, Sha256};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut sha = Sha256::new();
                let mut buf = vec![0u8; 65536];
                loop {
                    match c.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => sha.update(&buf[..n]),
                    }
                }
                let _ = c.write_all(hex::encode(sha.finalize()).as_bytes()).await;
            });
        }
    });
    port
}

/// Sends `data` through a new stream to `port` and returns the answer.
async fn through_port(link: &LinkHandle, port: u16, data: Vec<u8>) -> Vec<u8> {
    let stream = link.open_port(port).await.unwrap();
    let (mut local, remote) = tokio::io::duplex(64 * 1024);
    let spliced = tokio::spawn(splice(stream, remote));
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut rd, mut wr) = tokio::io::split(&mut local);
    let send = async {
        wr.write_all(&data).await.unwrap();
        wr.shutdown().await.unwrap();
    };
    let mut answer = Vec::new();
    let recv = rd.read_to_end(&mut answer);
    let ((), got) = tokio::join!(send, recv);
    got.unwrap();
    spliced.await.unwrap().unwrap();
    answer
}

#[tokio::test]
async fn the_real_agent_carries_port_streams_many_at_once_and_whole() {
    use sha2::{Digest, Sha256};
    let Some(agent) = real_agent(GuestConfig::default()).await else {
        return;
    };
    let link = &agent.link;
    assert!(link.wait_connected(Duration::from_secs(20)).await);
    let port = digest_server().await;

    let big: Vec<u8> = (0..(8u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    let want = hex::encode(Sha256::digest(&big));
    assert_eq!(through_port(link, port, big).await, want.as_bytes());

    let mut streams = tokio::task::JoinSet::new();
    for i in 0..20u8 {
        let link = link.clone();
        let data = vec![i; 100_000 + usize::from(i)];
        let want = hex::encode(Sha256::digest(&data));
        streams.spawn(async move { (through_port(&link, port, data).await, want) });
    }
    let mut done = 0;
    while let Some(joined) = streams.join_next().await {
        let (got, want) = joined.unwrap();
        assert_eq!(got, want.as_bytes());
        done += 1;
    }
    assert_eq!(done, 20);

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    match link.open_port(closed).await {
        Err(PortError::Refused(why)) => assert!(why.contains("nothing listens"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_guest_connection_to_a_listener_reaches_the_host_and_survives_a_reconnect() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(agent) = real_agent(GuestConfig::default()).await else {
        return;
    };
    let link = &agent.link;
    assert!(link.wait_connected(Duration::from_secs(20)).await);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut incoming = link.listen(port).unwrap();
    // A handler on the host: answers with what it got, upper-cased.
    tokio::spawn(async move {
        while let Some(stream) = incoming.recv().await {
            let (mut local, remote) = tokio::io::duplex(4096);
            tokio::spawn(splice(stream, remote));
            tokio::spawn(async move {
                let mut got = Vec::new();
                let (mut rd, mut wr) = tokio::io::split(&mut local);
                rd.read_to_end(&mut got).await.unwrap();
                wr.write_all(&got.to_ascii_uppercase()).await.unwrap();
                wr.shutdown().await.unwrap();
            });
        }
    });
    let ask = async |text: &str| {
        let mut c = wait_until("the guest listener", async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
        c.write_all(text.as_bytes()).await.unwrap();
        c.shutdown().await.unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).await.unwrap();
        answer
    };
    assert_eq!(ask("hello").await, "HELLO");
    agent.cut.send_modify(|n| *n += 1);
    wait_until("the link down", async || (!link.connected()).then_some(())).await;
    assert!(link.wait_connected(Duration::from_secs(20)).await);
    assert_eq!(ask("again").await, "AGAIN");
}

/// Everything the host logs (every level), for a search.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Logs on this thread (a current-thread test runtime's tasks too).
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

async fn next_set(events: &mut mpsc::UnboundedReceiver<CaptureEvent>) -> CapturedSet {
    let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
        .await
        .expect("a capture within 30 s");
    match event {
        Some(CaptureEvent::Captured(set)) => set,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_real_agent_captures_a_complete_file_with_its_bytes_and_again_after_a_reconnect() {
    use hearth_types::guest::{CaptureFile, CaptureSpec};
    use std::os::unix::fs::PermissionsExt;
    let logs = Logs::default();
    let _logging = logs.capture();
    let Some(agent) = real_agent(GuestConfig::default()).await else {
        return;
    };
    let link = &agent.link;
    assert!(link.wait_connected(Duration::from_secs(20)).await);
    let home = agent.dir.path().join("home/.codex");
    std::fs::create_dir_all(&home).unwrap();
    let path = home.join("auth.json");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let secret = format!("sk-capture-{nanos:x}");
    let spec = CaptureSpec {
        files: vec![CaptureFile {
            path: path.to_str().unwrap().into(),
            required_keys: vec!["/tokens/access_token".into()],
        }],
        stable_ms: 300,
    };
    let mut events = link.watch_capture(spec).unwrap();

    // The login has not got its token yet: nothing comes.
    std::fs::write(&path, r#"{"tokens":{"access_token":null}}"#).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(events.try_recv().is_err(), "nothing before the token");

    let body = format!("{{\"tokens\":{{\"access_token\":\"{secret}\"}}}}\n");
    std::fs::write(&path, &body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let set = next_set(&mut events).await;
    assert_eq!(set.files.len(), 1);
    assert_eq!(set.files[0].path, path.to_str().unwrap());
    assert_eq!(set.files[0].mode, 0o600);
    assert_eq!(&set.files[0].contents[..], body.as_bytes());
    assert!(events.try_recv().is_err(), "sent once");

    // The channel drops: the link asks again and the agent sends it again.
    agent.cut.send_modify(|n| *n += 1);
    wait_until("the link down", async || (!link.connected()).then_some(())).await;
    assert!(link.wait_connected(Duration::from_secs(20)).await);
    let again = next_set(&mut events).await;
    assert_eq!(&again.files[0].contents[..], body.as_bytes());

    // The secret is in no record, no agent log line, no host log line.
    drop(events);
    let records = agent.store.agent_records(&agent.vm).await.unwrap();
    assert!(!records.is_empty());
    assert!(records.iter().all(|r| !r.body.contains(&secret)));
    let agent_log = wait_until("the agent's capture lines", async || {
        let log = std::fs::read_to_string(agent.dir.path().join("agent.log")).unwrap();
        log.contains("stopped").then_some(log)
    })
    .await;
    assert!(agent_log.contains(": sent 1 files"), "{agent_log}");
    assert!(!agent_log.contains(&secret), "the agent logged the secret");
    let host_log = logs.text();
    assert!(host_log.contains("agent connected"), "{host_log}");
    assert!(!host_log.contains(&secret), "the host logged the secret");
}
