//! The token routes over real HTTP and a real store: listing shows no
//! secret, a revoked or expired token is refused on its next request, and
//! the last use is recorded without a write per request.

mod common;

use std::time::Duration;

use common::*;
use hearth_server::{mint_token, ServerConfig};
use hearth_types::api::TokenInfo;
use hearth_types::Timestamp;

#[tokio::test]
async fn a_listing_shows_every_token_but_never_a_secret_or_its_hash() {
    let server = server(ServerConfig::default()).await;
    let admin = server.token("ops", true).await;
    let tenant = server.token("team-a", false).await;
    let r = server.get(&admin, "/v1/tokens").await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    for secret in [&admin, &tenant] {
        let (id, hidden) = secret.split_at(12);
        assert!(text.contains(id), "{id} not listed: {text}");
        assert!(!text.contains(hidden), "a secret is in the listing: {text}");
    }
    let stored = server.controller.store().list_tokens().await.unwrap();
    for record in &stored {
        assert!(!text.contains(&record.secret_sha256), "a hash is listed");
    }
    let listed: Vec<TokenInfo> = serde_json::from_str(&text).unwrap();
    let team_a = listed.iter().find(|t| t.tenant.as_str() == "team-a");
    let team_a = team_a.expect("team-a's token");
    assert!(!team_a.admin && team_a.expires_at.is_none());
    assert!(team_a.last_used_at.is_none(), "never used yet");
}

#[tokio::test]
async fn only_admin_tokens_may_list_or_revoke() {
    let server = server(ServerConfig::default()).await;
    let admin = server.token("ops", true).await;
    let tenant = server.token("team-a", false).await;
    let requests = [
        server.get(&tenant, "/v1/tokens").await,
        server
            .delete(&tenant, &format!("/v1/tokens/{}", &admin[..12]))
            .await,
    ];
    for r in requests {
        let (status, e, _) = api_error(r).await;
        assert_eq!((status, e.code.as_str()), (403, "forbidden"));
        assert!(e.message.contains("admin token"), "{}", e.message);
    }
    // The admin token was not revoked by the refused request.
    assert_eq!(server.get(&admin, "/v1/tokens").await.status(), 200);
}

#[tokio::test]
async fn a_revoked_token_is_refused_on_its_next_request() {
    let server = server(ServerConfig::default()).await;
    let admin = server.token("ops", true).await;
    let tenant = server.token("team-a", false).await;
    assert_eq!(server.get(&tenant, "/v1/vms").await.status(), 200);
    let id = &tenant[..12];
    let revoked: TokenInfo =
        ok_json(server.delete(&admin, &format!("/v1/tokens/{id}")).await).await;
    assert_eq!(revoked.id, id);
    let (status, e, text) = api_error(server.get(&tenant, "/v1/vms").await).await;
    assert_eq!((status, e.code.as_str()), (401, "unauthorized"));
    assert!(!text.contains(&tenant[13..]), "{text}");
    // Gone from the listing; revoking again or a malformed id is named.
    let listed: Vec<TokenInfo> = ok_json(server.get(&admin, "/v1/tokens").await).await;
    assert!(listed.iter().all(|t| t.id != id), "{listed:?}");
    let (status, e, _) = api_error(server.delete(&admin, &format!("/v1/tokens/{id}")).await).await;
    assert_eq!((status, e.code.as_str()), (404, "not_found"));
    assert!(e.message.contains("hearth token list"), "{}", e.message);
    let whole = format!("/v1/tokens/{admin}");
    let (status, e, text) = api_error(server.delete(&admin, &whole).await).await;
    assert_eq!((status, e.code.as_str()), (400, "invalid_id"));
    assert!(!text.contains(&admin[13..]), "{text}");
}

#[tokio::test]
async fn an_expired_token_is_refused_and_one_not_yet_expired_is_not() {
    let server = server(ServerConfig::default()).await;
    let store = server.controller.store();
    let (expired, mut record) = mint_token("team-a".parse().unwrap(), false);
    record.expires_at = Some(Timestamp::now().plus(Duration::from_millis(1)));
    store.insert_token(&record).await.unwrap();
    let (later, mut record) = mint_token("team-a".parse().unwrap(), false);
    record.expires_at = Some(Timestamp::now().plus(Duration::from_secs(3600)));
    store.insert_token(&record).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (status, e, text) = api_error(server.get(&expired, "/v1/vms").await).await;
    assert_eq!((status, e.code.as_str()), (401, "unauthorized"));
    assert!(e.message.contains("expired"), "{}", e.message);
    assert!(!text.contains(&expired[13..]), "{text}");
    assert_eq!(server.get(&later, "/v1/vms").await.status(), 200);
}

#[tokio::test]
async fn the_last_use_is_recorded_at_most_once_a_minute() {
    let server = server(ServerConfig::default()).await;
    let tenant = server.token("team-a", false).await;
    let last_use = || async {
        let tokens = server.controller.store().list_tokens().await.unwrap();
        tokens[0].last_used_at
    };
    assert_eq!(last_use().await, None);
    let before = Timestamp::now();
    assert_eq!(server.get(&tenant, "/v1/vms").await.status(), 200);
    let first = last_use().await.expect("the use was recorded");
    assert!(first >= before, "{first} < {before}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..3 {
        assert_eq!(server.get(&tenant, "/v1/vms").await.status(), 200);
    }
    assert_eq!(
        last_use().await,
        Some(first),
        "written again within a minute"
    );
}
