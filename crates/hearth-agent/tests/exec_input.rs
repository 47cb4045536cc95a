//! Interactive execs on the real agent binary (protocol 3): input to a
//! pipe or a terminal, its end, the terminal's size and resizes, signals,
//! the hang-up of interactive execs when their host leaves, input nobody
//! reads, and no descriptor or thread left behind.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Agent, PATIENCE};
use hearth_agent_proto::{GuestMessage, HostMessage};
use hearth_types::guest::TermSize;

fn exit(id: u64, code: Option<i32>, signal: Option<i32>) -> GuestMessage {
    GuestMessage::ExecExit {
        id,
        code,
        signal,
        timed_out: false,
    }
}

#[test]
fn cat_echoes_its_input_and_exits_after_the_end() {
    let agent = Agent::start(&[]);
    let mut host = agent.connect(0);
    host.interactive(1, &["cat"], None);
    host.input(1, b"hello ");
    host.input(1, b"world\n");
    host.input_end(1);
    // Input after the end, or for an exec that does not exist, is ignored.
    host.input(1, b"late\n");
    host.input(99, b"nobody\n");
    let (out, err, end) = host.outcome(1);
    assert_eq!((out.as_str(), err.as_str()), ("hello world\n", ""));
    assert_eq!(end, exit(1, Some(0), None));
}

#[test]
fn a_terminal_has_the_requested_size_and_follows_resizes() {
    let agent = Agent::start(&[]);
    let mut host = agent.connect(0);
    host.exec(1, &["sh", "-c", "stty size; echo $TERM"], true);
    let (out, _, end) = host.outcome(1);
    assert_eq!(out, "24 80\r\nxterm\r\n", "the default size and TERM");
    assert_eq!(end, exit(1, Some(0), None));

    let script = "trap 'stty size; exit 0' WINCH; echo ready; while :; do sleep 0.05; done";
    host.interactive(2, &["sh", "-c", script], Some((33, 101)));
    host.output_until(2, "ready");
    host.send(&HostMessage::ExecResize {
        id: 2,
        size: TermSize {
            rows: 50,
            cols: 132,
        },
    });
    let (out, _, end) = host.outcome(2);
    assert_eq!(out.trim(), "50 132");
    assert_eq!(end, exit(2, Some(0), None));

    host.interactive(3, &["stty", "size"], Some((33, 101)));
    assert_eq!(host.outcome(3).0, "33 101\r\n");

    // The command has its terminal as stdio, and no master side.
    host.exec(4, &["sh", "-c", "ls -l /proc/$$/fd/ | grep -c ptmx"], true);
    assert_eq!(host.outcome(4).0, "0\r\n");
}

#[test]
fn the_end_of_input_on_a_terminal_ends_cat() {
    let agent = Agent::start(&[]);
    let mut host = agent.connect(0);
    host.interactive(1, &["cat"], Some((24, 80)));
    host.input(1, b"typed\n");
    host.input_end(1);
    let (out, _, end) = host.outcome(1);
    // The terminal echoes the line, then cat prints it.
    assert_eq!(out, "typed\r\ntyped\r\n");
    assert_eq!(end, exit(1, Some(0), None));

    // A partial line is handed over first, then the end.
    host.interactive(2, &["cat"], Some((24, 80)));
    host.input(2, b"partial");
    host.input_end(2);
    let (out, _, end) = host.outcome(2);
    assert_eq!(out, "partialpartial");
    assert_eq!(end, exit(2, Some(0), None));
}

#[test]
fn a_signal_reaches_the_commands_process_group() {
    let agent = Agent::start(&[]);
    let mut host = agent.connect(0);
    // Sent at once: a signal that arrives before the command runs waits
    // for it.
    host.exec(1, &["sleep", "100"], false);
    host.send(&HostMessage::ExecSignal { id: 1, signal: 2 });
    assert_eq!(host.outcome(1).2, exit(1, None, Some(2)));

    // The group: the shell's child gets it too, and the exec ends.
    host.interactive(2, &["sh", "-c", "sleep 100; echo survived"], None);
    host.send(&HostMessage::ExecSignal { id: 2, signal: 15 });
    let (out, _, end) = host.outcome(2);
    assert_eq!((out.as_str(), end), ("", exit(2, None, Some(15))));
    // Signals for an exec that ended or never was are ignored.
    host.send(&HostMessage::ExecSignal { id: 2, signal: 9 });
    host.send(&HostMessage::ExecSignal { id: 77, signal: 9 });
    host.exec(3, &["true"], false);
    assert_eq!(host.outcome(3).2, exit(3, Some(0), None));
}

/// Waits (with a deadline) until `pid` is gone, reaped by the agent.
fn wait_gone(pid: &str) {
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(start.elapsed() < PATIENCE, "{pid} still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_host_that_leaves_hangs_up_its_interactive_execs_only() {
    let agent = Agent::start(&[]);
    let mut host = agent.connect(0);
    let script = "echo pid=$$; exec sleep 100";
    let pid = |out: String| out.trim().trim_start_matches("pid=").to_string();
    // One after the other: `output_until` skips other execs' output.
    host.interactive(1, &["sh", "-c", script], None);
    let interactive = pid(host.output_until(1, "\n"));
    host.exec(2, &["sh", "-c", script], false);
    let batch = pid(host.output_until(2, "\n"));
    drop(host);

    wait_gone(&interactive);
    // The next host's exec round trip comes after the hang-up was done.
    let mut next = agent.connect(0);
    next.exec(3, &["true"], false);
    next.outcome(3);
    assert!(
        Path::new(&format!("/proc/{batch}")).exists(),
        "the non-interactive exec outlives its host"
    );
    assert!(agent.log().contains("exec 1: hung up"), "{}", agent.log());
    let batch: i32 = batch.parse().unwrap();
    // SAFETY: kill(2) of the test's own leftover sleep (not reaped: the
    // agent that would reap it is alive).
    unsafe { libc::kill(batch, libc::SIGKILL) };
}

#[test]
fn input_nobody_reads_never_blocks_the_session() {
    let agent = Agent::start(&[]);
    let mut host = agent.connect(0);
    host.interactive(1, &["sleep", "100"], None);
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..64 {
        host.input(1, &chunk);
    }
    // 4 MiB sent; the session still serves another exec.
    host.exec(2, &["echo", "second"], false);
    let (out, _, end) = host.outcome(2);
    assert_eq!((out.as_str(), end), ("second\n", exit(2, Some(0), None)));
    host.send(&HostMessage::ExecSignal { id: 1, signal: 9 });
    assert_eq!(host.outcome(1).2, exit(1, None, Some(9)));
    let dropped = agent
        .log()
        .matches("exec 1: input dropped (queue full)")
        .count();
    assert_eq!(dropped, 1, "{}", agent.log());
}

/// The agent's open descriptors and threads.
fn resources(pid: u32) -> (usize, usize) {
    let count = |dir: String| std::fs::read_dir(dir).unwrap().count();
    (
        count(format!("/proc/{pid}/fd")),
        count(format!("/proc/{pid}/task")),
    )
}

/// The agent's resources once they stay the same for 200 ms: an exec's
/// thread ends just after its exit message.
fn settled(pid: u32) -> (usize, usize) {
    let start = Instant::now();
    let mut last = resources(pid);
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_millis(200) {
        assert!(start.elapsed() < PATIENCE, "never settled: {last:?}");
        std::thread::sleep(Duration::from_millis(20));
        let now = resources(pid);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

fn open_files(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect()
}

#[test]
fn execs_leave_no_descriptors_or_threads_behind() {
    // Without this host's systemctl, no late boot report comes while it
    // counts.
    let agent = Agent::start_with_programs(&["cat", "sh", "true"]);
    let mut host = agent.connect(0);
    let round = |host: &mut common::Host, id: u64| {
        match id % 4 {
            0 => host.interactive(id, &["cat"], None),
            1 => host.interactive(id, &["cat"], Some((24, 80))),
            2 => host.exec(id, &["true"], true),
            _ => host.interactive(id, &["sh", "-c", "read x; echo $x"], None),
        }
        host.input(id, b"line\n");
        host.input_end(id);
        host.outcome(id);
    };
    // The agent's own start-up work (two boot reports, running commands)
    // is done first.
    let mut reports = 0;
    host.records_until(|r| {
        reports += matches!(r, hearth_agent_proto::Record::BootReport { .. }) as u32;
        reports == 2
    });
    round(&mut host, 1000);
    let before = settled(agent.pid());
    for id in 1..=50 {
        round(&mut host, id);
    }
    // An exec's thread ends just after its exit message: wait for the
    // counts to settle, then compare.
    let start = Instant::now();
    let mut after = resources(agent.pid());
    while after != before && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
        after = resources(agent.pid());
    }
    assert_eq!(
        after,
        before,
        "(descriptors, threads) before and after; open now: {:?}",
        open_files(agent.pid())
    );
}

/// A host that keeps to the window: never more than `INPUT_WINDOW` bytes
/// sent and not reported. Then no input is lost, however slowly the
/// command reads: 4 MiB reach a `wc -c` that first sleeps.
#[test]
fn a_host_keeping_to_the_window_loses_no_input() {
    let agent = Agent::start(&[]);
    let mut host = agent.connect(0);
    host.interactive(1, &["sh", "-c", "sleep 0.3; wc -c"], None);
    let chunk = vec![b'y'; 64 * 1024];
    let total = 64 * chunk.len() as u64;
    let (mut sent, mut reported) = (0u64, 0u64);
    while sent < total {
        if sent - reported + chunk.len() as u64 <= hearth_agent_proto::INPUT_WINDOW {
            host.input(1, &chunk);
            sent += chunk.len() as u64;
            continue;
        }
        match host.recv() {
            GuestMessage::ExecInputWritten { id: 1, bytes } => reported += bytes,
            GuestMessage::ExecExit { .. } => panic!("the command ended early"),
            _ => {}
        }
    }
    host.input_end(1);
    let (out, _, end) = host.outcome(1);
    assert_eq!(out.trim(), total.to_string());
    assert_eq!(end, exit(1, Some(0), None));
    assert!(!agent.log().contains("input dropped"), "{}", agent.log());
}
