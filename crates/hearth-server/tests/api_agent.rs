//! The agent's routes over a real store, without booting a VM: records
//! are stored the way a link stores them, then read through the API (also
//! once the VM is destroyed); another tenant gets 404; bad input gets 400.

mod common;

use hearth_server::ServerConfig;
use hearth_store::{AgentEntry, AgentHello, NewAgentRecord, StateChange};
use hearth_types::api::{ServiceLogs, VmBootReport, VmHealth};
use hearth_types::guest::{BootReport, ExitStatus, ServiceState, Stream};
use hearth_types::{Timestamp, VmId, VmState};

fn record(seq: u64, kind: &str, body: serde_json::Value) -> NewAgentRecord {
    NewAgentRecord {
        seq,
        at: Timestamp::from_millis(1_000 + seq as i64),
        entry: AgentEntry::Record {
            kind: kind.into(),
            service: body
                .get("service")
                .and_then(|s| s.as_str())
                .map(str::to_owned),
            body: body.to_string(),
        },
    }
}

fn line(seq: u64, text: &str) -> NewAgentRecord {
    NewAgentRecord {
        seq,
        at: Timestamp::from_millis(1_000 + seq as i64),
        entry: AgentEntry::Log {
            service: "web".into(),
            stream: Stream::Stderr,
            line: text.into(),
        },
    }
}

/// A destroyed VM of `alice` whose agent reported a crash-looping service.
async fn destroyed_vm(server: &common::Server) -> VmId {
    let store = server.controller.store();
    let id = server.stored_vm("alice").await;
    let now = Timestamp::now();
    let hello = AgentHello {
        instance: "i".into(),
        agent_version: "0.1.0".into(),
        boot_id: "b".into(),
        connected_at: now,
    };
    store.agent_hello(&id, &hello).await.unwrap();
    let exited = |restarts| {
        serde_json::json!({"kind": "service_exited", "uptime_ms": 1, "service": "web",
            "status": {"code": 3, "signal": null}, "restarts": restarts, "restart_in_ms": 500})
    };
    let records = [
        record(
            1,
            "service_started",
            serde_json::json!({"kind": "service_started", "uptime_ms": 1, "service": "web", "pid": 5, "attempt": 1}),
        ),
        line(2, "fatal: no config"),
        record(3, "service_exited", exited(1)),
        record(
            4,
            "crash_loop",
            serde_json::json!({"kind": "crash_loop", "uptime_ms": 1, "service": "web", "restarts": 5, "window_secs": 30}),
        ),
        record(
            5,
            "boot_report",
            serde_json::json!({"kind": "boot_report", "uptime_ms": 1,
            "report": serde_json::to_value(BootReport { kernel: "6.1.0".into(), ..Default::default() }).unwrap()}),
        ),
    ];
    store.store_agent_records(&id, "i", &records).await.unwrap();
    for to in [VmState::Failed, VmState::Destroyed] {
        let from = store.vm(&id).await.unwrap().unwrap().vm.state;
        store
            .transition(&id, from, &StateChange::to(to, now, "test"))
            .await
            .unwrap();
    }
    id
}

#[tokio::test]
async fn a_destroyed_vms_agent_records_stay_readable_by_its_tenant_only() {
    let server = common::server(ServerConfig::default()).await;
    let alice = server.token("alice", false).await;
    let bob = server.token("bob", false).await;
    let id = destroyed_vm(&server).await;

    let health: VmHealth =
        common::ok_json(server.get(&alice, &format!("/v1/vms/{id}/health")).await).await;
    let web = &health.services[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.state, ServiceState::CrashLooping);
    assert!(web.crash_loop);
    assert_eq!(
        web.last_exit.unwrap().status,
        ExitStatus {
            code: Some(3),
            signal: None
        }
    );
    assert!(!health.agent.connected);
    assert_eq!(health.agent.agent_version.as_deref(), Some("0.1.0"));

    let logs: ServiceLogs = common::ok_json(
        server
            .get(&alice, &format!("/v1/vms/{id}/services/web/logs?tail=5"))
            .await,
    )
    .await;
    assert_eq!(logs.lines.len(), 1);
    assert_eq!(
        (logs.lines[0].stream, logs.lines[0].line.as_str()),
        (Stream::Stderr, "fatal: no config")
    );

    let report: VmBootReport = common::ok_json(
        server
            .get(&alice, &format!("/v1/vms/{id}/boot-report"))
            .await,
    )
    .await;
    assert_eq!(report.report.kernel, "6.1.0");

    for path in ["health", "services/web/logs", "boot-report"] {
        let (status, e, _) =
            common::api_error(server.get(&bob, &format!("/v1/vms/{id}/{path}")).await).await;
        assert_eq!((status, e.code.as_str()), (404, "not_found"), "{path}");
    }
}

#[tokio::test]
async fn bad_agent_requests_are_refused_with_the_problem_named() {
    let server = common::server(ServerConfig::default()).await;
    let alice = server.token("alice", false).await;
    let id = destroyed_vm(&server).await;
    for (path, needle) in [
        (format!("/v1/vms/{id}/services/web/logs?tail=0"), "lines"),
        (format!("/v1/vms/{id}/services/web/logs?tial=3"), "tial"),
        (format!("/v1/vms/{id}/files?path=relative"), "absolute"),
        (format!("/v1/vms/{id}/files?path=/a/../b"), "absolute"),
        (format!("/v1/vms/{id}/files"), "path"),
    ] {
        let (status, e, _) = common::api_error(server.get(&alice, &path).await).await;
        assert_eq!(status, 400, "{path}: {e:?}");
        assert!(e.message.contains(needle), "{path}: {}", e.message);
    }
    // A file for a VM that is not ready: 409 (its own tenant), 404 (another).
    let (status, e, _) = common::api_error(
        server
            .get(&alice, &format!("/v1/vms/{id}/files?path=/etc/hostname"))
            .await,
    )
    .await;
    assert_eq!((status, e.code.as_str()), (409, "invalid_state"), "{e:?}");
    let put = server
        .http
        .put(server.url(&format!("/v1/vms/{id}/files?path=/tmp/x")))
        .bearer_auth(&alice)
        .body(vec![0u8; 16])
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 409);
    // Another tenant: the VM does not exist for it, files and exec alike.
    let bob = server.token("bob", false).await;
    let path = format!("/v1/vms/{id}/files?path=/etc/hostname");
    let (status, e, _) = common::api_error(server.get(&bob, &path).await).await;
    assert_eq!((status, e.code.as_str()), (404, "not_found"));
    let exec = format!("/v1/vms/{id}/exec?stream=true");
    let (status, e, _) =
        common::api_error(server.post(&bob, &exec, r#"{"argv":["true"]}"#).await).await;
    assert_eq!((status, e.code.as_str()), (404, "not_found"));
    let (status, e, _) = common::api_error(
        server
            .post(
                &alice,
                &format!("/v1/vms/{id}/exec?tty=true"),
                r#"{"argv":["true"]}"#,
            )
            .await,
    )
    .await;
    assert_eq!(status, 400, "{e:?}");
    assert!(e.message.contains("stream=true"), "{}", e.message);
}

#[tokio::test]
async fn service_names_in_the_path_follow_the_create_rule() {
    let server = common::server(ServerConfig::default()).await;
    let alice = server.token("alice", false).await;
    let id = destroyed_vm(&server).await;
    let long = "s".repeat(500);
    // (`..` itself never arrives: clients resolve it, as URLs say.)
    for name in ["..%2F..%2Fetc%2Fpasswd", "a%00b", "a%0Ab", "a%20b", &long] {
        let path = format!("/v1/vms/{id}/services/{name}/logs");
        let (status, e, text) = common::api_error(server.get(&alice, &path).await).await;
        assert_eq!(
            (status, e.code.as_str()),
            (400, "invalid_request"),
            "{path}"
        );
        assert!(e.message.contains("1-64 letters"), "{}", e.message);
        assert!(
            !text.contains(&long) && !text.contains("etc/passwd\""),
            "{text}"
        );
    }
}

#[tokio::test]
async fn lines_and_tail_are_percent_decoded_alike() {
    let server = common::server(ServerConfig::default()).await;
    let alice = server.token("alice", false).await;
    let id = destroyed_vm(&server).await;
    let logs: ServiceLogs = common::ok_json(
        server
            .get(
                &alice,
                &format!("/v1/vms/{id}/services/web/logs?tail=%31%30"),
            )
            .await,
    )
    .await;
    assert_eq!(logs.lines.len(), 1);
    let never_booted = server.stored_vm("alice").await;
    for log in ["console", "logs/hypervisor"] {
        let path = format!("/v1/vms/{never_booted}/{log}?lines=%31%30");
        let r = server.get(&alice, &path).await;
        assert_eq!(
            r.status().as_u16(),
            200,
            "{path}: {}",
            r.text().await.unwrap()
        );
    }
    for query in ["tail=%2B5", "tail=%30"] {
        let path = format!("/v1/vms/{id}/services/web/logs?{query}");
        let (status, e, _) = common::api_error(server.get(&alice, &path).await).await;
        assert_eq!((status, e.code.as_str()), (400, "invalid_lines"), "{path}");
    }
    let path = format!("/v1/vms/{id}/console?lines=%2B5");
    let (status, e, _) = common::api_error(server.get(&alice, &path).await).await;
    assert_eq!((status, e.code.as_str()), (400, "invalid_lines"), "{path}");
}

#[tokio::test]
async fn a_config_that_the_agent_could_not_apply_is_refused_at_create() {
    let server = common::server(ServerConfig::default()).await;
    let alice = server.token("alice", false).await;
    let body = r#"{"config":{"services":[{"name":"a b","argv":["x"]}]}}"#;
    let (status, e, _) = common::api_error(server.post(&alice, "/v1/vms", body).await).await;
    assert_eq!(status, 400, "{e:?}");
    assert!(e.message.contains("a b"), "{}", e.message);
    let body = r#"{"config":{"servics":[]}}"#;
    let (status, e, _) = common::api_error(server.post(&alice, "/v1/vms", body).await).await;
    assert_eq!(status, 400);
    assert!(e.message.contains("servics"), "{}", e.message);
}
