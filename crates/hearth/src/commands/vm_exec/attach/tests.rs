//! The session against a real WebSocket peer on 127.0.0.1 (tungstenite's
//! server side): not a fake of hearth serve, just the other end of the
//! contract in `ExecClientMessage`'s doc, to show what the CLI sends, in
//! which order, and what it makes of the answers.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use hearth_types::guest::{ExecSignal, Stream};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};

use super::super::input::Forward;
use super::*;

const TOKEN: &str = "hth_test_token_value";

fn api(port: u16) -> ApiArgs {
    ApiArgs {
        url: format!("http://127.0.0.1:{port}/"),
        token: Some(TOKEN.into()),
    }
}

fn id() -> VmId {
    "vm-0123456789ab".parse().unwrap()
}

/// A peer that accepts one WebSocket (checking the path and the bearer
/// token) and runs `script` on it; its result is what the script returns.
fn peer<T: Send + 'static>(
    script: impl FnOnce(&mut WebSocket<TcpStream>) -> T + Send + 'static,
) -> (u16, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut ws = tungstenite::accept_hdr(stream, path_and_token).unwrap();
        script(&mut ws)
    });
    (port, handle)
}

/// The upgrade's checks: the exec WebSocket's path and our bearer token.
#[allow(clippy::result_large_err)] // tungstenite's callback type
fn path_and_token(req: &Request, res: Response) -> Result<Response, ErrorResponse> {
    assert_eq!(req.uri().path(), "/v1/vms/vm-0123456789ab/exec/attach");
    let auth = req.headers().get("authorization").unwrap();
    assert_eq!(auth.to_str().unwrap(), format!("Bearer {TOKEN}"));
    Ok(res)
}

fn next(ws: &mut WebSocket<TcpStream>) -> ExecClientMessage {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("not a text frame: {other:?}"),
        }
    }
}

fn tell(ws: &mut WebSocket<TcpStream>, event: &ExecEvent) {
    ws.send(Message::text(serde_json::to_string(event).unwrap()))
        .unwrap();
}

fn output(stream: Stream, bytes: &[u8]) -> ExecEvent {
    ExecEvent::Output {
        stream,
        data: STANDARD.encode(bytes),
    }
}

fn exit(code: i32) -> ExecEvent {
    ExecEvent::Exit {
        exit_code: Some(code),
        signal: None,
        timed_out: false,
    }
}

/// Ends the way the server does: the close frame, then until the client's
/// answer.
fn close(ws: &mut WebSocket<TcpStream>) {
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
}

fn start(argv: &[&str]) -> Start {
    Start {
        request: ExecRequest {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            timeout_secs: Some(3600),
            env: vec![],
        },
        tty: false,
        size: None,
    }
}

fn no_signals() -> Forward<'static> {
    Forward {
        signals: false,
        resize_from: None,
    }
}

type Captured = Printer<Vec<u8>, Vec<u8>>;

fn captured() -> Captured {
    Printer {
        out: Vec::new(),
        err: Vec::new(),
    }
}

#[test]
fn start_then_stdin_in_order_then_its_end_and_the_remote_status_is_ours() {
    let (port, server) = peer(|ws| {
        let first = next(ws);
        let mut got = Vec::new();
        loop {
            match next(ws) {
                ExecClientMessage::Stdin { data } => {
                    let bytes = STANDARD.decode(data).unwrap();
                    // Echo each chunk at once: output and input interleave.
                    tell(ws, &output(Stream::Stdout, &bytes));
                    got.extend(bytes);
                }
                ExecClientMessage::StdinEnd => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        tell(ws, &output(Stream::Stderr, b"to stderr\n"));
        tell(ws, &exit(7));
        close(ws);
        (first, got)
    });
    let mut ws = connect(&api(port), &id()).unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| b"ab\n"[i as usize % 3]).collect();
    let inputs = Inputs::start(io::Cursor::new(data.clone()), no_signals()).unwrap();
    let mut printer = captured();
    let ended = run_session(&mut ws, start(&["sort"]), &inputs, &mut printer).unwrap();

    let (first, got) = server.join().unwrap();
    let ExecClientMessage::Start { request, tty, size } = first else {
        panic!("the first frame is not start: {first:?}");
    };
    assert_eq!(
        (request.argv, tty, size),
        (vec!["sort".to_owned()], false, None)
    );
    assert_eq!(got, data, "stdin arrived whole and in order");
    assert_eq!(printer.out, data);
    assert_eq!(printer.err, b"to stderr\n");
    assert_eq!(ended.exit_code, Some(7));
    assert_eq!(super::super::exit_status(&ended), 7);
}

#[test]
fn the_remote_exit_ends_the_session_while_stdin_is_still_open() {
    let (port, server) = peer(|ws| {
        let _start = next(ws);
        tell(ws, &output(Stream::Stdout, b"bye\n"));
        tell(
            ws,
            &ExecEvent::Exit {
                exit_code: None,
                signal: Some(15),
                timed_out: false,
            },
        );
        close(ws);
    });
    let mut ws = connect(&api(port), &id()).unwrap();
    // Its write end stays open: stdin never ends.
    let (stdin, _keep_open) = UnixStream::pair().unwrap();
    let inputs = Inputs::start(stdin, no_signals()).unwrap();
    let mut printer = captured();
    let ended = run_session(&mut ws, start(&["sh"]), &inputs, &mut printer).unwrap();
    server.join().unwrap();
    assert_eq!(printer.out, b"bye\n");
    assert_eq!(super::super::exit_status(&ended), 128 + 15);
}

#[test]
fn a_command_that_never_started_says_why_and_exits_127() {
    let (port, server) = peer(|ws| {
        let _start = next(ws);
        let why = ExecEvent::Error {
            code: "not_started".into(),
            message: "/no/such: No such file or directory".into(),
        };
        tell(ws, &why);
        close(ws);
    });
    let mut ws = connect(&api(port), &id()).unwrap();
    let inputs = Inputs::start(io::empty(), no_signals()).unwrap();
    let ended = run_session(&mut ws, start(&["/no/such"]), &inputs, &mut captured()).unwrap();
    server.join().unwrap();
    assert_eq!(super::super::exit_status(&ended), 127);
    assert!(ended.not_started.unwrap().contains("/no/such"));
}

#[test]
fn a_server_that_closes_before_the_end_is_an_error_that_says_so() {
    let (port, server) = peer(|ws| {
        let _start = next(ws);
        close(ws);
    });
    let mut ws = connect(&api(port), &id()).unwrap();
    let (stdin, _keep_open) = UnixStream::pair().unwrap();
    let inputs = Inputs::start(stdin, no_signals()).unwrap();
    let err = run_session(&mut ws, start(&["sh"]), &inputs, &mut captured()).unwrap_err();
    server.join().unwrap();
    assert!(
        format!("{err:#}").contains("before the command's end"),
        "{err:#}"
    );
}

/// A plain HTTP server that answers one request with `status` and `body`.
fn refusing(status: &str, body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let status = status.to_owned();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
            line.clear();
        }
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(answer.as_bytes()).unwrap();
        let _ = stream.read(&mut [0u8; 1]);
    });
    port
}

#[test]
fn a_refusal_before_the_upgrade_is_the_servers_message_without_the_token() {
    let port = refusing(
        "404 Not Found",
        r#"{"code":"not_found","message":"no VM vm-0123456789ab"}"#,
    );
    let err = connect(&api(port), &id()).unwrap_err();
    let debug = format!("{err:?}");
    let text = format!("{:#} {debug}", anyhow::Error::from(err));
    assert!(
        text.starts_with("no VM vm-0123456789ab (not_found)"),
        "{text}"
    );
    assert!(!text.contains(TOKEN), "{text}");
}

#[test]
fn nothing_listening_asks_whether_serve_runs() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = connect(&api(port), &id()).unwrap_err();
    assert!(
        err.to_string().contains("is `hearth serve` running"),
        "{err}"
    );
}

#[test]
fn an_https_url_is_refused_with_the_fix() {
    let args = ApiArgs {
        url: "https://hearth.example:7070".into(),
        token: Some(TOKEN.into()),
    };
    let err = connect(&args, &id()).unwrap_err().to_string();
    assert!(err.contains("ws://") && err.contains("http://"), "{err}");
}

/// A real SIGINT to this process (nextest gives each test a process of its
/// own) goes out as a `signal` frame after `start`, and the status the
/// command got from it is ours.
#[test]
fn a_sigint_we_receive_is_sent_as_a_signal_frame() {
    let (port, server) = peer(|ws| {
        let first = next(ws);
        let second = next(ws);
        tell(
            ws,
            &ExecEvent::Exit {
                exit_code: None,
                signal: Some(2),
                timed_out: false,
            },
        );
        close(ws);
        (first, second)
    });
    let mut ws = connect(&api(port), &id()).unwrap();
    let (stdin, _keep_open) = UnixStream::pair().unwrap();
    let forward = Forward {
        signals: true,
        resize_from: None,
    };
    let inputs = Inputs::start(stdin, forward).unwrap();
    // SAFETY: raise sends a signal to this process only; signal-hook
    // handles it (Inputs::start registered it).
    assert_eq!(unsafe { libc::raise(libc::SIGINT) }, 0);
    let ended = run_session(&mut ws, start(&["sleep", "60"]), &inputs, &mut captured()).unwrap();
    let (first, second) = server.join().unwrap();
    assert!(
        matches!(first, ExecClientMessage::Start { .. }),
        "{first:?}"
    );
    let int = ExecClientMessage::Signal {
        signal: ExecSignal::Int,
    };
    assert_eq!(second, int);
    assert_eq!(super::super::exit_status(&ended), 130);
}

/// 8 MB of stdin to a peer that takes it slower than we read it: the
/// queue and the socket hold us back, nothing is dropped or reordered.
#[test]
fn a_large_stdin_to_a_slow_reader_arrives_whole() {
    let (port, server) = peer(|ws| {
        let _start = next(ws);
        let mut got = Vec::new();
        loop {
            match next(ws) {
                ExecClientMessage::Stdin { data } => {
                    got.extend(STANDARD.decode(data).unwrap());
                    // Pacing, not synchronisation: a reader slower than us.
                    std::thread::sleep(Duration::from_millis(1));
                }
                ExecClientMessage::StdinEnd => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        tell(ws, &exit(0));
        close(ws);
        got
    });
    let mut ws = connect(&api(port), &id()).unwrap();
    let data: Vec<u8> = (0..8_000_000u32).map(|i| (i % 253) as u8).collect();
    let (mut writer, stdin) = UnixStream::pair().unwrap();
    let inputs = Inputs::start(stdin, no_signals()).unwrap();
    let feed = {
        let data = data.clone();
        std::thread::spawn(move || writer.write_all(&data).unwrap())
    };
    let ended = run_session(&mut ws, start(&["wc", "-c"]), &inputs, &mut captured()).unwrap();
    feed.join().unwrap();
    let got = server.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "reordered");
    assert_eq!(ended.exit_code, Some(0));
}

/// Caps a socket's kernel buffers (64 KiB; Linux doubles it) so a few MB
/// fill them: the backpressure below is certain, not a matter of how far
/// loopback's autotuning happens to grow them.
fn small_buffers(fd: BorrowedFd<'_>) {
    let size: libc::c_int = 64 * 1024;
    for option in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: `fd` is an open socket for the borrow; the option value
        // is a c_int of the size given.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
    }
}

/// Frames the echoing peer reads before it answers them all: it stops
/// reading while it writes, as the server does under input flow control.
const BURST: usize = 16;

/// `cat` with several MB of stdin against a peer that echoes every stdin
/// frame as output but reads in bursts and stops reading while its output
/// waits: with a send that blocks while nothing reads, both sides' buffers
/// fill and the session never ends. Output must keep being read while
/// input waits for room.
#[test]
fn a_large_stdin_echoed_by_a_peer_that_reads_in_bursts_never_deadlocks() {
    let (port, server) = peer(|ws| {
        small_buffers(ws.get_ref().as_fd());
        let _start = next(ws);
        let mut ended = false;
        while !ended {
            let mut burst = Vec::new();
            while burst.len() < BURST {
                match next(ws) {
                    ExecClientMessage::Stdin { data } => burst.push(data),
                    ExecClientMessage::StdinEnd => {
                        ended = true;
                        break;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            for data in burst {
                let event = ExecEvent::Output {
                    stream: Stream::Stdout,
                    data,
                };
                tell(ws, &event);
            }
        }
        tell(ws, &exit(0));
        close(ws);
    });
    let mut ws = connect(&api(port), &id()).unwrap();
    small_buffers(ws.get_ref().as_fd());
    let data: Vec<u8> = (0..6_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (mut writer, stdin) = UnixStream::pair().unwrap();
    let inputs = Inputs::start(stdin, no_signals()).unwrap();
    let feed = {
        let data = data.clone();
        std::thread::spawn(move || writer.write_all(&data).unwrap())
    };
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut printer = captured();
        let ended = run_session(&mut ws, start(&["cat"]), &inputs, &mut printer);
        let _ = done.send((ended.map_err(|e| format!("{e:#}")), printer.out));
    });
    let (ended, out) = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the session deadlocked: no end within 60 s");
    feed.join().unwrap();
    server.join().unwrap();
    assert_eq!(ended.unwrap().exit_code, Some(0));
    assert_eq!(out.len(), data.len());
    assert!(out == data, "the echo differs from the input");
}

/// A session against a server that takes no input at all (its command
/// never reads) while stdin never ends: our sends wait and stdin is held
/// back. `signal` is raised (a real one, to this process) each 100 ms
/// until the session ends, within a deadline: how it ended.
fn held_back_session_signalled(signal: libc::c_int) -> Result<Ended, String> {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (port, server) = peer(move |ws| {
        small_buffers(ws.get_ref().as_fd());
        let _start = next(ws);
        // Reads nothing more until the client is done.
        let _ = released.recv();
    });
    let mut ws = connect(&api(port), &id()).unwrap();
    small_buffers(ws.get_ref().as_fd());
    let (mut writer, stdin) = UnixStream::pair().unwrap();
    std::thread::spawn(move || while writer.write_all(&[b'y'; 65536]).is_ok() {});
    let forward = Forward {
        signals: true,
        resize_from: None,
    };
    let inputs = Inputs::start(stdin, forward).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ended = run_session(&mut ws, start(&["sleep", "60"]), &inputs, &mut captured());
        let _ = done.send(ended.map_err(|e| format!("{e:#}")));
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let ended = loop {
        assert!(Instant::now() < deadline, "the session did not end");
        // SAFETY: raise sends a signal to this process only; signal-hook
        // handles it (Inputs::start registered it). Signals not handled
        // yet merge, so one each time the session has not ended.
        assert_eq!(unsafe { libc::raise(signal) }, 0);
        match finished.recv_timeout(Duration::from_millis(100)) {
            Ok(ended) => break ended,
            Err(_) => continue,
        }
    };
    release.send(()).unwrap();
    server.join().unwrap();
    ended
}

/// SIGINT three times still leaves a session whose input waits, naming
/// why. A blocking send never got to count.
#[test]
fn three_sigints_leave_a_session_whose_input_waits() {
    let err = held_back_session_signalled(libc::SIGINT).unwrap_err();
    assert!(err.starts_with("got SIGINT 3 times"), "{err}");
}

/// One SIGTERM (what `timeout` sends) cannot be forwarded behind input
/// the server does not take: the session ends at once, saying so.
#[test]
fn one_sigterm_leaves_a_session_whose_input_waits() {
    let err = held_back_session_signalled(libc::SIGTERM).unwrap_err();
    assert!(
        err.starts_with("got SIGTERM while the server took no more input"),
        "{err}"
    );
}
