//! The exec WebSocket's checks before the upgrade, without booting a VM:
//! a real server and a real WebSocket client. Everything that can be
//! refused is an ordinary HTTP error, never a socket that opens and then
//! closes. (What happens after the upgrade is in `api_exec.rs`, on a VM.)

mod common;

use hearth_server::ServerConfig;
use hearth_types::api::ApiError;

/// The exec WebSocket's refusal for VM `id`.
async fn refused(server: &common::Server, token: Option<&str>, id: &str) -> (u16, ApiError) {
    common::websocket_refused(server, token, &format!("/v1/vms/{id}/exec/attach")).await
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
