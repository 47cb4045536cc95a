//! Viewer links and the viewer's routes without booting a VM: a real
//! server, real HTTP and a real WebSocket client. A link opens its own VM's
//! viewer state and screen and nothing else; expired, revoked and foreign
//! links are refused; no listing or error shows a key. (The screen itself,
//! in a real browser, is shown on a VM in the CLI's `vm_viewer` test.)

mod common;

use std::time::Duration;

use hearth_server::ServerConfig;
use hearth_types::api::{ViewerLink, ViewerState};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::Error as WsError;

/// A new link for `vm`: (its URL, the key in its fragment).
async fn link(server: &common::Server, token: &str, vm: &str, body: &str) -> (ViewerLink, String) {
    let r = server
        .post(token, &format!("/v1/vms/{vm}/viewer-links"), body)
        .await;
    assert_eq!(r.status().as_u16(), 201);
    let link: ViewerLink = r.json().await.unwrap();
    let url = link.url.clone().expect("the URL, once");
    let key = url
        .split("&key=")
        .nth(1)
        .expect("a key in the fragment")
        .to_owned();
    assert!(url.contains(&format!("/viewer#vm={vm}&key=hvl_")), "{url}");
    (link, key)
}

/// `GET /v1/vms/{vm}/viewer` with `key`: the status and body.
async fn viewer_state(server: &common::Server, vm: &str, key: &str) -> (u16, String) {
    let r = server
        .http
        .get(server.url(&format!("/v1/vms/{vm}/viewer")))
        .header("X-Hearth-Viewer-Key", key)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The VNC WebSocket's refusal, with `key` as its subprotocol.
async fn vnc_refused(server: &common::Server, vm: &str, key: &str) -> u16 {
    let url = server
        .url(&format!("/v1/vms/{vm}/vnc"))
        .replacen("http://", "ws://", 1);
    let mut request = url.into_client_request().unwrap();
    let protocols = format!("binary, hearth.viewer.{key}").parse().unwrap();
    request
        .headers_mut()
        .insert(SEC_WEBSOCKET_PROTOCOL, protocols);
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => panic!("the screen of {vm} opened"),
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn a_viewer_link_opens_its_own_vm_only_until_it_expires_or_is_revoked() {
    let server = common::server(ServerConfig::default()).await;
    let alice = server.token("alice", false).await;
    let bob = server.token("bob", false).await;
    let vm = server.stored_vm("alice").await.to_string();
    let other = server.stored_vm("alice").await.to_string();

    let (made, key) = link(&server, &alice, &vm, "{}").await;
    let (status, body) = viewer_state(&server, &vm, &key).await;
    assert_eq!(status, 200, "{body}");
    let st: ViewerState = serde_json::from_str(&body).unwrap();
    assert!(!st.ready && st.message.unwrap().contains("starting"));
    assert_eq!(st.expires_at, made.expires_at);
    // Not ready: refused before the upgrade, like the port WebSocket.
    assert_eq!(vnc_refused(&server, &vm, &key).await, 409);

    // Another VM, another route, no key: refused.
    assert_eq!(viewer_state(&server, &other, &key).await.0, 403);
    assert_eq!(vnc_refused(&server, &other, &key).await, 403);
    for path in [
        format!("/v1/vms/{vm}"),
        "/v1/vms".to_owned(),
        format!("/v1/vms/{vm}/viewer-links"),
    ] {
        let r = server.get(&key, &path).await;
        assert_eq!(r.status().as_u16(), 401, "{path}");
    }
    assert_eq!(viewer_state(&server, &vm, "hvl_00000000_00").await.0, 401);

    // Listed without keys; another tenant sees neither the VM nor its links.
    let r = server
        .get(&alice, &format!("/v1/vms/{vm}/viewer-links"))
        .await;
    let listing = r.text().await.unwrap();
    assert!(
        listing.contains(&made.id) && !listing.contains(&key),
        "{listing}"
    );
    let secret = key.rsplit('_').next().unwrap();
    assert!(!listing.contains(secret));
    for r in [
        server
            .get(&bob, &format!("/v1/vms/{vm}/viewer-links"))
            .await,
        server
            .post(&bob, &format!("/v1/vms/{vm}/viewer-links"), "{}")
            .await,
    ] {
        assert_eq!(r.status().as_u16(), 404);
    }

    // Revoked: refused at once, and said so.
    let r = server
        .delete(&bob, &format!("/v1/vms/{vm}/viewer-links/{}", made.id))
        .await;
    assert_eq!(r.status().as_u16(), 404);
    let r = server
        .delete(&alice, &format!("/v1/vms/{vm}/viewer-links/{}", made.id))
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let (status, body) = viewer_state(&server, &vm, &key).await;
    assert_eq!(status, 401);
    assert!(body.contains("revoked") && !body.contains(&key), "{body}");

    // Expired: refused, and said so.
    let (_, short) = link(&server, &alice, &vm, r#"{"ttl_secs": 1}"#).await;
    assert_eq!(viewer_state(&server, &vm, &short).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = viewer_state(&server, &vm, &short).await;
    assert_eq!(status, 401);
    assert!(body.contains("expired"), "{body}");

    for bad in [
        r#"{"ttl_secs": 0}"#,
        r#"{"ttl_secs": 86401}"#,
        r#"{"ttl": 5}"#,
    ] {
        let r = server
            .post(&alice, &format!("/v1/vms/{vm}/viewer-links"), bad)
            .await;
        assert_eq!(r.status().as_u16(), 400, "{bad}");
    }
}

#[tokio::test]
async fn the_viewer_page_and_novnc_are_served_without_a_token() {
    let server = common::server(ServerConfig::default()).await;
    let page = server.http.get(server.url("/viewer")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("/viewer/viewer.js"));
    let script = server
        .http
        .get(server.url("/viewer/viewer.js"))
        .send()
        .await
        .unwrap();
    assert!(script.text().await.unwrap().contains("hearth.viewer."));
    let r = server
        .http
        .get(server.url("/viewer/novnc/core/../../etc/passwd"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    if hearth_server::find_novnc().is_none() {
        println!("skipped: noVNC is not installed here (scripts/setup-host installs it)");
        return;
    }
    let rfb = server
        .http
        .get(server.url("/viewer/novnc/core/rfb.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(rfb.status().as_u16(), 200);
    let kind = rfb.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/javascript"), "{kind}");
    assert!(rfb
        .text()
        .await
        .unwrap()
        .contains("export default class RFB"));
}
