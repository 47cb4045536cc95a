//! The OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! attributes and the API types' `ToSchema` derives. It is committed as
//! `openapi/hearth.json`; `tests/openapi_drift.rs` fails when the code and
//! the file disagree.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::Required;
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hearth",
        description = "The HTTP API of `hearth serve`: create Linux microVMs, follow them to ready, \
read their console and events (also after they are destroyed), and destroy them. \
Every error is an `ApiError` whose `code` is stable and whose `message` says what is wrong and how to fix it. \
Every route but `/healthz` and `/health` needs `Authorization: Bearer <token>` (`hearth token create`)."
    ),
    paths(
        crate::healthz,
        crate::vms::create,
        crate::vms::list,
        crate::vms::get,
        crate::vms::destroy,
        crate::vms::hold,
        crate::vms::release,
        crate::vms::stop,
        crate::vms::start,
        crate::vms::events,
        crate::diagnosis::diagnosis,
        crate::exec::exec,
        crate::exec_attach::attach,
        crate::ports::forward,
        crate::viewer_links::create,
        crate::viewer_links::list,
        crate::viewer_links::revoke,
        crate::viewer::state_of,
        crate::viewer::vnc,
        crate::agent::health,
        crate::agent::service_logs,
        crate::agent::boot_report,
        crate::network::network,
        crate::tenant_network::put,
        crate::tenant_network::get,
        crate::tenant_network::delete,
        crate::files::put,
        crate::files::get,
        crate::logs::console,
        crate::logs::hypervisor,
        crate::metrics::metrics,
        crate::tokens::list,
        crate::tokens::revoke,
        crate::credentials::list,
        crate::credentials::delete,
        crate::sessions::start,
        crate::sessions::list,
        crate::sessions::get,
        crate::sessions::cancel,
        crate::sessions::events,
        crate::sessions::egress,
        crate::sessions::providers,
        crate::cli_vms::start,
        crate::cli_vms::get,
        crate::cli_vms::stop,
        crate::cli_vms::delete,
        crate::egress_settings::put_tenant,
        crate::egress_settings::get_tenant,
        crate::egress_settings::delete_tenant,
        crate::egress_settings::put_user,
        crate::egress_settings::get_user,
        crate::egress_settings::delete_user,
        crate::pools::put,
        crate::pools::get,
        crate::pools::list,
        crate::pools::delete,
        crate::legacy::health,
        crate::legacy::auth_start,
        crate::legacy::console_log,
        // Snapshots.
        crate::snapshots::create,
        crate::snapshots::list,
        crate::snapshots::get,
        crate::snapshots::remove,
    ),
    // The exec WebSocket's client frames: no route takes them as a body.
    components(schemas(hearth_types::api::ExecClientMessage)),
    modifiers(&BearerToken, &OptionalBodies),
    tags(
        (name = "vms", description = "VMs and their lifecycle"),
        (name = "agent", description = "What a VM's guest agent reported (health, service output, boot report), and files in and out"),
        (name = "credentials", description = "Users' sealed credentials: metadata only, and deletion"),
        (name = "logs", description = "A VM's console and hypervisor output, live or archived"),
        (name = "server", description = "Health and metrics"),
        (name = "sessions", description = "Login sessions: a user logs in to an AI CLI tool in a browser VM, and the credential is sealed in the vault"),
        (name = "cli", description = "Each user's CLI VM: their AI tools logged in, with the credentials kept live"),
        (name = "legacy", description = "The routes of the controller hearth replaces, for drop-in use"),
        (name = "pools", description = "Warm pools: VMs booted ahead of demand per image, handed out to the creates that fit (admin only)"),
        (name = "tokens", description = "API tokens, listed and revoked (admin only)"),
        (name = "snapshots", description = "Snapshots of running VMs and templates of images; VMs restored from them"),
        (name = "viewer", description = "A VM's screen in a browser: viewer links, the VNC WebSocket"),
    )
)]
struct ApiDoc;

/// The `token` security scheme the routes refer to.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("hth_<8 hex>_<64 hex>".to_owned());
        scheme.description = Some("An API token from `hearth token create`".to_owned());
        components.add_security_scheme("token", SecurityScheme::Http(scheme));
        let key = ApiKeyValue::with_description(
            "X-Hearth-Viewer-Key",
            "A viewer link's key, `hvl_<8 hex>_<64 hex>` (the WebSocket takes it as the subprotocol `hearth.viewer.KEY`)",
        );
        components.add_security_scheme("viewer_key", SecurityScheme::ApiKey(ApiKey::Header(key)));
    }
}

/// The routes whose empty body means `{}` (`JsonBody` reads it so): their
/// body is not required, though a body that is sent must fit the schema.
/// utoipa marks a body optional only by making its schema nullable, and
/// `null` is refused, so this says it instead.
struct OptionalBodies;

/// The `POST` routes that take an empty body.
const OPTIONAL_BODIES: [&str; 2] = ["/v1/vms", "/v1/vms/{id}/viewer-links"];
/// The `PUT` routes that take an empty body (settings cleared to none).
const OPTIONAL_PUT_BODIES: [&str; 3] = [
    "/v1/tenants/{tenant}/egress",
    "/v1/users/{user}/egress",
    "/v1/tenants/{tenant}/network-policy",
];

impl Modify for OptionalBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let paths = &mut openapi.paths.paths;
        for path in OPTIONAL_BODIES {
            let op = paths.get_mut(path).and_then(|i| i.post.as_mut());
            optional(op);
        }
        for path in OPTIONAL_PUT_BODIES {
            let op = paths.get_mut(path).and_then(|i| i.put.as_mut());
            optional(op);
        }
    }
}

fn optional(op: Option<&mut utoipa::openapi::path::Operation>) {
    if let Some(body) = op.and_then(|op| op.request_body.as_mut()) {
        body.required = Some(Required::False);
    }
}

/// The API's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    // The crate's version would make every release a drift; the API has its own.
    doc.info.version = "1".to_owned();
    doc
}

/// [`openapi`] as the pretty JSON committed in `openapi/hearth.json`.
pub fn openapi_json() -> String {
    let mut text = openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()));
    text.push('\n');
    text
}
