//! `GET /v1/vms/{id}/diagnosis` on a real VM that panics: the finding is
//! there while the failed VM is kept, and the same after it is destroyed
//! (read from its archived logs).

mod common;

use std::time::Duration;

use common::*;
use hearth_types::api::{Diagnosis, Vm};
use hearth_types::VmState;

const BOOT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicked_vm_is_diagnosed_before_and_after_it_is_destroyed() {
    let server = vm_server().await;
    let token = server.token("team-a", false).await;
    let body = r#"{"command":["sh","-c","echo c > /proc/sysrq-trigger"]}"#;
    let r = server.post(&token, "/v1/vms", body).await;
    let vm: Vm = ok_json(r).await;
    let id = vm.id.to_string();
    let failed = server
        .wait_vm(&token, &id, BOOT, |vm| vm.state == VmState::Failed)
        .await;
    assert_eq!(
        failed.failure.map(|f| f.code),
        Some(hearth_types::FailureCode::KernelPanic)
    );

    let path = format!("/v1/vms/{id}/diagnosis");
    let live: Diagnosis = ok_json(server.get(&token, &path).await).await;
    assert_eq!(live.vm, vm.id);
    let first = live.findings.first().expect("a finding");
    assert_eq!(first.rule, "kernel_panic", "{live:#?}");
    assert!(first.cause.contains("sysrq-trigger"), "{first:?}");
    assert!(
        first
            .evidence
            .iter()
            .any(|l| l.contains("Kernel panic - not syncing: sysrq triggered crash")),
        "{first:?}"
    );
    assert!(!first.fix.is_empty());
    let other = server.token("team-b", false).await;
    let (status, _, _) = api_error(server.get(&other, &path).await).await;
    assert_eq!(status, 404, "another tenant's VM is not found");

    let r = server.delete(&token, &format!("/v1/vms/{id}")).await;
    assert_eq!(r.status(), 202);
    server
        .wait_state(&token, &id, VmState::Destroyed, Duration::from_secs(60))
        .await;
    let archived: Diagnosis = ok_json(server.get(&token, &path).await).await;
    assert_eq!(archived, live, "the archive must give the same diagnosis");
}

#[tokio::test]
async fn unknown_and_malformed_ids_and_missing_tokens_answer_like_every_route() {
    let server = server(hearth_server::ServerConfig::default()).await;
    let token = server.token("team-a", false).await;
    let (status, err, _) = api_error(
        server
            .get(&token, "/v1/vms/vm-000000000000/diagnosis")
            .await,
    )
    .await;
    assert_eq!((status, err.code.as_str()), (404, "not_found"));
    let (status, err, _) = api_error(server.get(&token, "/v1/vms/not-an-id/diagnosis").await).await;
    assert_eq!((status, err.code.as_str()), (400, "invalid_id"));
    let r = server
        .http
        .get(server.url("/v1/vms/vm-000000000000/diagnosis"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
