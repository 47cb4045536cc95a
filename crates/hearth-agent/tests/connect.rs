//! The real agent binary on the host, connecting to a Unix socket as a
//! client: it retries until someone listens, and after a host hangs up it
//! connects again.

mod common;

use std::os::unix::net::UnixListener;
use std::process::Command;

use common::Agent;
use hearth_agent_proto::GuestMessage;

#[test]
fn the_agent_connects_runs_a_command_and_reconnects_after_a_hang_up() {
    let agent = Agent::start(&[]);
    for round in 1..=2 {
        let mut host = agent.connect(0);
        host.exec(
            round,
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            false,
        );
        let (out, err, end) = host.outcome(round);
        assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
        assert!(
            matches!(end, GuestMessage::ExecExit { code: Some(3), .. }),
            "{end:?}"
        );
    }
}

#[test]
fn the_agent_waits_for_a_listener_to_appear() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("late.sock");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_hearth-agent"))
        .arg("--connect")
        .arg(format!("unix:{}", socket.display()))
        .spawn()
        .unwrap();
    // Nobody listens at first.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let listener = UnixListener::bind(&socket).unwrap();
    let (mut stream, _) = listener.accept().unwrap();
    let hello: Option<GuestMessage> = hearth_agent_proto::read_frame(&mut stream).unwrap();
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(
        matches!(hello, Some(GuestMessage::Hello { .. })),
        "{hello:?}"
    );
}

#[test]
fn a_connected_agent_sends_a_heartbeat_every_two_seconds() {
    let agent = Agent::start(&[]);
    let mut host = agent.connect(0);
    let start = std::time::Instant::now();
    let mut beats = Vec::new();
    while beats.len() < 2 {
        if let GuestMessage::Heartbeat { uptime_ms } = host.recv() {
            beats.push((start.elapsed(), uptime_ms));
        }
    }
    let gap = beats[1].1 - beats[0].1;
    assert!((1500..=3000).contains(&gap), "{gap} ms between beats");
    assert!(beats[0].0 < std::time::Duration::from_secs(3), "{beats:?}");
}

#[test]
fn a_tty_exec_runs_on_a_new_pseudo_terminal() {
    let agent = Agent::start(&[]);
    let mut host = agent.connect(0);
    host.exec(7, &["sh", "-c", "tty; echo err >&2; exit 4"], true);
    let (out, err, end) = host.outcome(7);
    let mut lines = out.lines();
    let name = lines.next().unwrap_or_default().trim_end_matches('\r');
    assert!(name.starts_with("/dev/pts/"), "{out:?}");
    assert_eq!(lines.next().map(|l| l.trim_end_matches('\r')), Some("err"));
    assert_eq!(err, "", "with a tty everything is stdout");
    assert!(
        matches!(end, GuestMessage::ExecExit { code: Some(4), .. }),
        "{end:?}"
    );
    host.exec(8, &["tty"], false);
    let (out, _, _) = host.outcome(8);
    assert_eq!(out, "not a tty\n");
}

#[test]
fn a_boot_report_follows_the_start_and_again_the_ready() {
    let agent = Agent::start(&[]);
    let mut host = agent.connect(0);
    let reports = std::cell::Cell::new(0);
    let records = host.records_until(|r| {
        if matches!(r, hearth_agent_proto::Record::BootReport { .. }) {
            reports.set(reports.get() + 1);
        }
        reports.get() == 2
    });
    let report = records
        .iter()
        .find_map(|(_, r)| match r {
            hearth_agent_proto::Record::BootReport { report, .. } => Some(report),
            _ => None,
        })
        .unwrap();
    assert!(!report.kernel.is_empty());
    assert!(report.memory_total_kib > 0);
    assert!(report.agent_started_ms > 0);
}

#[test]
fn every_hello_of_one_agent_names_the_same_instance() {
    let agent = Agent::start(&[]);
    let instance = |agent: &Agent| {
        let (mut stream, _) = agent.listener.accept().unwrap();
        let hello: Option<GuestMessage> = hearth_agent_proto::read_frame(&mut stream).unwrap();
        match hello {
            Some(GuestMessage::Hello { instance, .. }) => instance,
            other => panic!("{other:?}"),
        }
    };
    let first = instance(&agent);
    // The first host hung up before welcoming; the agent says hello again.
    let second = instance(&agent);
    assert_eq!(first, second, "acks are kept per instance");
}
