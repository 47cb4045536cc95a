//! The viewer: a VM's screen in a person's own browser. hearth serves the
//! page itself (`GET /viewer`, with its script), noVNC from the directory
//! the host's setup installed it in (`GET /viewer/novnc/...`; nothing is
//! fetched at run time), the VM's state for the page's messages
//! (`GET /v1/vms/{id}/viewer`), and the screen: `GET /v1/vms/{id}/vnc`, a
//! WebSocket carrying the RFB stream of the VNC server on the guest's
//! loopback, through the agent. Access is hearth's to decide (a viewer
//! link's key, or an API token): no VNC password exists anywhere.
//!
//! A session opened with a viewer link ends when the link expires or is
//! revoked, not only at its next connect.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_types::api::{ApiError, ViewerState};
use hearth_types::{Timestamp, VmId, VmState};

use crate::error::Problem;
use crate::extract::VmPath;
use crate::ports::{shutting_down, upgrade_to_stream};
use crate::{viewer_links, AppState};

/// Where the guest's VNC server listens (on its loopback only).
pub const VNC_PORT: u16 = 5900;
/// How often an open screen re-checks the link that opened it.
const LINK_RECHECK: Duration = Duration::from_secs(5);

const PAGE: &str = include_str!("../viewer/index.html");
const SCRIPT: &str = include_str!("../viewer/viewer.js");

/// Where noVNC is looked for when the server is not told: npm's package
/// as `scripts/setup-host` installs it, then Debian's `novnc` package.
pub const NOVNC_DIRS: &[&str] = &[
    "/usr/local/lib/hearth/novnc/node_modules/@novnc/novnc",
    "/usr/share/novnc",
];

/// The first of [`NOVNC_DIRS`] that holds noVNC (`core/rfb.js`).
pub fn find_novnc() -> Option<PathBuf> {
    NOVNC_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("core/rfb.js").is_file())
}

pub(crate) async fn page() -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    (headers, PAGE).into_response()
}

pub(crate) async fn script() -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    (headers, SCRIPT).into_response()
}

/// A file of noVNC's, by its path inside the package.
pub(crate) async fn novnc_file(
    State(state): State<AppState>,
    UrlPath(path): UrlPath<String>,
) -> Result<Response, Problem> {
    let Some(root) = state.novnc.as_deref() else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "viewer_not_installed",
            format!(
                "noVNC is not installed on this server: run scripts/setup-host (it installs @novnc/novnc from npm into {}), or start hearth serve with --novnc-dir",
                NOVNC_DIRS[0]
            ),
        ));
    };
    let file = inside(root, &path).ok_or_else(|| no_such_file(&path))?;
    let body = tokio::fs::read(&file)
        .await
        .map_err(|_| no_such_file(&path))?;
    let headers = [
        (header::CONTENT_TYPE, content_type(&file)),
        (header::CACHE_CONTROL, "max-age=3600"),
    ];
    Ok((headers, body).into_response())
}

fn no_such_file(path: &str) -> Problem {
    let shown: String = path.chars().take(80).collect();
    Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("noVNC has no file {shown:?}"),
    )
}

/// `path` under `root`, if it names a plain relative path (no `..`, no
/// root, no hidden parts) of safe characters.
fn inside(root: &Path, path: &str) -> Option<PathBuf> {
    let safe = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
    let rel = Path::new(path);
    let plain = rel
        .components()
        .all(|c| matches!(c, Component::Normal(p) if !p.to_string_lossy().starts_with('.')));
    (safe && plain && !path.is_empty()).then(|| root.join(rel))
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// What the viewer page shows before and after the screen: the VM's state
/// and why there is no screen. Takes the link's key in `X-Hearth-Viewer-Key`
/// (or an API token).
#[utoipa::path(
    get,
    path = "/v1/vms/{id}/viewer",
    operation_id = "viewer_state",
    tag = "viewer",
    params(("id" = VmId, Path, description = "The VM's id")),
    responses(
        (status = 200, description = "The VM's state, as its viewer may know it", body = ViewerState),
        (status = 400, description = "`invalid_id`", body = ApiError),
        (status = 401, description = "`unauthorized`: no key, or an unknown, expired or revoked one", body = ApiError),
        (status = 403, description = "`forbidden`: the key is another VM's", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
    ),
    security(("viewer_key" = []), ("token" = []))
)]
pub(crate) async fn state_of(
    State(state): State<AppState>,
    VmPath(id): VmPath,
    headers: HeaderMap,
) -> Result<Json<ViewerState>, Problem> {
    let (scope, expires_at) = viewer_links::screen_scope(&state, &headers, &id).await?;
    let vm = state.controller.vm(&scope, &id).await?;
    let message = match vm.state {
        VmState::Ready => None,
        VmState::Requested | VmState::Preparing | VmState::Booting => {
            Some("The VM is still starting; its screen appears once it is ready.".to_owned())
        }
        other => Some(format!("The VM is {other}: it has no screen any more.")),
    };
    Ok(Json(ViewerState {
        vm: id,
        state: vm.state,
        ready: vm.state == VmState::Ready,
        message,
        expires_at,
    }))
}

/// The VM's screen: a WebSocket carrying the RFB stream of the guest's VNC
/// server (port 5900 on its loopback), binary frames both ways, the
/// `binary` subprotocol answered when offered. A viewer link's key comes
/// as the subprotocol `hearth.viewer.KEY` (never echoed back) or the
/// `X-Hearth-Viewer-Key` header; else an API token. Refused before the
/// upgrade like the port WebSocket; a session opened by a link is closed
/// (1008) once the link expires or is revoked.
#[utoipa::path(
    get,
    path = "/v1/vms/{id}/vnc",
    operation_id = "vnc",
    tag = "viewer",
    params(("id" = VmId, Path, description = "The VM's id")),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol: binary frames carry the RFB stream"),
        (status = 400, description = "`invalid_id` or `not_a_websocket`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 403, description = "`forbidden`: the key is another VM's", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 409, description = "`invalid_state`: the VM is not ready", body = ApiError),
        (status = 502, description = "`port_refused`: the VM runs no VNC server; `agent_unavailable`", body = ApiError),
    ),
    security(("viewer_key" = []), ("token" = []))
)]
pub(crate) async fn vnc(
    State(state): State<AppState>,
    VmPath(id): VmPath,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Problem> {
    let (scope, expires_at) = viewer_links::screen_scope(&state, &headers, &id).await?;
    let upgrade = upgrade.map_err(|e| {
        Problem::bad_request(
            "not_a_websocket",
            format!("{e}: this route is a WebSocket carrying the VM's screen; open the viewer page (`hearth vm view ID`)"),
        )
    })?;
    let stream = state.controller.open_port(&scope, &id, VNC_PORT).await?;
    tracing::info!(vm = %id, "viewer connected");
    let by_link = viewer_links::key_of(&headers).is_some();
    let stop = until_closed(state, headers, id, by_link, expires_at);
    Ok(upgrade_to_stream(upgrade, stream, stop))
}

/// Resolves when the server shuts down or, for a session a link opened,
/// when that link no longer opens this VM's screen.
async fn until_closed(
    state: AppState,
    headers: HeaderMap,
    id: VmId,
    by_link: bool,
    expires_at: Timestamp,
) -> (u16, String) {
    let shutdown = shutting_down(state.shutdown.subscribe());
    if !by_link {
        return shutdown.await;
    }
    let link_gone = async {
        loop {
            let left = expires_at.since(Timestamp::now());
            tokio::time::sleep(left.min(LINK_RECHECK)).await;
            if let Err(p) = viewer_links::screen_scope(&state, &headers, &id).await {
                return (close_code::POLICY, p.message);
            }
        }
    };
    tokio::select! {
        ending = shutdown => ending,
        ending = link_gone => ending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_inside_the_package_are_served() {
        let root = Path::new("/srv/novnc");
        assert_eq!(inside(root, "core/rfb.js"), Some(root.join("core/rfb.js")));
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "core/../../x",
            ".git/config",
            "",
            "a b",
            "core/%2e%2e",
        ] {
            assert_eq!(inside(root, bad), None, "{bad}");
        }
    }
}
