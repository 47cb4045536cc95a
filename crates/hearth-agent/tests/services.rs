//! Services supervised by the real agent binary, configured by a test-side
//! host over `--connect unix:...`: their output line by line, exits,
//! restarts and crash loops, readiness, and records that survive the host
//! hanging up.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{config, log_lines, Agent};
use hearth_agent_proto::{HostMessage, Record, Stream};
use serde_json::json;

#[test]
fn a_service_output_is_recorded_line_by_line_with_its_exit() {
    let agent = Agent::start(&["--wait-config"]);
    let mut host = agent.connect(0);
    host.send(&HostMessage::Config {
        config: config(json!({
            "env": [{"name": "WHO", "value": "world"}],
            "services": [{
                "name": "greeter",
                "argv": ["sh", "-c", "echo hello $WHO; echo oops >&2; printf 'no newline'; exit 3"],
                "restart": "never"
            }]
        })),
    });
    let records = host.records_until(|r| matches!(r, Record::ServiceExited { .. }));
    let seqs: Vec<u64> = records.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "seqs from 1, in order"
    );
    assert!(matches!(&records[0].1, Record::ConfigApplied { services, .. } if services.len() == 1));
    assert!(records
        .iter()
        .any(|(_, r)| matches!(r, Record::ServiceStarted { service, attempt: 1, .. } if service == "greeter")));
    assert_eq!(
        log_lines(&records, "greeter", Stream::Stdout),
        ["hello world", "no newline"]
    );
    assert_eq!(log_lines(&records, "greeter", Stream::Stderr), ["oops"]);
    let Some((
        _,
        Record::ServiceExited {
            status,
            restart_in_ms,
            restarts,
            ..
        },
    )) = records.last()
    else {
        unreachable!()
    };
    assert_eq!((status.code, status.signal), (Some(3), None));
    assert_eq!((*restart_in_ms, *restarts), (None, 0));
}

#[test]
fn a_crashing_service_backs_off_and_is_reported_as_a_crash_loop() {
    let agent = Agent::start(&["--wait-config"]);
    let mut host = agent.connect(0);
    host.send(&HostMessage::Config {
        config: config(json!({
            "services": [{
                "name": "crasher",
                "argv": ["sh", "-c", "echo boom >&2; exit 1"],
                "crash_loop": {"restarts": 3, "window_secs": 30}
            }]
        })),
    });
    let start = Instant::now();
    let records = host.records_until(|r| matches!(r, Record::CrashLoop { .. }));
    let delays: Vec<Option<u64>> = records
        .iter()
        .filter_map(|(_, r)| match r {
            Record::ServiceExited { restart_in_ms, .. } => Some(*restart_in_ms),
            _ => None,
        })
        .collect();
    assert_eq!(delays, [Some(200), Some(400), Some(10_000)]);
    assert!(
        start.elapsed() >= Duration::from_millis(600),
        "the backoff was waited out"
    );
    assert_eq!(log_lines(&records, "crasher", Stream::Stderr), ["boom"; 3]);
    let Some((
        _,
        Record::CrashLoop {
            service,
            restarts,
            window_secs,
            ..
        },
    )) = records.last()
    else {
        unreachable!()
    };
    assert_eq!(
        (service.as_str(), *restarts, *window_secs),
        ("crasher", 3, 30)
    );
}

#[test]
fn the_guest_is_ready_only_once_a_late_port_opens() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let agent = Agent::start(&["--wait-config"]);
    let mut host = agent.connect(0);
    host.send(&HostMessage::Config {
        config: config(json!({
            "services": [
                {"name": "web", "argv": ["sleep", "1000"], "readiness": {"kind": "tcp", "port": port}},
                {"name": "plain", "argv": ["sleep", "1000"]}
            ]
        })),
    });
    let early = host
        .records_until(|r| matches!(r, Record::ServiceReady { service, .. } if service == "plain"));
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !agent.path("run/ready").exists(),
        "not ready before the port opens"
    );
    assert!(!early.iter().any(|(_, r)| matches!(r, Record::Ready { .. })));
    let opened = Instant::now();
    let _listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let late = host.records_until(|r| matches!(r, Record::Ready { .. }));
    println!("ready {:?} after the port opened", opened.elapsed());
    assert!(late
        .iter()
        .any(|(_, r)| matches!(r, Record::ServiceReady { service, .. } if service == "web")));
    common::wait_for_file(&agent.path("run/ready"));
    let console = std::fs::read_to_string(agent.path("console")).unwrap();
    assert_eq!(console, "hearth: ready\n");
}

#[test]
fn records_made_while_the_host_is_away_arrive_once_after_it_returns() {
    let agent = Agent::start(&[]);
    let mut first = agent.connect(0);
    first.send(&HostMessage::Config {
        config: config(json!({
            "services": [{
                "name": "ticker",
                "argv": ["sh", "-c", "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done"]
            }]
        })),
    });
    let before =
        first.records_until(|r| matches!(r, Record::ServiceLog { line, .. } if line == "tick 5"));
    // The host stored everything up to tick 3 and says so; then it hangs up.
    let acked = before
        .iter()
        .find(|(_, r)| matches!(r, Record::ServiceLog { line, .. } if line == "tick 3"))
        .map(|(s, _)| *s)
        .unwrap();
    first.send(&HostMessage::Ack { seq: acked });
    drop(first);
    std::thread::sleep(Duration::from_millis(800));

    let mut second = agent.connect(acked);
    // A second config is ignored: the same boot keeps its configuration.
    second.send(&HostMessage::Config {
        config: config(json!({"services": []})),
    });
    let after =
        second.records_until(|r| matches!(r, Record::ServiceLog { line, .. } if line == "tick 30"));
    let seqs: Vec<u64> = after.iter().map(|(s, _)| *s).collect();
    let want: Vec<u64> = (acked + 1..acked + 1 + seqs.len() as u64).collect();
    assert_eq!(seqs, want, "everything after the ack, in order, once");
    let ticks = log_lines(&after, "ticker", Stream::Stdout);
    let want: Vec<String> = (4..=30).map(|i| format!("tick {i}")).collect();
    assert_eq!(ticks, want, "no tick lost, none twice");
    assert!(!after
        .iter()
        .any(|(_, r)| matches!(r, Record::ConfigApplied { .. })));
}

#[test]
fn the_image_config_alone_starts_services_and_makes_the_guest_ready() {
    let image = r#"{"env": [{"name": "FROM", "value": "image"}],
        "services": [{"name": "img", "argv": ["sh", "-c", "echo from $FROM; exec sleep 1000"]}]}"#;
    let agent = Agent::start_with_image_config(Some(image), &[]);
    // Nobody has connected yet: the guest gets ready on its own.
    common::wait_for_file(&agent.path("run/ready"));
    let mut host = agent.connect(0);
    let records = host.records_until(|r| matches!(r, Record::Ready { .. }));
    assert!(
        matches!(&records[0].1, Record::ConfigApplied { services, .. } if services[0].name == "img")
    );
    // The line may come before or after `ready`.
    let more = if log_lines(&records, "img", Stream::Stdout).is_empty() {
        host.records_until(|r| matches!(r, Record::ServiceLog { .. }))
    } else {
        records
    };
    assert_eq!(log_lines(&more, "img", Stream::Stdout), ["from image"]);
}

#[test]
fn a_bad_image_config_or_file_is_a_config_failed_record_naming_it() {
    let agent = Agent::start_with_image_config(Some(r#"{"servces": []}"#), &["--wait-config"]);
    let mut host = agent.connect(0);
    let blocker = agent.path("blocker");
    std::fs::write(&blocker, "").unwrap();
    host.send(&HostMessage::Config {
        config: config(json!({
            "files": [{"path": blocker.join("x").display().to_string(), "content": "secret"}],
            "services": []
        })),
    });
    let records = host.records_until(|r| matches!(r, Record::Ready { .. }));
    let failures: Vec<&String> = records
        .iter()
        .filter_map(|(_, r)| match r {
            Record::ConfigFailed { message, .. } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 2, "{records:#?}");
    assert!(
        failures[0].contains("agent.json") && failures[0].contains("servces"),
        "{}",
        failures[0]
    );
    assert!(failures[1].contains("blocker/x"), "{}", failures[1]);
    assert!(
        !failures[1].contains("secret"),
        "file contents stay out of errors"
    );
}

#[test]
fn a_service_runs_as_its_user_and_a_missing_program_is_a_spawn_failure() {
    let agent = Agent::start(&["--wait-config"]);
    let mut host = agent.connect(0);
    host.send(&HostMessage::Config {
        config: config(json!({
            "services": [
                {"name": "who", "argv": ["id", "-u"], "user": "65534", "restart": "never"},
                {"name": "ghost", "argv": ["/no/such/program"]}
            ]
        })),
    });
    let mut seen_exit = false;
    let mut seen_failure = false;
    let records = host.records_until(|r| {
        seen_exit |= matches!(r, Record::ServiceExited { service, .. } if service == "who");
        seen_failure |= matches!(r, Record::ServiceSpawnFailed { service, message, .. }
            if service == "ghost" && message.contains("/no/such/program"));
        seen_exit && seen_failure
    });
    assert_eq!(log_lines(&records, "who", Stream::Stdout), ["65534"]);
    assert!(
        !records
            .iter()
            .any(|(_, r)| matches!(r, Record::Ready { .. })),
        "ghost never gets ready"
    );
}

#[test]
fn a_service_starts_only_after_the_services_it_waits_for_are_ready() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let agent = Agent::start(&["--wait-config"]);
    let mut host = agent.connect(0);
    // `display` opens its port late; `vnc` waits for it, `browser` for both.
    let opener = format!("sleep 1; while true; do busybox nc -l -p {port} </dev/null; done");
    host.send(&HostMessage::Config {
        config: config(json!({
            "services": [
                {"name": "browser", "argv": ["sleep", "1000"], "after": ["display", "vnc"]},
                {"name": "vnc", "argv": ["sleep", "1000"], "after": ["display"]},
                {"name": "display", "argv": ["sh", "-c", opener],
                 "readiness": {"kind": "tcp", "port": port}}
            ]
        })),
    });
    let records = host.records_until(|r| matches!(r, Record::Ready { .. }));
    let at = |what: &str, service: &str| {
        records
            .iter()
            .position(|(_, r)| match r {
                Record::ServiceStarted { service: s, .. } => what == "started" && s == service,
                Record::ServiceReady { service: s, .. } => what == "ready" && s == service,
                _ => false,
            })
            .unwrap_or_else(|| panic!("no {what} record of {service}: {records:?}"))
    };
    assert!(at("ready", "display") < at("started", "vnc"), "{records:?}");
    assert!(at("ready", "vnc") < at("started", "browser"), "{records:?}");
}
