//! The API fuzzed from its own OpenAPI document: schemathesis
//! (`scripts/setup-host` installs it in `/opt/hearth-fuzz`) reads
//! `/openapi.json` from a real server and sends it requests made from the
//! schemas, valid and invalid ones, and the test requires no `5xx`, no
//! status, content type, header or body the document does not describe, and
//! every request the schema forbids refused with a `4xx`.
//!
//! The server has no kernel and no image, so `POST /v1/vms` is refused
//! before anything boots (`invalid_request`: the image is not built), and its
//! stored VMs never ran, so a followed console sends the tail and ends (and
//! execs are `409`: schemathesis warns that these two routes refuse most
//! valid data, which is expected here). Two stored VMs (one destroyed) are
//! offered to the fuzzer as path ids beside the ids it makes up. The token
//! is an admin's, so `/metrics` and `/v1/tokens` are reached too. See
//! docs/api.md, "The fuzzer".
//!
//! Without schemathesis the test says so in one line and passes (a
//! developer's machine without setup-host); `HEARTH_SCHEMATHESIS` names
//! another binary.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use hearth_server::{RateLimit, ServerConfig};
use hearth_store::{AgentEntry, AgentHello, NewAgentRecord, StateChange};
use hearth_types::guest::{BootReport, Stream};
use hearth_types::{Timestamp, VmId, VmState};
use tokio::process::Command;

/// Where `scripts/setup-host` installs it.
const DEFAULT_SCHEMATHESIS: &str = "/opt/hearth-fuzz/bin/schemathesis";
/// A bound on the whole run, far above its 30-70 s (alone, or beside a
/// busy build): past it something ran away; schemathesis is killed and the
/// test fails.
const DEADLINE: Duration = Duration::from_secs(240);

/// What the fuzzer checks of every answer (`schemathesis run --help`).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance,negative_data_rejection";

fn schemathesis() -> Option<PathBuf> {
    let path = std::env::var_os("HEARTH_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| DEFAULT_SCHEMATHESIS.into());
    path.is_file().then_some(path)
}

/// The fuzzer's configuration: the stored VMs as a dictionary of path ids.
fn write_config(dir: &Path, ids: &[String]) -> PathBuf {
    let values = ids
        .iter()
        .map(|id| format!("{id:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    // The token comes from the environment, so it is never on disk.
    let text = format!(
        "[auth.openapi.token]\nbearer = \"${{HEARTH_FUZZ_TOKEN}}\"\n\n\
         [warnings]\nfail-on = [\"missing_auth\"]\n\n\
         [dictionaries.vms]\nvalues = [{values}]\n\n\
         [parameters]\n\"path.id\" = {{ dictionary = \"vms\", probability = 0.5 }}\n"
    );
    let path = dir.join("schemathesis.toml");
    std::fs::write(&path, text).expect("schemathesis.toml");
    path
}

/// A VM whose agent said hello, logged a line and sent a boot report, then
/// failed and was destroyed: its health, logs and report answer with bodies.
async fn destroyed_vm_with_a_report(server: &Server) -> VmId {
    let store = server.controller.store();
    let id = server.stored_vm("fuzz").await;
    let now = Timestamp::now();
    let hello = AgentHello {
        instance: "i".into(),
        agent_version: "0.1.0".into(),
        boot_id: "b".into(),
        connected_at: now,
    };
    store.agent_hello(&id, &hello).await.expect("hello");
    let report = serde_json::json!({"kind": "boot_report", "uptime_ms": 1,
        "report": BootReport { kernel: "6.1.0".into(), ..Default::default() }});
    let records = [
        NewAgentRecord {
            seq: 1,
            at: now,
            entry: AgentEntry::Log {
                service: "web".into(),
                stream: Stream::Stdout,
                line: "listening".into(),
            },
        },
        NewAgentRecord {
            seq: 2,
            at: now,
            entry: AgentEntry::Record {
                kind: "boot_report".into(),
                service: None,
                body: report.to_string(),
            },
        },
    ];
    store
        .store_agent_records(&id, "i", &records)
        .await
        .expect("records");
    for to in [VmState::Failed, VmState::Destroyed] {
        let from = store.vm(&id).await.expect("vm").expect("stored").vm.state;
        store
            .transition(&id, from, &StateChange::to(to, now, "fuzz"))
            .await
            .expect("transition");
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_every_request_its_schema_allows_or_forbids_as_documented() {
    let Some(bin) = schemathesis() else {
        println!(
            "api_fuzz: skipped: no schemathesis at {DEFAULT_SCHEMATHESIS} (scripts/setup-host installs it) or in HEARTH_SCHEMATHESIS"
        );
        return;
    };
    let config = ServerConfig {
        rate_limit: RateLimit {
            requests: 1_000_000,
            per: Duration::from_secs(1),
        },
        ..ServerConfig::default()
    };
    let server = session_server_with(config).await;
    let token = server.token("fuzz", true).await;
    let live = server.stored_vm("fuzz").await;
    let gone = destroyed_vm_with_a_report(&server).await;
    let work = server.dir.path().join("fuzz");
    std::fs::create_dir_all(&work).expect("fuzz dir");
    let toml = write_config(&work, &[live.to_string(), gone.to_string()]);

    let mut cmd = Command::new(&bin);
    cmd.kill_on_drop(true)
        .current_dir(&work)
        .arg("--no-color")
        .arg("--config-file")
        .arg(&toml)
        .arg("run")
        .arg(server.url("/openapi.json"))
        .args(["--url", &server.base])
        .args(["--checks", CHECKS])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "50", "--seed", "1"])
        // One worker: with two, hypothesis (6.x on Python 3.11) sometimes
        // fails inside its own lambda inspection ("AST constructor recursion
        // depth mismatch"), an error of the tool, not of the API.
        .args(["--workers", "1", "--request-timeout", "10"])
        .args(["--suppress-health-check", "all"])
        // WebSocket upgrades: a plain request gets `400 not_a_websocket`,
        // which the fuzzer would only ever see.
        .args([
            "--exclude-path-regex",
            "/(exec/attach|ports/\\{port\\}|vnc)$",
        ])
        // The fuzzer reads the token ids from `GET /v1/tokens` and revokes
        // its own, after which everything is `401`; `api_tokens.rs` tests
        // revoking.
        .args(["--exclude-operation-id", "revoke_token"])
        .env("HEARTH_FUZZ_TOKEN", &token)
        .env("SCHEMATHESIS_HOOKS", "")
        .env("NO_COLOR", "1");
    let started = Instant::now();
    // Past the deadline the run is dropped, which kills schemathesis.
    let output = tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis still ran after {DEADLINE:?}"))
        .expect("schemathesis runs");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("api_fuzz: schemathesis ran {took:.1?}\n{stdout}\n{stderr}");
    assert!(
        output.status.success(),
        "schemathesis found problems ({}): see its report above",
        output.status
    );
    assert!(
        stdout.contains("passed"),
        "schemathesis ran no test: {stdout}"
    );
}
