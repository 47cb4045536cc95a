//! The exec WebSocket's checks before the upgrade, without booting a VM:
//! a real server and a real WebSocket client. Everything that can be
//! refused is an ordinary HTTP error, never a socket that opens and then
//! closes. (What happens after the upgrade is in `api_exec.rs`, on a VM.)

mod common;

use hearth_server::ServerConfig;
use hearth_types::api::ApiError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::Error as WsError;

/// Tries the WebSocket handshake; the HTTP status and error it was refused
/// with.
async fn refused(server: &common::Server, token: Option<&str>, id: &str) -> (u16, ApiError) {
    let url = server
        .url(&format!("/v1/vms/{id}/exec/attach"))
        .replacen("http://", "ws://", 1);
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().unwrap();
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => panic!("the upgrade to {id} was accepted"),
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let error = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
            (response.status().as_u16(), error)
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn the_exec_websocket_refuses_before_the_upgrade() {
    let server = common::server(ServerConfig::default()).await;
    let alice = server.token("alice", false).await;
    let bob = server.token("bob", false).await;
    let id = server.stored_vm("alice").await.to_string();

    let (status, e) = refused(&server, None, &id).await;
    assert_eq!((status, e.code.as_str()), (401, "unauthorized"));

    // Another tenant's VM does not exist for bob.
    let (status, e) = refused(&server, Some(&bob), &id).await;
    assert_eq!((status, e.code.as_str()), (404, "not_found"), "{e:?}");

    // Not ready: 409 naming the state, as for POST exec.
    let (status, e) = refused(&server, Some(&alice), &id).await;
    assert_eq!((status, e.code.as_str()), (409, "invalid_state"), "{e:?}");
    assert!(e.message.contains("not ready"), "{}", e.message);

    let (status, e) = refused(&server, Some(&alice), "not-an-id").await;
    assert_eq!((status, e.code.as_str()), (400, "invalid_id"), "{e:?}");

    // A plain GET is told that this is a WebSocket.
    let r = server
        .get(&alice, &format!("/v1/vms/{id}/exec/attach"))
        .await;
    assert_eq!(r.status().as_u16(), 400);
    let e: ApiError = r.json().await.unwrap();
    assert_eq!(e.code, "not_a_websocket");
    assert!(e.message.contains("Upgrade: websocket"), "{}", e.message);
}
