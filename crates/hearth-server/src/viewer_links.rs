//! Viewer links: `POST /v1/vms/{id}/viewer-links` makes an unguessable URL
//! that lets a person with no API token watch and click one VM's screen,
//! for a limited time; `GET` lists a VM's links (never their secrets) and
//! `DELETE .../{link}` revokes one at once.
//!
//! A link's key is `hvl_<8 hex id>_<64 hex secret>`. Like a token, only
//! its SHA-256 is stored. The key travels in the URL's fragment
//! (`/viewer#vm=ID&key=KEY`), which browsers never send to a server, so it
//! is in no access log; the viewer page hands it to the server in a header
//! (`X-Hearth-Viewer-Key`) or, for the WebSocket (whose browser API sends
//! no headers), as a subprotocol `hearth.viewer.KEY` that is never echoed
//! back. The key opens that VM's screen and its viewer state, nothing else:
//! as a bearer token it is no token at all.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use hearth_control::controller::Scope;
use hearth_store::ViewerLinkRecord;
use hearth_types::api::{ApiError, CreateViewerLink, ViewerLink};
use hearth_types::{Timestamp, VmId};

use crate::error::Problem;
use crate::extract::{Caller, JsonBody, VmPath};
use crate::{auth, params, AppState};

const PREFIX: &str = "hvl_";
const ID_HEX: usize = 8;
const SECRET_HEX: usize = 64;
/// The header a viewer page sends its key in.
pub(crate) const KEY_HEADER: &str = "x-hearth-viewer-key";
/// The WebSocket subprotocol prefix that carries a key.
pub(crate) const KEY_PROTOCOL: &str = "hearth.viewer.";

/// Makes a viewer link for the VM; its URL (with the key) is in this
/// answer only.
#[utoipa::path(
    post,
    path = "/v1/vms/{id}/viewer-links",
    operation_id = "create_viewer_link",
    tag = "viewer",
    params(("id" = VmId, Path, description = "The VM's id")),
    request_body(content = CreateViewerLink, description = "Optional: an empty body is `{}`"),
    responses(
        (status = 201, description = "The link, with its URL", body = ViewerLink),
        (status = 400, description = "`invalid_id` or `invalid_request`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateViewerLink>,
) -> Result<(StatusCode, Json<ViewerLink>), Problem> {
    let ttl = body
        .ttl()
        .map_err(|why| Problem::bad_request("invalid_request", why))?;
    let vm = state.controller.vm(&scope, &id).await?;
    let link = make(&state, &headers, id, vm.tenant, ttl).await?;
    Ok((StatusCode::CREATED, Json(link)))
}

/// Makes and stores a link to VM `id` of `tenant` for `ttl`: the link with
/// its URL (the only time the key is shown).
pub(crate) async fn make(
    state: &AppState,
    headers: &HeaderMap,
    id: VmId,
    tenant: hearth_types::TenantId,
    ttl: std::time::Duration,
) -> Result<ViewerLink, Problem> {
    let (key, record) = mint(id.clone(), tenant, Timestamp::now().plus(ttl));
    let store = state.controller.store();
    store
        .insert_viewer_link(&record)
        .await
        .map_err(|e| Problem::internal(&e))?;
    tracing::info!(vm = %id, link = %record.id, "viewer link made");
    let mut link = info(&record);
    link.url = Some(format!(
        "{}/viewer#vm={id}&key={key}",
        base_url(state, headers)
    ));
    Ok(link)
}

/// The VM's viewer links, oldest first: never their keys.
#[utoipa::path(
    get,
    path = "/v1/vms/{id}/viewer-links",
    operation_id = "list_viewer_links",
    tag = "viewer",
    params(("id" = VmId, Path, description = "The VM's id")),
    responses(
        (status = 200, description = "The links, revoked and expired ones too", body = [ViewerLink]),
        (status = 400, description = "`invalid_id`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
) -> Result<Json<Vec<ViewerLink>>, Problem> {
    state.controller.vm(&scope, &id).await?;
    let links = state.controller.store().viewer_links(&id).await;
    let links = links.map_err(|e| Problem::internal(&e))?;
    Ok(Json(links.iter().map(info).collect()))
}

/// Revokes a viewer link: from now on it opens nothing.
#[utoipa::path(
    delete,
    path = "/v1/vms/{id}/viewer-links/{link}",
    operation_id = "revoke_viewer_link",
    tag = "viewer",
    params(
        ("id" = VmId, Path, description = "The VM's id"),
        ("link" = String, Path, description = "The link's id, `hvl_` and 8 hex digits", pattern = "^hvl_[0-9a-f]{8}$"),
    ),
    responses(
        (status = 200, description = "The link, revoked", body = ViewerLink),
        (status = 400, description = "`invalid_id` or `invalid_request`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`: no such VM, or no such link of it", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<ViewerLink>, Problem> {
    let (id, link) = vm_and_link(path)?;
    state.controller.vm(&scope, &id).await?;
    let store = state.controller.store();
    let revoked = store.revoke_viewer_link(&id, &link, Timestamp::now()).await;
    let revoked = revoked.map_err(|e| Problem::internal(&e))?;
    let revoked = revoked.ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("VM {id} has no viewer link {link} (`hearth vm view {id} --list` lists them)"),
        )
    })?;
    tracing::info!(vm = %id, link = %link, "viewer link revoked");
    Ok(Json(info(&revoked)))
}

fn vm_and_link(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(VmId, String), Problem> {
    let Path((raw_id, link)) = path.map_err(|e| {
        Problem::bad_request(
            "invalid_request",
            format!(
                "the path is unreadable ({}): use /v1/vms/ID/viewer-links/LINK",
                e.body_text()
            ),
        )
    })?;
    let id = params::vm_id(&raw_id)?;
    if !is_link_id(&link) {
        return Err(Problem::bad_request(
            "invalid_request",
            "a viewer link's id is `hvl_` and 8 hex digits, e.g. hvl_3f9a1c2b (the part of the key before its second `_`)",
        ));
    }
    Ok((id, link))
}

/// A new key for VM `vm` of `tenant`, valid until `expires_at`, and its
/// record to store.
fn mint(
    vm: VmId,
    tenant: hearth_types::TenantId,
    expires_at: Timestamp,
) -> (String, ViewerLinkRecord) {
    let id = format!(
        "{PREFIX}{}",
        hex::encode(rand::random::<[u8; ID_HEX / 2]>())
    );
    let secret = hex::encode(rand::random::<[u8; SECRET_HEX / 2]>());
    let key = format!("{id}_{secret}");
    let record = ViewerLinkRecord {
        id,
        secret_sha256: auth::sha256_of(&key),
        vm,
        tenant,
        created_at: Timestamp::now(),
        expires_at,
        revoked_at: None,
    };
    (key, record)
}

fn info(r: &ViewerLinkRecord) -> ViewerLink {
    ViewerLink {
        id: r.id.clone(),
        vm: r.vm.clone(),
        url: None,
        created_at: r.created_at,
        expires_at: r.expires_at,
        revoked_at: r.revoked_at,
    }
}

fn is_link_id(id: &str) -> bool {
    id.strip_prefix(PREFIX)
        .is_some_and(|h| h.len() == ID_HEX && is_hex(h))
}

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `key` has a key's shape (checked before any lookup).
fn is_key(key: &str) -> bool {
    match key
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('_'))
    {
        Some((id, secret)) => {
            id.len() == ID_HEX && secret.len() == SECRET_HEX && is_hex(id) && is_hex(secret)
        }
        None => false,
    }
}

/// Where the server is reached, for the link's URL: `--public-url` when
/// set, else the request's own `Host`.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("127.0.0.1:7070");
    format!("http://{host}")
}

/// The key a request carries: the viewer header, or a `hearth.viewer.`
/// WebSocket subprotocol.
pub(crate) fn key_of(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(KEY_HEADER).and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_owned());
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(KEY_PROTOCOL).map(str::to_owned))
}

/// Who may see VM `id`'s screen: the holder of a valid key for it (as the
/// VM's tenant, never an admin), or else the request's API token.
pub(crate) async fn screen_scope(
    state: &AppState,
    headers: &HeaderMap,
    id: &VmId,
) -> Result<(Scope, Timestamp), Problem> {
    let Some(key) = key_of(headers) else {
        let scope = auth::token_scope(state, headers).await?;
        return Ok((scope, Timestamp::from_millis(i64::MAX)));
    };
    let refused = |why: &str| {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("{why}: ask whoever gave you the link for a new one (`hearth vm view ID`)"),
        )
    };
    if !is_key(&key) {
        return Err(refused("this is not a viewer link's key"));
    }
    let found = state
        .controller
        .store()
        .viewer_link_by_hash(&auth::sha256_of(&key))
        .await;
    let link = found
        .map_err(|e| Problem::internal(&e))?
        .ok_or_else(|| refused("this viewer link is not known"))?;
    if &link.vm != id {
        return Err(Problem::forbidden(
            "this viewer link opens another VM's screen, not this one's",
        ));
    }
    if link.revoked_at.is_some() {
        return Err(refused("this viewer link was revoked"));
    }
    if !link.is_valid(Timestamp::now()) {
        return Err(refused("this viewer link has expired"));
    }
    let scope = Scope {
        tenant: link.tenant,
        admin: false,
    };
    Ok((scope, link.expires_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ids_have_their_shapes() {
        let vm: VmId = "vm-000000000001".parse().unwrap();
        let (key, record) = mint(vm, "team-a".parse().unwrap(), Timestamp::from_millis(5));
        assert!(is_key(&key), "{key}");
        assert!(key.starts_with(&record.id) && is_link_id(&record.id));
        assert_eq!(record.secret_sha256, auth::sha256_of(&key));
        assert!(!is_key(&record.id));
        assert!(!is_key(&key.replace("hvl_", "hth_")));
        assert!(!is_link_id("hvl_XYZ"));
    }

    #[test]
    fn a_key_is_read_from_its_header_or_a_subprotocol() {
        let mut h = HeaderMap::new();
        assert_eq!(key_of(&h), None);
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "binary, hearth.viewer.hvl_k".parse().unwrap(),
        );
        assert_eq!(key_of(&h).as_deref(), Some("hvl_k"));
        h.insert(KEY_HEADER, " hvl_h ".parse().unwrap());
        assert_eq!(key_of(&h).as_deref(), Some("hvl_h"));
    }
}
