use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use hearth_agent_proto::{decode_data, encode_data, Stream};

use super::*;

fn test_guest() -> Arc<Guest> {
    let guest = Guest::new(crate::guest::Settings {
        image_config: "/nonexistent/agent.json".into(),
        run_dir: std::env::temp_dir().join("hearth-agent-unit"),
        console: "/dev/null".into(),
        wait_for_host: false,
        keep_clock: false,
        kernel_network: Ok(None),
    });
    guest.start();
    guest
}

fn hello() -> GuestMessage {
    GuestMessage::Hello {
        protocol: PROTOCOL,
        agent_version: "test".into(),
        boot_id: "boot".into(),
        instance: "i".into(),
        uptime_ms: 1,
    }
}

/// Starts an agent session on one end of a socket pair; returns the other.
fn agent() -> (UnixStream, JoinHandle<Result<(), SessionError>>) {
    let (host, guest) = UnixStream::pair().unwrap();
    let handle = std::thread::spawn(move || {
        let mut s = Session::new(guest.try_clone().unwrap(), guest, test_guest());
        s.handshake(hello())?;
        let served = s.serve();
        s.close();
        served
    });
    (host, handle)
}

/// The next message that is not a record (the guest's own
/// `config_applied` and `ready` come first) or a heartbeat.
fn recv(host: &mut UnixStream) -> GuestMessage {
    loop {
        match read_frame(host).unwrap().expect("the agent hung up") {
            GuestMessage::Record { .. }
            | GuestMessage::Heartbeat { .. }
            | GuestMessage::ExecInputWritten { .. } => {}
            other => return other,
        }
    }
}

fn welcome(host: &mut UnixStream) {
    assert!(matches!(
        recv(host),
        GuestMessage::Hello {
            protocol: PROTOCOL,
            ..
        }
    ));
    write_frame(
        host,
        &HostMessage::Welcome {
            protocol: PROTOCOL,
            acked: 0,
        },
    )
    .unwrap();
}

fn exec(host: &mut UnixStream, id: u64, argv: &[&str], timeout_ms: Option<u64>) {
    let msg = HostMessage::Exec {
        id,
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![("GREETING".into(), "hi".into())],
        timeout_ms,
        tty: false,
        stdin: false,
        size: None,
    };
    write_frame(host, &msg).unwrap();
}

/// Collects output until the exit; returns (stdout, stderr, exit).
fn outcome(host: &mut UnixStream) -> (String, String, GuestMessage) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        match recv(host) {
            GuestMessage::ExecOutput { stream, data, .. } => {
                let buf = if stream == Stream::Stdout {
                    &mut out
                } else {
                    &mut err
                };
                buf.extend(decode_data(&data).unwrap());
            }
            end => {
                let s = |b: Vec<u8>| String::from_utf8(b).unwrap();
                return (s(out), s(err), end);
            }
        }
    }
}

#[test]
fn exec_streams_both_outputs_and_the_exit_code() {
    let (mut host, agent) = agent();
    welcome(&mut host);
    exec(
        &mut host,
        1,
        &["sh", "-c", "echo $GREETING; echo err >&2; exit 3"],
        None,
    );
    let (out, err, end) = outcome(&mut host);
    assert_eq!((out.as_str(), err.as_str()), ("hi\n", "err\n"));
    let want = GuestMessage::ExecExit {
        id: 1,
        code: Some(3),
        signal: None,
        timed_out: false,
    };
    assert_eq!(end, want);
    drop(host);
    agent.join().unwrap().unwrap();
}

#[test]
fn input_sent_right_after_an_exec_reaches_it_and_a_signal_ends_it() {
    let (mut host, _agent) = agent();
    welcome(&mut host);
    let interactive = |id, argv: &[&str]| HostMessage::Exec {
        id,
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        timeout_ms: Some(20_000),
        tty: false,
        stdin: true,
        size: None,
    };
    write_frame(
        &mut host,
        &interactive(1, &["sh", "-c", "read x; echo got $x"]),
    )
    .unwrap();
    let input = HostMessage::ExecInput {
        id: 1,
        data: encode_data(b"it\n"),
    };
    write_frame(&mut host, &input).unwrap();
    let (out, _, end) = outcome(&mut host);
    assert_eq!(out, "got it\n");
    assert!(matches!(end, GuestMessage::ExecExit { code: Some(0), .. }));

    write_frame(&mut host, &interactive(2, &["cat"])).unwrap();
    write_frame(&mut host, &HostMessage::ExecSignal { id: 2, signal: 1 }).unwrap();
    let (_, _, end) = outcome(&mut host);
    let hung_up = GuestMessage::ExecExit {
        id: 2,
        code: None,
        signal: Some(1),
        timed_out: false,
    };
    assert_eq!(end, hung_up);
}

#[test]
fn a_host_leaving_with_unread_messages_has_hung_up() {
    let (mut host, agent) = agent();
    welcome(&mut host);
    exec(&mut host, 1, &["echo", "unread"], None);
    // The reply waits unread in the host's socket when it closes, so
    // the agent's next read fails with ECONNRESET instead of EOF.
    std::thread::sleep(Duration::from_millis(300));
    drop(host);
    agent.join().unwrap().unwrap();
}

#[test]
fn a_missing_program_is_an_exec_error() {
    let (mut host, _agent) = agent();
    welcome(&mut host);
    exec(&mut host, 2, &["/nonexistent/prog"], None);
    let (_, _, end) = outcome(&mut host);
    assert!(
        matches!(&end, GuestMessage::ExecError { id: 2, message } if message.contains("/nonexistent/prog")),
        "{end:?}"
    );
    exec(&mut host, 3, &[], None);
    assert!(matches!(
        outcome(&mut host).2,
        GuestMessage::ExecError { id: 3, .. }
    ));
}

#[test]
fn a_command_past_its_deadline_is_killed() {
    let (mut host, _agent) = agent();
    welcome(&mut host);
    exec(&mut host, 4, &["sh", "-c", "sleep 1 & sleep 30"], Some(100));
    let (_, _, end) = outcome(&mut host);
    let want = GuestMessage::ExecExit {
        id: 4,
        code: None,
        signal: Some(9),
        timed_out: true,
    };
    assert_eq!(end, want);
}

#[test]
fn a_refusal_ends_the_handshake_with_its_reason() {
    let (mut host, agent) = agent();
    recv(&mut host);
    let refusal = HostMessage::Refused {
        reason: "too new".into(),
    };
    write_frame(&mut host, &refusal).unwrap();
    let err = agent.join().unwrap().unwrap_err();
    assert!(err.to_string().contains("too new"), "{err}");
}

#[test]
fn an_unsupported_version_is_refused_by_the_agent() {
    let (mut host, agent) = agent();
    recv(&mut host);
    write_frame(
        &mut host,
        &HostMessage::Welcome {
            protocol: 99,
            acked: 0,
        },
    )
    .unwrap();
    assert!(matches!(
        agent.join().unwrap(),
        Err(SessionError::Version(99))
    ));
}

/// Runs `serve_hosts` over socket pairs handed to it one by one;
/// returns the sender of guest ends (drop it to end the loop).
fn agent_loop() -> (
    std::sync::mpsc::Sender<UnixStream>,
    JoinHandle<anyhow::Result<()>>,
) {
    let (tx, rx) = std::sync::mpsc::channel::<UnixStream>();
    let handle = std::thread::spawn(move || {
        serve_hosts(
            || Ok(rx.recv().ok().map(|g| (g.try_clone().unwrap(), g))),
            hello,
            Duration::from_millis(10),
            &test_guest(),
        )
    });
    (tx, handle)
}

fn connect(guests: &std::sync::mpsc::Sender<UnixStream>) -> UnixStream {
    let (host, guest) = UnixStream::pair().unwrap();
    guests.send(guest).unwrap();
    host
}

#[test]
fn the_agent_serves_one_host_after_another() {
    let (guests, agent) = agent_loop();
    for round in 1..=3 {
        let mut host = connect(&guests);
        welcome(&mut host);
        exec(&mut host, round, &["sh", "-c", "echo $GREETING"], None);
        let (out, _, end) = outcome(&mut host);
        assert_eq!(out, "hi\n");
        assert!(matches!(end, GuestMessage::ExecExit { code: Some(0), .. }));
    }
    drop(guests);
    agent.join().unwrap().unwrap();
}

#[test]
fn a_host_leaving_before_welcome_is_followed_by_the_next() {
    let (guests, agent) = agent_loop();
    let mut early = connect(&guests);
    recv(&mut early);
    drop(early);
    let mut host = connect(&guests);
    welcome(&mut host);
    exec(&mut host, 1, &["true"], None);
    assert!(matches!(
        outcome(&mut host).2,
        GuestMessage::ExecExit { code: Some(0), .. }
    ));
    drop(host);
    drop(guests);
    agent.join().unwrap().unwrap();
}

#[test]
fn a_command_outlives_its_host_and_its_output_goes_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("done");
    let script = format!(
        "sleep 0.3; echo late; echo late >&2; echo done > {}",
        done.display()
    );
    let (guests, agent) = agent_loop();
    let mut first = connect(&guests);
    welcome(&mut first);
    exec(&mut first, 1, &["sh", "-c", &script], None);
    drop(first);

    let mut second = connect(&guests);
    welcome(&mut second);
    let start = std::time::Instant::now();
    while !done.exists() {
        assert!(start.elapsed() < Duration::from_secs(10), "never finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    exec(&mut second, 2, &["true"], None);
    // The first thing the new host hears of is its own command.
    assert_eq!(
        recv(&mut second),
        GuestMessage::ExecExit {
            id: 2,
            code: Some(0),
            signal: None,
            timed_out: false
        }
    );
    drop(second);
    drop(guests);
    agent.join().unwrap().unwrap();
}

/// The next `port_*` message (port streams interleave with acks).
fn recv_port(host: &mut UnixStream) -> GuestMessage {
    loop {
        match recv(host) {
            GuestMessage::PortAck { .. } => {}
            other => return other,
        }
    }
}

/// Collects `port_data` of stream `id` until its `port_end`.
fn port_bytes_until_end(host: &mut UnixStream, id: u64) -> Vec<u8> {
    let mut got = Vec::new();
    loop {
        match recv_port(host) {
            GuestMessage::PortData { id: i, data } if i == id => {
                got.extend(decode_data(&data).unwrap());
                let bytes = decode_data(&data).unwrap().len() as u64;
                write_frame(host, &HostMessage::PortAck { id, bytes }).unwrap();
            }
            GuestMessage::PortEnd { id: i } if i == id => return got,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_port_stream_carries_bytes_both_ways_and_closes_once_both_ended() {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    // Reads everything, then answers with its reverse and closes.
    let echo = std::thread::spawn(move || {
        let (mut c, _) = server.accept().unwrap();
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut c, &mut all).unwrap();
        all.reverse();
        std::io::Write::write_all(&mut c, &all).unwrap();
    });
    let (mut host, _agent) = agent();
    welcome(&mut host);
    write_frame(&mut host, &HostMessage::PortConnect { id: 5, port }).unwrap();
    // Sent before the answer: it waits in the stream's queue.
    let sent: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    for chunk in sent.chunks(60_000) {
        let data = encode_data(chunk);
        write_frame(&mut host, &HostMessage::PortData { id: 5, data }).unwrap();
    }
    write_frame(&mut host, &HostMessage::PortEnd { id: 5 }).unwrap();
    assert_eq!(recv_port(&mut host), GuestMessage::PortConnected { id: 5 });
    let got = port_bytes_until_end(&mut host, 5);
    let mut want = sent;
    want.reverse();
    assert!(
        got == want,
        "{} bytes back, {} wanted",
        got.len(),
        want.len()
    );
    let closed = GuestMessage::PortClosed {
        id: 5,
        message: None,
    };
    assert_eq!(recv_port(&mut host), closed);
    echo.join().unwrap();
}

#[test]
fn a_guest_port_with_nothing_listening_is_refused_in_plain_words() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (mut host, _agent) = agent();
    welcome(&mut host);
    write_frame(&mut host, &HostMessage::PortConnect { id: 2, port }).unwrap();
    match recv_port(&mut host) {
        GuestMessage::PortRefused { id: 2, message } => {
            assert!(message.contains("nothing listens"), "{message}");
            assert!(message.contains(&port.to_string()), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_guest_program_connecting_to_a_listener_reaches_the_host() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (mut host, agent) = agent();
    welcome(&mut host);
    write_frame(&mut host, &HostMessage::PortListen { port }).unwrap();
    let client = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => break c,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let id = match recv_port(&mut host) {
        GuestMessage::PortAccepted { id, port: p } if p == port => id,
        other => panic!("unexpected {other:?}"),
    };
    assert_ne!(id & hearth_agent_proto::GUEST_STREAM_BIT, 0);
    std::io::Write::write_all(&mut &client, b"ping").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(port_bytes_until_end(&mut host, id), b"ping");
    let data = encode_data(b"pong");
    write_frame(&mut host, &HostMessage::PortData { id, data }).unwrap();
    write_frame(&mut host, &HostMessage::PortEnd { id }).unwrap();
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut &client, &mut answer).unwrap();
    assert_eq!(answer, b"pong");
    // The host leaves: the listener goes with the session.
    drop(host);
    agent.join().unwrap().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
