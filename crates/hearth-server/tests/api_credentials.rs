//! The credential routes over real HTTP, a real store and a real vault
//! (credentials sealed as a login session will): the listing is metadata
//! without a byte of the files, another tenant's user is 404 like another
//! tenant's VM, a bad user or provider is 400 naming the rule, and delete
//! removes every version.

mod common;

use std::sync::Arc;

use common::*;
use hearth_server::ServerConfig;
use hearth_store::{CredentialOwner, CredentialStore};
use hearth_types::api::CredentialInfo;
use hearth_vault::{CredentialFile, CredentialFiles, KeyFile, Secret, Vault};

const SECRET: &str = "sk-ant-API-TEST-SECRET-42";

fn owner(tenant: &str, user: &str, provider: &str) -> CredentialOwner {
    CredentialOwner {
        tenant: tenant.parse().unwrap(),
        user: user.parse().unwrap(),
        provider: provider.parse().unwrap(),
    }
}

fn files() -> CredentialFiles {
    CredentialFiles {
        files: vec![
            CredentialFile {
                path: ".claude/.credentials.json".to_owned(),
                mode: 0o600,
                contents: Secret::new(format!("{{\"token\":\"{SECRET}\"}}").into_bytes()),
            },
            CredentialFile {
                path: ".claude.json".to_owned(),
                mode: 0o644,
                contents: Secret::new(b"{\"ok\":true}".to_vec()),
            },
        ],
    }
}

/// A vault over the server's own store, its key file in the server's
/// data directory.
fn vault(server: &Server) -> Vault {
    let store: Arc<dyn CredentialStore> = server.controller.store().clone();
    Vault::new(KeyFile::in_data_dir(server.dir.path()), store)
}

#[tokio::test]
async fn a_listing_is_metadata_without_a_byte_of_the_files() {
    let server = server(ServerConfig::default()).await;
    let token = server.token("team-a", false).await;
    let vault = vault(&server);
    let alice = owner("team-a", "alice@example.com", "claude");
    vault.seal(&alice, &files()).await.unwrap();
    vault.seal(&alice, &files()).await.unwrap();
    vault
        .seal(&owner("team-a", "alice@example.com", "codex"), &files())
        .await
        .unwrap();
    let r = server
        .get(&token, "/v1/users/alice@example.com/credentials")
        .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains(SECRET), "a secret is listed: {text}");
    assert!(
        !text.contains("\"ok\":true") && !text.contains("ok\\\":true"),
        "{text}"
    );
    let stored = server.controller.store().current_credential(&alice).await;
    let sealed = stored.unwrap().unwrap().sealed;
    for part in [&sealed.ciphertext, &sealed.wrapped_key, &sealed.nonce] {
        let hex: String = part.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!text.contains(&hex), "sealed bytes are listed: {text}");
    }
    let listed: Vec<CredentialInfo> = serde_json::from_str(&text).unwrap();
    let seen: Vec<_> = listed
        .iter()
        .map(|c| (c.provider.as_str(), c.version, c.kek_version))
        .collect();
    assert_eq!(seen, [("claude", 2, 1), ("codex", 1, 1)]);
    let paths: Vec<_> = listed[0]
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.mode))
        .collect();
    assert_eq!(
        paths,
        [
            (".claude/.credentials.json", 0o600),
            (".claude.json", 0o644)
        ]
    );
    assert_eq!(listed[0].size, files().size());
}

#[tokio::test]
async fn another_tenants_user_is_not_found_like_an_unknown_one() {
    let server = server(ServerConfig::default()).await;
    let a = server.token("team-a", false).await;
    let b = server.token("team-b", false).await;
    let admin_b = server.token("team-b", true).await;
    vault(&server)
        .seal(&owner("team-a", "alice", "claude"), &files())
        .await
        .unwrap();
    assert_eq!(
        server.get(&a, "/v1/users/alice/credentials").await.status(),
        200
    );
    let (_, _, unknown) = api_error(server.get(&b, "/v1/users/nobody/credentials").await).await;
    for token in [&b, &admin_b] {
        let (status, e, text) =
            api_error(server.get(token, "/v1/users/alice/credentials").await).await;
        assert_eq!((status, e.code.as_str()), (404, "not_found"));
        assert_eq!(
            text.replace("alice", "nobody"),
            unknown,
            "the answers differ"
        );
        let (status, e, _) = api_error(
            server
                .delete(token, "/v1/users/alice/credentials/claude")
                .await,
        )
        .await;
        assert_eq!((status, e.code.as_str()), (404, "not_found"));
    }
    // team-a's credential survived team-b's delete.
    assert_eq!(
        server.get(&a, "/v1/users/alice/credentials").await.status(),
        200
    );
}

#[tokio::test]
async fn a_bad_user_or_provider_is_400_naming_the_rule() {
    let server = server(ServerConfig::default()).await;
    let token = server.token("team-a", false).await;
    let long = "u".repeat(65);
    for bad in [
        "bad%20name",
        "%C3%A9l%C3%A8ve",
        "a%2Fb",
        "a%00b",
        long.as_str(),
    ] {
        for path in [
            format!("/v1/users/{bad}/credentials"),
            format!("/v1/users/{bad}/credentials/claude"),
        ] {
            let r = if path.ends_with("claude") {
                server.delete(&token, &path).await
            } else {
                server.get(&token, &path).await
            };
            let (status, e, _) = api_error(r).await;
            assert_eq!((status, e.code.as_str()), (400, "invalid_user"), "{path}");
            assert!(
                e.message.contains("1 to 64 of ASCII letters"),
                "{}",
                e.message
            );
        }
    }
    let (status, e, _) = api_error(
        server
            .delete(&token, "/v1/users/alice/credentials/Claude")
            .await,
    )
    .await;
    assert_eq!((status, e.code.as_str()), (400, "invalid_provider"));
    assert!(e.message.contains("lowercase"), "{}", e.message);
}

#[tokio::test]
async fn delete_removes_every_version_and_answers_the_current() {
    let server = server(ServerConfig::default()).await;
    let token = server.token("team-a", false).await;
    let vault = vault(&server);
    let alice = owner("team-a", "alice", "claude");
    vault.seal(&alice, &files()).await.unwrap();
    vault.seal(&alice, &files()).await.unwrap();
    let r = server
        .delete(&token, "/v1/users/alice/credentials/claude")
        .await;
    let gone: CredentialInfo = ok_json(r).await;
    assert_eq!((gone.provider.as_str(), gone.version), ("claude", 2));
    assert_eq!(vault.open_current(&alice).await.unwrap(), None);
    assert_eq!(vault.open_version(&alice, 1).await.unwrap(), None);
    let (status, e, _) = api_error(server.get(&token, "/v1/users/alice/credentials").await).await;
    assert_eq!((status, e.code.as_str()), (404, "not_found"));
    let (status, _, _) = api_error(
        server
            .delete(&token, "/v1/users/alice/credentials/claude")
            .await,
    )
    .await;
    assert_eq!(status, 404);
}
