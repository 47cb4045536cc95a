//! The sessions routes without booting a VM: a real server and store.
//! Bad bodies name the field; an unknown provider names the known ones; a
//! session whose VM cannot be made fails and says why (and frees the user
//! to start again); ids are checked; a server without sessions says so.
//! (Sessions with VMs are in the CLI's `vm_sessions` and `vm_login` tests.)

mod common;

use hearth_server::ServerConfig;
use hearth_types::session::{ProviderInfo, Session};
use hearth_types::SessionState;

#[tokio::test]
async fn bad_bodies_name_the_field_and_unknown_providers_name_the_known_ones() {
    let server = common::session_server().await;
    let token = server.token("team-a", false).await;
    for (body, want) in [
        (r#"{"provider": "codex"}"#, "`user`"),
        (r#"{"user": "alice"}"#, "`provider`"),
        (r#"{"user": "a b", "provider": "codex"}"#, "user name"),
        (r#"{"user": "alice", "provider": "Codex!"}"#, "provider"),
        (
            r#"{"user": "alice", "provider": "codex", "ttl_secs": 5}"#,
            "ttl_secs 5",
        ),
        (
            r#"{"user": "alice", "provider": "codex", "colour": "red"}"#,
            "colour",
        ),
        ("[1, 2]", "invalid"),
        ("{", "JSON"),
    ] {
        let (status, err, text) =
            common::api_error(server.post(&token, "/v1/sessions", body).await).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(err.message.contains(want), "{body}: {}", err.message);
    }
    let (status, err, _) = common::api_error(
        server
            .post(
                &token,
                "/v1/sessions",
                r#"{"user": "alice", "provider": "netscape"}"#,
            )
            .await,
    )
    .await;
    assert_eq!((status, err.code.as_str()), (400, "unknown_provider"));
    assert!(
        err.message.contains("claude, codex, gemini"),
        "{}",
        err.message
    );

    let providers: Vec<ProviderInfo> =
        common::ok_json(server.get(&token, "/v1/providers").await).await;
    let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["claude", "codex", "gemini"]);
}

#[tokio::test]
async fn a_session_whose_vm_cannot_be_made_fails_saying_why_and_frees_the_user() {
    let server = common::session_server().await;
    let token = server.token("team-a", false).await;
    let body = r#"{"user": "alice", "provider": "codex"}"#;
    // No kernel or image in this data directory.
    let (status, err, text) =
        common::api_error(server.post(&token, "/v1/sessions", body).await).await;
    assert!(status == 400 || status == 500, "{text}");
    assert!(err.message.contains("browser VM"), "{}", err.message);
    let listed: Vec<Session> = common::ok_json(server.get(&token, "/v1/sessions").await).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].state, SessionState::Failed);
    let why = listed[0].message.clone().unwrap_or_default();
    assert!(why.contains("could not be created"), "{why}");
    // The failed one is no longer live: the next start is not refused as a duplicate.
    let (status, err, _) = common::api_error(server.post(&token, "/v1/sessions", body).await).await;
    assert_ne!(err.code, "session_live", "{status}");
    // Another tenant sees none of it.
    let other = server.token("team-b", false).await;
    let theirs: Vec<Session> = common::ok_json(server.get(&other, "/v1/sessions").await).await;
    assert!(theirs.is_empty());
    let id = listed[0].id.to_string();
    let (status, _, _) =
        common::api_error(server.get(&other, &format!("/v1/sessions/{id}")).await).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn session_ids_are_checked_and_a_server_without_sessions_says_so() {
    let server = common::session_server().await;
    let token = server.token("team-a", false).await;
    for path in [
        "/v1/sessions/ses-nothex00000",
        "/v1/sessions/vm-0123456789ab/events",
        "/v1/sessions/..%2f..%2fetc",
    ] {
        let (status, err, text) = common::api_error(server.get(&token, path).await).await;
        assert_eq!(
            (status, err.code.as_str()),
            (400, "invalid_id"),
            "{path}: {text}"
        );
    }
    let (status, err, _) =
        common::api_error(server.get(&token, "/v1/sessions/ses-0123456789ab").await).await;
    assert_eq!((status, err.code.as_str()), (404, "not_found"));

    let plain = common::server(ServerConfig::default()).await;
    let token = plain.token("team-a", false).await;
    let (status, err, _) = common::api_error(plain.get(&token, "/v1/sessions").await).await;
    assert_eq!((status, err.code.as_str()), (503, "sessions_disabled"));
    // The old controller's liveness answers without a token.
    let r = plain.http.get(plain.url("/health")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
}
