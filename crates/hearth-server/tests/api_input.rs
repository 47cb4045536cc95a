//! The API's answers to bad input, over real HTTP to a real server on a
//! real store. Nothing here boots a VM: the VMs some tests need are
//! records put straight into the store.

mod common;

use std::time::Duration;

use common::*;
use hearth_server::{RateLimit, ServerConfig};
use hearth_types::{VmId, VmState};

#[tokio::test]
async fn healthz_answers_without_a_token_and_everything_else_needs_one() {
    let server = server(ServerConfig::default()).await;
    let r = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"status":"ok"}"#);

    for path in [
        "/v1/vms",
        "/v1/vms/vm-1",
        "/v1/vms/vm-1/console",
        "/metrics",
    ] {
        let r = server.http.get(server.url(path)).send().await.unwrap();
        let (status, e, _) = api_error(r).await;
        assert_eq!((status, e.code.as_str()), (401, "unauthorized"), "{path}");
        assert!(e.message.contains("hearth token create"), "{}", e.message);
    }
}

#[tokio::test]
async fn wrong_and_malformed_tokens_are_refused_without_being_echoed() {
    let server = server(ServerConfig::default()).await;
    let good = server.token("team-a", false).await;
    // Right shape, unknown secret; the same id with another secret; junk.
    let unknown = format!("hth_0123abcd_{}", "e".repeat(64));
    let same_id_other_secret = format!("{}_{}", &good[..12], "f".repeat(64));
    let junk = "not-a-token-s3cr3t".to_owned();
    for token in [unknown, same_id_other_secret, junk] {
        let r = server.get(&token, "/v1/vms").await;
        let headers = format!("{:?}", r.headers());
        let (status, e, text) = api_error(r).await;
        assert_eq!((status, e.code.as_str()), (401, "unauthorized"));
        let secret = token.rsplit('_').next().unwrap();
        assert!(
            !text.contains(secret) && !headers.contains(secret),
            "{text}"
        );
    }
    let r = server
        .http
        .get(server.url("/v1/vms"))
        .header("authorization", format!("Basic {good}"))
        .send()
        .await
        .unwrap();
    let (status, _, text) = api_error(r).await;
    assert_eq!(status, 401);
    assert!(!text.contains(&good[13..]));

    let vms: Vec<hearth_types::api::Vm> = ok_json(server.get(&good, "/v1/vms").await).await;
    assert!(vms.is_empty());
}

#[tokio::test]
async fn create_refuses_unknown_fields_malformed_json_and_bad_values() {
    let server = server(ServerConfig::default()).await;
    let token = server.token("team-a", false).await;
    let cases = [
        (r#"{"image":"minimal","cpus":2}"#, "invalid_request", "cpus"),
        (r#"{"image":"#, "invalid_json", "not valid JSON"),
        ("image=minimal", "invalid_json", "not valid JSON"),
        (r#"{"vcpus":"two"}"#, "invalid_request", "vcpus"),
        (r#"{"vcpus":0}"#, "invalid_request", "between 1 and"),
        (r#"{"memory_mib":1}"#, "invalid_request", "between 32 and"),
        (r#"{"backend":"xen"}"#, "invalid_request", "xen"),
        // This data dir has no images.
        (r#"{"image":"nope"}"#, "invalid_request", "nope"),
        (r#"{"network":"bridge"}"#, "invalid_request", "bridge"),
        (
            r#"{"network":"nat","backend":"firecracker"}"#,
            "invalid_request",
            "has none",
        ),
        (r#"{"network":"nat"}"#, "invalid_request", "has none"),
        (
            r#"{"network":"nat","config":{"network":{"mac":"02:68:74:00:00:02","address":"172.31.0.2","prefix_len":30,"gateway":"172.31.0.1"}}}"#,
            "invalid_request",
            "config.network is set by the server",
        ),
    ];
    for (body, code, mentions) in cases {
        let (status, e, _) = api_error(server.post(&token, "/v1/vms", body).await).await;
        assert_eq!((status, e.code.as_str()), (400, code), "{body}: {e:?}");
        assert!(e.message.contains(mentions), "{body}: {}", e.message);
    }
    let vms: Vec<hearth_types::api::Vm> = ok_json(server.get(&token, "/v1/vms").await).await;
    assert!(vms.is_empty(), "a refused create left a VM: {vms:?}");
}

#[tokio::test]
async fn malformed_and_path_like_ids_are_refused_before_any_lookup() {
    let server = server(ServerConfig::default()).await;
    let token = server.token("team-a", false).await;
    for id in [
        "..%2Fx",
        "..%2F..%2Fetc%2Fpasswd",
        "VM-1",
        "x",
        "vm-",
        "vm-a%2Fb",
        "%ff",
    ] {
        for path in [
            format!("/v1/vms/{id}"),
            format!("/v1/vms/{id}/console"),
            format!("/v1/vms/{id}/events"),
            format!("/v1/vms/{id}/logs/hypervisor"),
        ] {
            let (status, e, _) = api_error(server.get(&token, &path).await).await;
            assert_eq!(
                (status, e.code.as_str()),
                (400, "invalid_id"),
                "{path}: {e:?}"
            );
            assert!(e.message.contains("vm-3f9a1c2b7d4e"), "{}", e.message);
        }
        let r = server.delete(&token, &format!("/v1/vms/{id}")).await;
        assert_eq!(api_error(r).await.0, 400);
        let r = server.post(&token, &format!("/v1/vms/{id}/hold"), "").await;
        assert_eq!(api_error(r).await.0, 400);
    }
}

#[tokio::test]
async fn lines_must_be_a_plain_number_from_1_to_10000() {
    let server = server(ServerConfig::default()).await;
    let token = server.token("team-a", false).await;
    let id = server.stored_vm("team-a").await;
    for lines in [
        "abc",
        "0",
        "10001",
        "-5",
        "1e3",
        "99999999999999999999",
        "5;id",
        "5%20%7C%20id",
        "",
    ] {
        for log in ["console", "logs/hypervisor"] {
            let path = format!("/v1/vms/{id}/{log}?lines={lines}");
            let (status, e, _) = api_error(server.get(&token, &path).await).await;
            assert_eq!((status, e.code.as_str()), (400, "invalid_lines"), "{path}");
            assert!(e.message.contains("between 1 and 10000"), "{}", e.message);
        }
    }
    for (query, mentions) in [
        ("follow=maybe", "true"),
        ("tail=5", "tail"),
        ("lines=1&lines=2", "twice"),
    ] {
        let path = format!("/v1/vms/{id}/console?{query}");
        let (status, e, _) = api_error(server.get(&token, &path).await).await;
        assert_eq!(
            (status, e.code.as_str()),
            (400, "invalid_request"),
            "{query}"
        );
        assert!(e.message.contains(mentions), "{}", e.message);
    }
    let path = format!("/v1/vms/{id}/logs/hypervisor?follow=true");
    assert_eq!(api_error(server.get(&token, &path).await).await.0, 400);

    // In range: a VM that never booted has an empty console.
    let tail: hearth_types::api::ConsoleTail = ok_json(
        server
            .get(&token, &format!("/v1/vms/{id}/console?lines=10000"))
            .await,
    )
    .await;
    assert!(tail.lines.is_empty() && !tail.archived);
}

#[tokio::test]
async fn another_tenants_vm_answers_exactly_like_an_unknown_one() {
    let server = server(ServerConfig::default()).await;
    let a = server.token("team-a", false).await;
    let theirs = server.stored_vm("team-b").await;
    let unknown = VmId::generate();
    for suffix in ["", "/console", "/events", "/logs/hypervisor"] {
        let (status, e, text) =
            api_error(server.get(&a, &format!("/v1/vms/{theirs}{suffix}")).await).await;
        assert_eq!((status, e.code.as_str()), (404, "not_found"), "{suffix}");
        let (_, _, unknown_text) =
            api_error(server.get(&a, &format!("/v1/vms/{unknown}{suffix}")).await).await;
        assert_eq!(
            text,
            unknown_text.replace(unknown.as_str(), theirs.as_str()),
            "{suffix}"
        );
    }
    for path in ["", "/hold", "/release"] {
        let url = format!("/v1/vms/{theirs}{path}");
        let r = if path.is_empty() {
            server.delete(&a, &url).await
        } else {
            server.post(&a, &url, "").await
        };
        assert_eq!(api_error(r).await.0, 404, "{path}");
    }
    let mine: Vec<hearth_types::api::Vm> = ok_json(server.get(&a, "/v1/vms").await).await;
    assert!(mine.is_empty());

    // The owner and an admin see it.
    let b = server.token("team-b", false).await;
    let admin = server.token("ops", true).await;
    for token in [&b, &admin] {
        let vm: hearth_types::api::Vm =
            ok_json(server.get(token, &format!("/v1/vms/{theirs}")).await).await;
        assert_eq!(vm.id, theirs);
    }
    let all: Vec<hearth_types::api::Vm> = ok_json(server.get(&admin, "/v1/vms").await).await;
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn hold_release_and_a_held_vm_refuses_delete() {
    let server = server(ServerConfig::default()).await;
    let token = server.token("team-a", false).await;
    let id = server.stored_vm("team-a").await;
    let vm: hearth_types::api::Vm =
        ok_json(server.post(&token, &format!("/v1/vms/{id}/hold"), "").await).await;
    assert!(vm.held);
    let (status, e, _) = api_error(server.delete(&token, &format!("/v1/vms/{id}")).await).await;
    assert_eq!((status, e.code.as_str()), (409, "held"));
    assert!(e.message.contains("release"), "{}", e.message);
    let vm: hearth_types::api::Vm = ok_json(
        server
            .post(&token, &format!("/v1/vms/{id}/release"), "")
            .await,
    )
    .await;
    assert!(!vm.held);
    let events: Vec<hearth_types::api::VmEvent> =
        ok_json(server.get(&token, &format!("/v1/vms/{id}/events")).await).await;
    assert_eq!(events[0].state, hearth_types::VmState::Requested);
}

#[tokio::test]
async fn requests_over_the_rate_limit_get_429_with_retry_after_per_token() {
    let config = ServerConfig {
        rate_limit: RateLimit {
            requests: 3,
            per: Duration::from_secs(60),
        },
        ..ServerConfig::default()
    };
    let server = server(config).await;
    let a = server.token("team-a", false).await;
    for _ in 0..3 {
        assert_eq!(server.get(&a, "/v1/vms").await.status(), 200);
    }
    let r = server.get(&a, "/v1/vms").await;
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    let (status, e, _) = api_error(r).await;
    assert_eq!((status, e.code.as_str()), (429, "rate_limited"));
    assert!(e.message.contains("try again in"), "{}", e.message);

    let b = server.token("team-b", false).await;
    assert_eq!(server.get(&b, "/v1/vms").await.status(), 200);
    let health = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_in_json() {
    let config = ServerConfig {
        max_body_bytes: 1024,
        ..ServerConfig::default()
    };
    let server = server(config).await;
    let token = server.token("team-a", false).await;
    let big = format!(r#"{{"command":["echo","{}"]}}"#, "x".repeat(4096));
    let (status, e, _) = api_error(server.post(&token, "/v1/vms", &big).await).await;
    assert_eq!((status, e.code.as_str()), (413, "body_too_large"));
    assert!(e.message.contains("1024"), "{}", e.message);

    // Without a Content-Length (chunked), the limit holds too.
    let chunks: Vec<Result<String, std::io::Error>> = vec![Ok(big.clone()), Ok(big)];
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = server
        .http
        .post(server.url("/v1/vms"))
        .bearer_auth(&token)
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, e, _) = api_error(r).await;
    assert_eq!((status, e.code.as_str()), (413, "body_too_large"));
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_json() {
    let server = server(ServerConfig::default()).await;
    let token = server.token("team-a", false).await;
    let (status, e, _) = api_error(server.get(&token, "/v2/nothing").await).await;
    assert_eq!((status, e.code.as_str()), (404, "not_found"));
    let r = server
        .http
        .put(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    let (status, e, _) = api_error(r).await;
    assert_eq!((status, e.code.as_str()), (405, "method_not_allowed"));
}

#[tokio::test]
async fn metrics_name_every_series_and_count_requests_by_route_template() {
    let server = server(ServerConfig::default()).await;
    let token = server.token("team-a", false).await;
    let admin = server.token("ops", true).await;
    let id = server.stored_vm("team-a").await;
    ok_json::<hearth_types::api::Vm>(server.get(&token, &format!("/v1/vms/{id}")).await).await;
    let r = server.get(&admin, "/metrics").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    for series in [
        "hearth_vms{state=\"requested\"} 1",
        "hearth_vms{state=\"ready\"} 0",
        "hearth_vms{state=\"destroyed\"} 0",
        "# TYPE hearth_boot_seconds histogram",
        "hearth_boot_seconds_count 0",
        "hearth_cleanup_jobs_pending 0",
        "hearth_vms_created_total 0",
        "hearth_vms_cleaned_total 0",
        "# TYPE hearth_api_request_duration_seconds histogram",
        "hearth_api_request_duration_seconds_count{route=\"/v1/vms/{id}\",status=\"2xx\"} 1",
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    assert!(!text.contains(id.as_str()), "a raw path became a label");
}

#[tokio::test]
async fn metrics_need_an_admin_token_as_they_count_every_tenant() {
    let server = server(ServerConfig::default()).await;
    let other = server.stored_vm("team-b").await;
    let now = hearth_types::Timestamp::now();
    for to in [VmState::Preparing, VmState::Booting, VmState::Ready] {
        let from = server.controller.store().vm(&other).await.unwrap().unwrap();
        let change = hearth_store::StateChange::to(to, now, "test");
        server
            .controller
            .store()
            .transition(&other, from.vm.state, &change)
            .await
            .unwrap();
    }
    // A tenant with no VMs sees nothing of team-b's ready VM.
    let lonely = server.token("team-a", false).await;
    let r = server.get(&lonely, "/metrics").await;
    let (status, e, text) = api_error(r).await;
    assert_eq!((status, e.code.as_str()), (403, "forbidden"), "{text}");
    assert!(e.message.contains("admin token"), "{}", e.message);
    assert!(!text.contains("hearth_vms"), "{text}");
    // An admin still sees every tenant's.
    let admin = server.token("ops", true).await;
    let r = server.get(&admin, "/metrics").await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("hearth_vms{state=\"ready\"} 1"), "{text}");
}

#[tokio::test]
async fn the_openapi_document_is_served_and_shutdown_ends_the_server() {
    let mut server = server(ServerConfig::default()).await;
    let r = server
        .http
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    let doc: serde_json::Value = ok_json(r).await;
    assert!(doc["paths"]["/v1/vms/{id}/console"].is_object());
    within(
        Duration::from_secs(10),
        "graceful shutdown",
        server.shut_down(),
    )
    .await
    .expect("serve_on returns Ok");
    assert!(server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn serve_reports_an_address_in_use() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = server(ServerConfig::default()).await;
    let config = ServerConfig {
        listen: taken.local_addr().unwrap(),
        ..ServerConfig::default()
    };
    let controller = std::sync::Arc::clone(&server.controller);
    let err = hearth_server::serve(controller, config, async {})
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("could not listen on 127.0.0.1:"),
        "{err}"
    );
}
