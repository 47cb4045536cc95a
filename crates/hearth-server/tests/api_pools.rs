//! The pool routes over real HTTP and a real store, booting nothing:
//! admin tokens only; bad settings and names are refused naming the field
//! and the fix; an image without a pool, or that does not exist, says so.

mod common;

use common::*;
use hearth_server::ServerConfig;

#[tokio::test]
async fn only_admin_tokens_manage_pools() {
    let server = server(ServerConfig::default()).await;
    let tenant = server.token("team-a", false).await;
    let requests = [
        server.get(&tenant, "/v1/pools").await,
        server.get(&tenant, "/v1/pools/minimal").await,
        server
            .put(&tenant, "/v1/pools/minimal", r#"{"size": 1}"#)
            .await,
        server.delete(&tenant, "/v1/pools/minimal").await,
    ];
    for r in requests {
        let (status, e, _) = api_error(r).await;
        assert_eq!((status, e.code.as_str()), (403, "forbidden"));
        assert!(e.message.contains("admin token"), "{}", e.message);
    }
}

#[tokio::test]
async fn bad_settings_and_names_are_refused_saying_what_to_give() {
    let server = server(ServerConfig::default()).await;
    let admin = server.token("ops", true).await;
    let cases = [
        (
            "/v1/pools/minimal",
            r#"{"size": 3, "max": 2}"#,
            "size may not exceed max",
        ),
        (
            "/v1/pools/minimal",
            r#"{"size": 1, "ttl_secs": 1}"#,
            "ttl_secs is 1",
        ),
        (
            "/v1/pools/minimal",
            r#"{"size": 1, "refill_per_min": 0}"#,
            "refill_per_min is 0",
        ),
        (
            "/v1/pools/minimal",
            r#"{"size": 1, "max": 65}"#,
            "give 1 to 64",
        ),
        (
            "/v1/pools/minimal",
            r#"{"size": 1, "colour": "red"}"#,
            "colour",
        ),
        (
            "/v1/pools/Bad..Name",
            r#"{"size": 1}"#,
            "is not an image name",
        ),
        // This server has no images at all.
        ("/v1/pools/minimal", r#"{"size": 1}"#, "minimal"),
    ];
    for (path, body, says) in cases {
        let (status, e, _) = api_error(server.put(&admin, path, body).await).await;
        assert_eq!(status, 400, "{path} {body}: {}", e.message);
        assert!(e.message.contains(says), "{path} {body}: {}", e.message);
    }
    let listed = server.get(&admin, "/v1/pools").await;
    assert_eq!(listed.text().await.unwrap(), "[]");
}

#[tokio::test]
async fn an_image_without_a_pool_is_not_found_with_the_command_to_make_one() {
    let server = server(ServerConfig::default()).await;
    let admin = server.token("ops", true).await;
    for r in [
        server.get(&admin, "/v1/pools/browser").await,
        server.delete(&admin, "/v1/pools/browser").await,
    ] {
        let (status, e, _) = api_error(r).await;
        assert_eq!((status, e.code.as_str()), (404, "not_found"));
        assert!(
            e.message.contains("hearth pool set browser"),
            "{}",
            e.message
        );
    }
}
