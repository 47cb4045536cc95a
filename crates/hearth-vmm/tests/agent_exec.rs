//! The guest agent for real: the minimal image, built with the static
//! `hearth-agent`, boots under QEMU with the agent as its init (PID 1),
//! which connects over the virtio-serial channel, shakes hands (protocol
//! 3), applies the host's configuration (hostname, environment, a file, a
//! service with a readiness check), and runs commands for the host; output,
//! exit codes and start failures come back, input reaches a command's
//! stdin, a terminal has the size asked for, and records (the service's
//! output, readiness) arrive in order. The host hangs up and connects again,
//! twice; the last connection asks PID 1 to power off with SIGTERM.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_agent_proto::{
    decode_data, encode_data, read_frame, write_frame, GuestMessage, HostMessage, Record, Stream,
    PROTOCOL,
};
use hearth_control::prepare::{self, VmFiles};
use hearth_guestkit::datadir::DataDir;
use hearth_guestkit::image::{ensure_image, AgentChoice, ImageName};
use hearth_types::guest::{GuestConfig, TermSize};
use hearth_types::{VmDescription, VmId};
use hearth_vmm::qemu::Qemu;
use hearth_vmm::{Hypervisor, RunningVm};

const PORT: &str = "hearth.agent";

/// The shared minimal image, built with the static agent in it (the test
/// process names the agent in `HEARTH_AGENT`, as `scripts/test` does).
fn minimal_image_with_agent(data: &DataDir, agent: &Path) -> PathBuf {
    // The only test in this binary: nothing else reads the environment yet.
    std::env::set_var("HEARTH_AGENT", agent);
    let info = ensure_image(
        data,
        ImageName::Minimal,
        false,
        AgentChoice::Find,
        &mut |l| eprintln!("{l}"),
    )
    .expect("the minimal image builds");
    info.rootfs
}

/// A VM description booting `image` with the agent channel in its run dir.
fn describe(data: &DataDir, image: &Path) -> (VmDescription, VmFiles) {
    hearth_guestkit::kernel::fetch_debian_cloud_kernel(data, &mut |_| {})
        .expect("the kernel is fetched");
    let image = image.to_str().expect("a UTF-8 path");
    let assets = prepare::resolve_assets(data, None, image).expect("boot assets");
    let id = VmId::generate();
    let files = VmFiles::for_run(data, &id);
    files.create(data).expect("the run dir and layer are made");
    let cmdline = prepare::cmdline(&[]).expect("a command line");
    // Every described VM has the agent channel already.
    let vm = files.describe(&id, &assets, 1, 256, cmdline);
    assert_eq!(vm.channels.len(), 1);
    assert_eq!(vm.channels[0].name, PORT);
    (vm, files)
}

/// Connects to QEMU's end of the channel, retrying until it listens.
fn connect(socket: &Path) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match UnixStream::connect(socket) {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("{}: {e}", socket.display()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn recv_any(s: &mut UnixStream) -> GuestMessage {
    read_frame(s)
        .expect("a frame from the agent")
        .expect("the agent hung up")
}

/// The next message that is not a record or a heartbeat.
fn recv(s: &mut UnixStream) -> GuestMessage {
    loop {
        match recv_any(s) {
            GuestMessage::Record { .. }
            | GuestMessage::Heartbeat { .. }
            | GuestMessage::ExecInputWritten { .. } => {}
            other => return other,
        }
    }
}

/// Records (acking each) until one matches `stop`.
fn records_until(s: &mut UnixStream, stop: impl Fn(&Record) -> bool) -> Vec<(u64, Record)> {
    let mut got = Vec::new();
    loop {
        if let GuestMessage::Record { seq, record } = recv_any(s) {
            write_frame(s, &HostMessage::Ack { seq }).unwrap();
            let done = stop(&record);
            got.push((seq, record));
            if done {
                return got;
            }
        }
    }
}

/// The host's configuration for the guest.
fn config() -> GuestConfig {
    serde_json::from_value(serde_json::json!({
        "hostname": "agent-test",
        "env": [{"name": "GREETING", "value": "hi"}],
        "files": [
            {"path": "/etc/hearth-test/greeting", "content": "hello file\n", "mode": 384},
            {"path": "/etc/hearth-test/empty", "content": ""}
        ],
        "services": [{
            "name": "pinger",
            "argv": ["sh", "-c", "echo ping $GREETING; exec sleep 1000"],
            "readiness": {"kind": "command", "argv": ["test", "-f", "/etc/hearth-test/greeting"]}
        }]
    }))
    .expect("a valid configuration")
}

/// Sends the configuration and checks what it did: records in order from
/// seq 1, the service's output, readiness; then the hostname, environment
/// and file through execs.
fn configure(s: &mut UnixStream) {
    let sent = Instant::now();
    write_frame(s, &HostMessage::Config { config: config() }).unwrap();
    let records = records_until(s, |r| matches!(r, Record::ServiceLog { .. }));
    println!("config to the service's first line: {:?}", sent.elapsed());
    let seqs: Vec<u64> = records.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "{records:?}"
    );
    assert!(
        records.iter().any(
            |(_, r)| matches!(r, Record::ConfigApplied { services, .. } if services.len() == 1)
        ),
        "{records:?}"
    );
    assert!(
        matches!(&records.last().unwrap().1, Record::ServiceLog { line, .. } if line == "ping hi"),
        "{records:?}"
    );
    exec(s, 10, &["sh", "-c", "hostname; echo $GREETING; cat /etc/hearth-test/greeting; test -e /run/hearth/ready && echo ready; readlink /proc/1/exe"]);
    let (out, err, end) = outcome(s);
    assert_eq!(
        out, "agent-test\nhi\nhello file\nready\n/bin/hearth-agent\n",
        "the agent is PID 1; {err}"
    );
    assert!(
        matches!(end, GuestMessage::ExecExit { code: Some(0), .. }),
        "{end:?}"
    );
}

fn exec(s: &mut UnixStream, id: u64, argv: &[&str]) {
    let argv = argv.iter().map(|a| a.to_string()).collect();
    let msg = HostMessage::Exec {
        id,
        argv,
        env: Vec::new(),
        timeout_ms: Some(10_000),
        tty: false,
        stdin: false,
        size: None,
    };
    write_frame(s, &msg).expect("the request is sent");
}

/// Stdout, stderr and the final message of one exec.
fn outcome(s: &mut UnixStream) -> (String, String, GuestMessage) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        match recv(s) {
            GuestMessage::ExecOutput { stream, data, .. } => {
                let buf = if stream == Stream::Stdout {
                    &mut out
                } else {
                    &mut err
                };
                buf.extend(decode_data(&data).expect("base64 output"));
            }
            end => {
                let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
                return (text(out), text(err), end);
            }
        }
    }
}

/// Connects and shakes hands.
fn session(socket: &Path) -> UnixStream {
    let mut s = connect(socket);
    s.set_read_timeout(Some(Duration::from_secs(45))).unwrap();
    let hello = recv(&mut s);
    assert!(
        matches!(&hello, GuestMessage::Hello { protocol, boot_id, .. } if *protocol == PROTOCOL && !boot_id.is_empty()),
        "{hello:?}"
    );
    if let GuestMessage::Hello { uptime_ms, .. } = &hello {
        println!("kernel start to the agent's hello: {uptime_ms} ms");
    }
    write_frame(
        &mut s,
        &HostMessage::Welcome {
            protocol: PROTOCOL,
            acked: 0,
        },
    )
    .unwrap();
    s
}

/// Connect, three execs, hang up; then the same again on a new connection
/// (the agent reopened its port); then a third asks the guest to power off.
/// Blocking, so run off the runtime.
fn converse(socket: &Path) {
    for round in 1..=2 {
        let started = Instant::now();
        let mut s = session(socket);
        println!(
            "connection {round}: handshake after {:?}",
            started.elapsed()
        );
        if round == 1 {
            configure(&mut s);
            interactive_execs(&mut s);
        } else {
            orphans_are_reaped(&mut s);
            exec_against_a_bare_round_trip(&mut s);
        }
        three_execs(&mut s);
        // Hang up and connect again at once.
    }
    let mut s = session(socket);
    // PID 1 (the agent) stops its services and powers off on SIGTERM.
    exec(&mut s, 9, &["kill", "-TERM", "1"]);
}

/// Protocol 3 on the real guest: input sent to `cat` comes back and its
/// end ends it; SIGINT ends `sleep`; 1 MiB of input arrives whole; a
/// command on a terminal sees the size the host asked for, and a terminal
/// type.
fn interactive_execs(s: &mut UnixStream) {
    let sent = Instant::now();
    write_frame(s, &interactive(30, &["cat"], None)).unwrap();
    let input = HostMessage::ExecInput {
        id: 30,
        data: encode_data(b"typed over virtio\n"),
    };
    write_frame(s, &input).unwrap();
    write_frame(s, &HostMessage::ExecInputEnd { id: 30 }).unwrap();
    let (out, err, end) = outcome(s);
    println!("stdin round trip (cat): {:?}", sent.elapsed());
    assert_eq!(out, "typed over virtio\n", "{err}");
    assert!(
        matches!(
            end,
            GuestMessage::ExecExit {
                id: 30,
                code: Some(0),
                ..
            }
        ),
        "{end:?}"
    );

    // Ctrl-C: SIGINT reaches the command (the agent as init blocks it in
    // itself; its children must not inherit that).
    write_frame(s, &interactive(33, &["sleep", "100"], None)).unwrap();
    write_frame(s, &HostMessage::ExecSignal { id: 33, signal: 2 }).unwrap();
    let (_, _, end) = outcome(s);
    assert!(
        matches!(
            end,
            GuestMessage::ExecExit {
                id: 33,
                signal: Some(2),
                ..
            }
        ),
        "{end:?}"
    );

    // 1 MiB of input, counted by the guest.
    let sent = Instant::now();
    write_frame(s, &interactive(32, &["wc", "-c"], None)).unwrap();
    let chunk = encode_data(&[b'x'; 64 * 1024]);
    for _ in 0..16 {
        let input = HostMessage::ExecInput {
            id: 32,
            data: chunk.clone(),
        };
        write_frame(s, &input).unwrap();
    }
    write_frame(s, &HostMessage::ExecInputEnd { id: 32 }).unwrap();
    let (out, _, _) = outcome(s);
    assert_eq!(out.trim(), "1048576");
    println!("1 MiB of input to wc -c: {:?}", sent.elapsed());

    let size = TermSize {
        rows: 33,
        cols: 101,
    };
    let msg = interactive(31, &["sh", "-c", "stty size; echo $TERM"], Some(size));
    write_frame(s, &msg).unwrap();
    write_frame(s, &HostMessage::ExecInputEnd { id: 31 }).unwrap();
    let (out, _, end) = outcome(s);
    assert_eq!(out, "33 101\r\nxterm\r\n");
    assert!(
        matches!(
            end,
            GuestMessage::ExecExit {
                id: 31,
                code: Some(0),
                ..
            }
        ),
        "{end:?}"
    );
}

/// An exec the host sends input to, on a terminal of `size` when given.
fn interactive(id: u64, argv: &[&str], size: Option<TermSize>) -> HostMessage {
    HostMessage::Exec {
        id,
        argv: argv.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
        timeout_ms: Some(10_000),
        tty: size.is_some(),
        stdin: true,
        size,
    }
}

/// A process whose parent left is reparented to PID 1, the agent, whose
/// reaper must collect it: no zombie is left.
fn orphans_are_reaped(s: &mut UnixStream) {
    exec(s, 20, &["sh", "-c", "(sleep 0.2 &); exit 0"]);
    outcome(s);
    std::thread::sleep(Duration::from_millis(1500));
    let count = "cat /proc/[0-9]*/status 2>/dev/null | grep -c '^State:.*Z'";
    exec(s, 21, &["sh", "-c", count]);
    let (out, _, _) = outcome(s);
    assert_eq!(out.trim(), "0", "zombies left");
}

/// The median round trip of `exec true` against the barest request the
/// protocol has (`file_read` of an empty file: no process, one answer),
/// over the same channel.
fn exec_against_a_bare_round_trip(s: &mut UnixStream) {
    const N: usize = 15;
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let bare: Vec<Duration> = (0..N as u64)
        .map(|i| {
            let sent = Instant::now();
            let read = HostMessage::FileRead {
                id: 100 + i,
                path: "/etc/hearth-test/empty".into(),
                max_bytes: 0,
            };
            write_frame(s, &read).unwrap();
            let answer = recv(s);
            assert!(
                matches!(answer, GuestMessage::FileDone { size: 0, .. }),
                "{answer:?}"
            );
            sent.elapsed()
        })
        .collect();
    let execs: Vec<Duration> = (0..N as u64)
        .map(|i| {
            let sent = Instant::now();
            exec(s, 200 + i, &["true"]);
            outcome(s);
            sent.elapsed()
        })
        .collect();
    let (bare, execs) = (median(bare), median(execs));
    let ratio = execs.as_secs_f64() / bare.as_secs_f64();
    println!("median round trip: exec true {execs:?}, bare {bare:?}, ratio {ratio:.2}");
}

fn three_execs(s: &mut UnixStream) {
    let sent = Instant::now();
    exec(s, 1, &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    let (out, err, end) = outcome(s);
    println!("exec round trip (sh -c): {:?}", sent.elapsed());
    assert_eq!((out.trim_end(), err.trim_end()), ("out", "err"));
    let exit = GuestMessage::ExecExit {
        id: 1,
        code: Some(3),
        signal: None,
        timed_out: false,
    };
    assert_eq!(end, exit);

    let sent = Instant::now();
    exec(s, 2, &["true"]);
    let (_, _, end) = outcome(s);
    println!("exec round trip (true): {:?}", sent.elapsed());
    assert!(
        matches!(
            end,
            GuestMessage::ExecExit {
                id: 2,
                code: Some(0),
                ..
            }
        ),
        "{end:?}"
    );

    exec(s, 3, &["/no/such/program"]);
    let (_, _, end) = outcome(s);
    assert!(
        matches!(&end, GuestMessage::ExecError { id: 3, message } if message.contains("/no/such/program")),
        "{end:?}"
    );
}

fn console(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    text
}

/// Waits for the guest to power off as asked; kills it if not.
async fn finish(vm: &mut RunningVm) -> bool {
    match tokio::time::timeout(Duration::from_secs(15), vm.wait()).await {
        Ok(_) => true,
        Err(_) => {
            vm.kill().await;
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_commands_for_the_host_over_virtio_serial() {
    let Some(agent) = hearth_testkit::static_agent() else {
        return;
    };
    let data = DataDir::new(hearth_testkit::test_data_dir());
    let image = minimal_image_with_agent(&data, &agent);
    let (vm, files) = describe(&data, &image);
    let socket = vm.channels[0].socket.clone();

    let booted = Instant::now();
    // The process is reported the moment it is spawned (so `hearth serve`
    // can record it before QEMU is set up), and it is the one that runs.
    let (spawned_tx, spawned_rx) = std::sync::mpsc::channel();
    let on_spawn = Box::new(move |p| spawned_tx.send(p).expect("once"));
    let mut running = Qemu::for_host(None)
        .start_reporting(&vm, on_spawn)
        .await
        .expect("QEMU starts");
    assert_eq!(spawned_rx.try_recv(), Ok(running.process()));
    let talk = tokio::task::spawn_blocking(move || converse(&socket));
    let talked = tokio::time::timeout(Duration::from_secs(60), talk).await;
    println!("boot to last answer: {:?}", booted.elapsed());
    let powered_off = finish(&mut running).await;
    let log = console(&vm.console_log);
    files.remove_all();

    match talked {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => panic!("{panic}\nconsole:\n{log}"),
        Err(_) => panic!("no answer from the agent within 60 s\nconsole:\n{log}"),
    }
    assert_eq!(log.matches("hearth-agent: connected").count(), 3, "{log}");
    assert!(log.contains("hearth: ready"), "{log}");
    assert!(log.contains("hearth: power off"), "{log}");
    assert!(powered_off, "the guest did not power off when asked\n{log}");
}
