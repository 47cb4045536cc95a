//! The link against a scripted agent on a real Unix socket and a real
//! (in-memory) SQLite store.

use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_agent_proto::{encode_data, read_frame, write_frame, GuestMessage, HostMessage, Record};
use hearth_store::{SqliteStore, Store};
use hearth_types::guest::{GuestConfig, Stream};
use hearth_types::VmId;
use sha2::{Digest, Sha256};

use super::*;

struct Rig {
    _dir: tempfile::TempDir,
    listener: UnixListener,
    store: Arc<SqliteStore>,
    vm: VmId,
    notices: mpsc::UnboundedReceiver<Notice>,
    link: LinkHandle,
}

async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let (store, vm) = crate::test_support::store_with_vm("vm-00000000000a").await;
    let config = GuestConfig {
        hostname: Some("box".into()),
        ..Default::default()
    };
    store.set_guest_config(&vm, &config).await.unwrap();
    let (tx, notices) = mpsc::unbounded_channel();
    let link = spawn(LinkSpec {
        vm: vm.clone(),
        endpoint: hearth_vmm::AgentEndpoint::Unix(socket),
        store: store.clone(),
        notices: tx,
    });
    Rig {
        _dir: dir,
        listener,
        store,
        vm,
        notices,
        link,
    }
}

/// The agent's side of one connection: hello, then the welcome and config
/// the host must send.
fn agent_accepts(listener: &UnixListener, instance: &str) -> (UnixStream, u64) {
    agent_speaking(listener, instance, hearth_agent_proto::PROTOCOL)
}

/// [`agent_accepts`] for an agent of protocol `protocol`.
fn agent_speaking(listener: &UnixListener, instance: &str, protocol: u32) -> (UnixStream, u64) {
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let hello = GuestMessage::Hello {
        protocol,
        agent_version: "test".into(),
        boot_id: "boot".into(),
        instance: instance.into(),
        uptime_ms: 1_000,
    };
    write_frame(&mut s, &hello).unwrap();
    let Some(HostMessage::Welcome { acked, protocol: p }) = read_frame(&mut s).unwrap() else {
        panic!("no welcome")
    };
    assert_eq!(p, protocol.min(hearth_agent_proto::PROTOCOL));
    let mut next: Option<HostMessage> = read_frame(&mut s).unwrap();
    // From protocol 4 the host's time comes first, before the config.
    if p >= hearth_agent_proto::PORTS_PROTOCOL {
        let Some(HostMessage::Time { unix_ms }) = next else {
            panic!("no time after the welcome: {next:?}")
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        assert!(
            u128::from(unix_ms).abs_diff(now.as_millis()) < 60_000,
            "the host's time is {unix_ms}"
        );
        next = read_frame(&mut s).unwrap();
    }
    let Some(HostMessage::Config { config }) = next else {
        panic!("no config after the welcome")
    };
    assert_eq!(config.hostname.as_deref(), Some("box"));
    (s, acked)
}

fn log(seq: u64, line: &str) -> GuestMessage {
    GuestMessage::Record {
        seq,
        record: Record::ServiceLog {
            uptime_ms: 1_000 + seq,
            service: "web".into(),
            stream: Stream::Stdout,
            line: line.into(),
        },
    }
}

fn read_host(s: &mut UnixStream) -> HostMessage {
    read_frame(s).unwrap().expect("the host hung up")
}

/// Runs the blocking script beside the link.
async fn script<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test]
async fn records_are_stored_once_and_acked_across_a_reconnect() {
    let mut rig = rig().await;
    let listener = rig.listener.try_clone().unwrap();
    script(move || {
        let (mut s, acked) = agent_accepts(&listener, "i1");
        assert_eq!(acked, 0);
        write_frame(&mut s, &log(1, "one")).unwrap();
        let ready = GuestMessage::Record {
            seq: 2,
            record: Record::Ready { uptime_ms: 1_500 },
        };
        write_frame(&mut s, &ready).unwrap();
        let mut last = 0;
        while last < 2 {
            let HostMessage::Ack { seq } = read_host(&mut s) else {
                panic!("not an ack")
            };
            last = seq;
        }
        drop(s);
        // The agent comes back and replays what it thinks is unacked.
        let (mut s, acked) = agent_accepts(&listener, "i1");
        assert_eq!(acked, 2);
        write_frame(&mut s, &log(2, "replayed")).unwrap();
        write_frame(&mut s, &log(3, "three")).unwrap();
        let mut last = 0;
        while last < 3 {
            let HostMessage::Ack { seq } = read_host(&mut s) else {
                panic!("not an ack")
            };
            last = seq;
        }
    })
    .await;
    assert_eq!(
        rig.notices.recv().await,
        Some(Notice::Ready(rig.vm.clone()))
    );
    let lines = rig.store.service_lines(&rig.vm, "web", 10).await.unwrap();
    let texts: Vec<_> = lines.iter().map(|l| l.line.as_str()).collect();
    assert_eq!(texts, ["one", "three"]);
    let status = rig.store.agent_status(&rig.vm).await.unwrap().unwrap();
    assert_eq!(status.hello.unwrap().instance, "i1");
    // Host time: the hello's wall time - 1000 ms + the record's uptime.
    let ready = rig
        .store
        .latest_agent_record(&rig.vm, "ready")
        .await
        .unwrap()
        .unwrap();
    let skew = ready.at.as_millis() - (lines[0].at.as_millis() + 499);
    assert!(
        skew.abs() < 1_000,
        "ready at {:?}, line at {:?}",
        ready.at,
        lines[0].at
    );
}

#[tokio::test]
async fn execs_share_the_connection_and_get_their_own_answers() {
    let rig = rig().await;
    let listener = rig.listener.try_clone().unwrap();
    let agent = script(move || {
        let (mut s, _) = agent_accepts(&listener, "i");
        let mut ids = Vec::new();
        for _ in 0..2 {
            let HostMessage::Exec { id, argv, .. } = read_host(&mut s) else {
                panic!("not an exec")
            };
            ids.push((id, argv[0].clone()));
        }
        // Answer the second first.
        for (id, name) in ids.iter().rev() {
            let out = GuestMessage::ExecOutput {
                id: *id,
                stream: Stream::Stderr,
                data: encode_data(name.as_bytes()),
            };
            write_frame(&mut s, &out).unwrap();
            let exit = GuestMessage::ExecExit {
                id: *id,
                code: Some(*id as i32),
                signal: None,
                timed_out: false,
            };
            write_frame(&mut s, &exit).unwrap();
        }
        s
    });
    let mut a = rig.link.exec(vec!["a".into()], None, false).unwrap();
    let mut b = rig.link.exec(vec!["b".into()], None, false).unwrap();
    let _s = agent.await;
    assert_eq!(
        a.recv().await,
        Some(ExecEvent::Output(Stream::Stderr, b"a".to_vec()))
    );
    assert!(matches!(
        a.recv().await,
        Some(ExecEvent::Exit { code: Some(_), .. })
    ));
    assert_eq!(
        b.recv().await,
        Some(ExecEvent::Output(Stream::Stderr, b"b".to_vec()))
    );
    assert!(rig.link.connected());
}

#[tokio::test]
async fn a_command_in_flight_is_lost_when_the_agent_hangs_up() {
    let rig = rig().await;
    let listener = rig.listener.try_clone().unwrap();
    let mut events = rig.link.exec(vec!["sleep".into()], None, false).unwrap();
    script(move || {
        let (mut s, _) = agent_accepts(&listener, "i");
        let HostMessage::Exec { .. } = read_host(&mut s) else {
            panic!("not an exec")
        };
    })
    .await;
    assert_eq!(events.recv().await, Some(ExecEvent::Lost));
}

#[tokio::test]
async fn a_silent_agent_is_hung_up_on_and_reached_again() {
    let rig = rig().await;
    let listener = rig.listener.try_clone().unwrap();
    let started = Instant::now();
    script(move || {
        // The first connection: the agent missed the last hang-up.
        let (silent, _) = listener.accept().unwrap();
        let (s, _) = agent_accepts(&listener, "i");
        drop(silent);
        s
    })
    .await;
    assert!(rig.link.wait_connected(Duration::from_secs(5)).await);
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn a_hello_on_an_open_connection_is_greeted_on_a_new_one() {
    let rig = rig().await;
    let listener = rig.listener.try_clone().unwrap();
    script(move || {
        let (mut first, _) = agent_accepts(&listener, "i");
        // The agent began again on the same channel and waits for a welcome.
        let hello = GuestMessage::Hello {
            protocol: hearth_agent_proto::PROTOCOL,
            agent_version: "test".into(),
            boot_id: "boot".into(),
            instance: "j".into(),
            uptime_ms: 2_000,
        };
        write_frame(&mut first, &hello).unwrap();
        // The host hangs this connection up (whatever it still sends on
        // it first) and greets the agent on the next.
        while let Ok(Some::<HostMessage>(_)) = read_frame(&mut first) {}
        agent_accepts(&listener, "j")
    })
    .await;
    assert!(rig.link.wait_connected(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_file_is_written_in_chunks_with_its_checksum() {
    let rig = rig().await;
    let listener = rig.listener.try_clone().unwrap();
    let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    let expected = hex::encode(Sha256::digest(&data));
    let mut events = rig
        .link
        .write_file("/tmp/x".into(), data.clone(), 0o600)
        .unwrap();
    let got = script(move || {
        let (mut s, _) = agent_accepts(&listener, "i");
        let HostMessage::FileWrite { id, size, mode, .. } = read_host(&mut s) else {
            panic!("not a file_write")
        };
        assert_eq!(mode, 0o600);
        let mut got = Vec::new();
        let sha = loop {
            match read_host(&mut s) {
                HostMessage::FileChunk { data, .. } => {
                    got.extend(hearth_agent_proto::decode_data(&data).unwrap())
                }
                HostMessage::FileEnd { sha256, .. } => break sha256,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(got.len() as u64, size);
        let done = GuestMessage::FileDone {
            id,
            size,
            sha256: sha.clone(),
        };
        write_frame(&mut s, &done).unwrap();
        (got, sha, s)
    })
    .await;
    assert_eq!(got.0, data);
    assert_eq!(got.1, expected);
    assert_eq!(
        events.recv().await,
        Some(FileEvent::Done {
            size: data.len() as u64,
            sha256: expected
        })
    );
}

#[tokio::test]
async fn a_stopped_link_ends_and_refuses_requests() {
    let links = Links::default();
    let rig = rig().await;
    drop(rig.link);
    let (tx, _rx) = mpsc::unbounded_channel();
    links.start(LinkSpec {
        vm: rig.vm.clone(),
        endpoint: hearth_vmm::AgentEndpoint::Unix(rig._dir.path().join("none.sock")),
        store: rig.store.clone(),
        notices: tx,
    });
    let link = links.get(&rig.vm).unwrap();
    links.stop(&rig.vm);
    assert!(links.get(&rig.vm).is_none());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(link.exec(vec!["x".into()], None, false).is_none());
}

fn exit(id: u64, code: i32) -> GuestMessage {
    GuestMessage::ExecExit {
        id,
        code: Some(code),
        signal: None,
        timed_out: false,
    }
}

#[tokio::test]
async fn input_reaches_the_agent_after_its_exec_in_order_and_by_id() {
    use hearth_types::guest::TermSize;
    let rig = rig().await;
    let listener = rig.listener.try_clone().unwrap();
    let agent = script(move || {
        let (mut s, _) = agent_accepts(&listener, "i");
        let mut seen = Vec::new();
        let mut typed = Vec::new();
        let id = loop {
            match read_host(&mut s) {
                HostMessage::ExecInput { id, data } => {
                    typed.extend(hearth_agent_proto::decode_data(&data).unwrap());
                    seen.push((id, "input".to_owned()));
                }
                HostMessage::ExecInputEnd { id } => {
                    seen.push((id, "end".into()));
                    break id;
                }
                HostMessage::Exec {
                    id,
                    stdin,
                    tty,
                    size,
                    ..
                } => seen.push((id, format!("exec stdin={stdin} tty={tty} {size:?}"))),
                HostMessage::ExecResize { id, size } => {
                    seen.push((id, format!("resize {}x{}", size.rows, size.cols)))
                }
                HostMessage::ExecSignal { id, signal } => {
                    seen.push((id, format!("signal {signal}")))
                }
                other => panic!("unexpected {other:?}"),
            }
        };
        write_frame(&mut s, &exit(id, 0)).unwrap();
        (seen, typed, s)
    });
    let size = TermSize {
        rows: 40,
        cols: 100,
    };
    let spec = ExecSpec {
        argv: vec!["sh".into()],
        tty: true,
        stdin: true,
        size: Some(size),
        ..ExecSpec::default()
    };
    let mut exec = rig.link.start_exec(spec).unwrap();
    // A plain exec started in between keeps its own id.
    let mut other = rig.link.exec(vec!["true".into()], None, false).unwrap();
    let input = exec.input.clone();
    let big: Vec<u8> = (0..150_000u32).map(|i| (i % 253) as u8).collect();
    input.send(b"ls\r".to_vec()).unwrap();
    input
        .resize(TermSize {
            rows: 50,
            cols: 132,
        })
        .unwrap();
    input.send(big.clone()).unwrap();
    input.signal(2).unwrap();
    input.end().unwrap();
    let (seen, typed, _s) = agent.await;
    let id = exec.input.id();
    let want_ops = [
        "exec stdin=true tty=true Some(TermSize { rows: 40, cols: 100 })",
        "input",
        "resize 50x132",
        "input",
        "input",
        "input",
        "signal 2",
        "end",
    ];
    let others: Vec<_> = seen.iter().filter(|(i, _)| *i != id).collect();
    assert_eq!(others.len(), 1, "{seen:?}");
    assert!(
        others[0].1.starts_with("exec stdin=false tty=false None"),
        "{seen:?}"
    );
    let ops: Vec<_> = seen
        .iter()
        .filter(|(i, _)| *i == id)
        .map(|(_, op)| op.as_str())
        .collect();
    assert_eq!(ops, want_ops, "64 KiB per input message");
    let mut want = b"ls\r".to_vec();
    want.extend(&big);
    assert_eq!(typed, want);
    assert!(matches!(
        exec.events.recv().await,
        Some(ExecEvent::Exit { .. })
    ));
    drop(other.try_recv());
}

#[tokio::test]
async fn input_for_an_ended_exec_is_not_sent() {
    let rig = rig().await;
    let listener = rig.listener.try_clone().unwrap();
    let spec = ExecSpec {
        argv: vec!["cat".into()],
        stdin: true,
        ..ExecSpec::default()
    };
    let mut exec = rig.link.start_exec(spec).unwrap();
    let agent = script(move || {
        let (mut s, _) = agent_accepts(&listener, "i");
        let HostMessage::Exec { id, .. } = read_host(&mut s) else {
            panic!("not an exec")
        };
        write_frame(&mut s, &exit(id, 0)).unwrap();
        s
    });
    let mut s = agent.await;
    assert!(matches!(
        exec.events.recv().await,
        Some(ExecEvent::Exit { .. })
    ));
    exec.input.send(b"late".to_vec()).unwrap();
    exec.input.hang_up().unwrap();
    let _file = rig.link.read_file("/x".into(), 1).unwrap();
    let next = script(move || read_host(&mut s)).await;
    assert!(matches!(next, HostMessage::FileRead { .. }), "{next:?}");
}

#[tokio::test]
async fn a_protocol_2_agent_runs_plain_execs_but_no_interactive_ones() {
    let rig = rig().await;
    let listener = rig.listener.try_clone().unwrap();
    let agent = tokio::task::spawn_blocking(move || {
        let (mut s, _) = agent_speaking(&listener, "i", 2);
        let HostMessage::Exec {
            id, stdin, size, ..
        } = read_host(&mut s)
        else {
            panic!("not an exec")
        };
        assert!(!stdin && size.is_none());
        write_frame(&mut s, &exit(id, 0)).unwrap();
        // Nothing of protocol 3 follows: the next message is the file read.
        let next = read_host(&mut s);
        assert!(matches!(next, HostMessage::FileRead { .. }), "{next:?}");
        s
    });
    assert!(rig.link.wait_connected(Duration::from_secs(10)).await);
    assert_eq!(rig.link.protocol(), Some(2));
    let interactive = ExecSpec {
        argv: vec!["sh".into()],
        stdin: true,
        ..ExecSpec::default()
    };
    let e = rig.link.start_exec(interactive).unwrap_err();
    assert_eq!(e, LinkError::AgentTooOld { protocol: 2 });
    let message = e.to_string();
    assert!(
        message.contains("scripts/build-agent") && message.contains("hearth image build --force"),
        "{message}"
    );
    let plain = ExecSpec {
        argv: vec!["true".into()],
        env: vec![("A".into(), "b".into())],
        ..ExecSpec::default()
    };
    let mut exec = rig.link.start_exec(plain).unwrap();
    let refused = exec.input.signal(2).unwrap_err();
    assert_eq!(refused, LinkError::AgentTooOld { protocol: 2 });
    assert!(matches!(
        exec.events.recv().await,
        Some(ExecEvent::Exit { code: Some(0), .. })
    ));
    let _file = rig.link.read_file("/x".into(), 1).unwrap();
    let _s = agent.await.unwrap();
}

mod capture;
