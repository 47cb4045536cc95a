//! The port WebSocket's checks before the upgrade, without booting a VM:
//! a real server and a real WebSocket client. The token, the tenant, the
//! VM's state and the port are refused as ordinary HTTP errors. (What
//! flows after the upgrade is shown on real VMs in the CLI's `vm_agent`
//! tests, through `hearth vm port-forward`.)

mod common;

use hearth_server::ServerConfig;
use hearth_types::api::ApiError;

async fn refused(server: &common::Server, token: Option<&str>, path: &str) -> (u16, ApiError) {
    common::websocket_refused(server, token, path).await
}

#[tokio::test]
async fn the_port_websocket_refuses_before_the_upgrade() {
    let server = common::server(ServerConfig::default()).await;
    let alice = server.token("alice", false).await;
    let bob = server.token("bob", false).await;
    let id = server.stored_vm("alice").await.to_string();
    let path = format!("/v1/vms/{id}/ports/8080");

    let (status, e) = refused(&server, None, &path).await;
    assert_eq!((status, e.code.as_str()), (401, "unauthorized"));

    let (status, e) = refused(&server, Some(&bob), &path).await;
    assert_eq!((status, e.code.as_str()), (404, "not_found"), "{e:?}");

    let (status, e) = refused(&server, Some(&alice), &path).await;
    assert_eq!((status, e.code.as_str()), (409, "invalid_state"), "{e:?}");
    assert!(e.message.contains("not ready"), "{}", e.message);

    for bad in ["0", "65536", "http", "-1", "8o"] {
        let (status, e) =
            refused(&server, Some(&alice), &format!("/v1/vms/{id}/ports/{bad}")).await;
        assert_eq!(
            (status, e.code.as_str()),
            (400, "invalid_port"),
            "{bad}: {e:?}"
        );
        assert!(e.message.contains("1 to 65535"), "{}", e.message);
    }
    let (status, e) = refused(&server, Some(&alice), "/v1/vms/not-an-id/ports/80").await;
    assert_eq!((status, e.code.as_str()), (400, "invalid_id"), "{e:?}");

    let r = server.get(&alice, &path).await;
    assert_eq!(r.status().as_u16(), 400);
    let e: ApiError = r.json().await.unwrap();
    assert_eq!(e.code, "not_a_websocket");
}
