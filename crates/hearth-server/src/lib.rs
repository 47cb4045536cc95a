//! The HTTP API of `hearth serve`, over a [`Controller`]. This crate only
//! translates: it parses requests into typed calls (ids, line counts,
//! bodies), checks the caller's token and rate, runs the call on the
//! controller and turns the answer, or the error, into JSON. Every error is
//! an [`ApiError`](hearth_types::api::ApiError) that says what is wrong and
//! how to fix it.
//!
//! The routes are documented once, on their handlers; [`openapi`] builds the
//! document committed as `openapi/hearth.json` (a test fails when it
//! drifts). `docs/api.md` describes the API for people.

mod agent;
mod auth;
mod credentials;
mod diagnosis;
mod egress_settings;
mod error;
mod exec;
mod exec_attach;
mod extract;
mod files;
mod legacy;
mod logs;
mod metrics;
mod network;
mod observe;
mod openapi;
mod params;
mod pools;
mod ports;
mod rate;
mod sessions;
mod snapshots;
// Users' CLI VMs.
pub mod cli_vms;
mod tenant_network;
mod tokens;
mod viewer;
mod viewer_links;
mod vms;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use hearth_control::controller::Controller;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use self::auth::{mint_token, LAST_USE_EVERY};
pub use self::openapi::{openapi, openapi_json};
pub use self::viewer::{find_novnc, NOVNC_DIRS, VNC_PORT};

/// Where `hearth serve` listens unless told: loopback, since the API speaks
/// plain HTTP, so anything wider belongs behind a TLS proxy, chosen on
/// purpose. The CLI's `--listen` default is this same value.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    7070,
));

/// How `hearth serve` listens and what it accepts.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Per token.
    pub rate_limit: RateLimit,
    /// Larger request bodies are refused with 413 `body_too_large`.
    pub max_body_bytes: usize,
    /// Where noVNC is (its `core/rfb.js` inside); `None`: the first of
    /// [`NOVNC_DIRS`] that has it.
    pub novnc_dir: Option<std::path::PathBuf>,
    /// The URL people reach this server at, for viewer links (behind a
    /// proxy, say); `None`: the `Host` the request came to.
    pub public_url: Option<String>,
    /// Login sessions (`/v1/sessions`); `None`: those routes answer 503.
    pub sessions: Option<hearth_sessions::Sessions>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN,
            rate_limit: RateLimit::default(),
            max_body_bytes: 64 * 1024,
            novnc_dir: None,
            public_url: None,
            sessions: None,
        }
    }
}

/// At most `requests` per `per` for one token, refilled continuously (a
/// token bucket): a burst of `requests` is allowed, then one request every
/// `per / requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// At least 1; 0 is treated as 1.
    pub requests: u32,
    pub per: Duration,
}

impl Default for RateLimit {
    /// 1000 requests per 15 minutes, the limit of the system hearth replaces.
    fn default() -> Self {
        RateLimit {
            requests: 1000,
            per: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("could not listen on {addr} (is another server using it? choose another address)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// What every handler shares.
#[derive(Debug, Clone)]
struct AppState(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    controller: Arc<Controller>,
    limiter: rate::Limiter,
    metrics: metrics::RequestMetrics,
    max_body_bytes: usize,
    /// Set to true when the server shuts down, so that console streams,
    /// which would otherwise run forever, end and let it finish.
    shutdown: watch::Sender<bool>,
    /// noVNC's files, for the viewer; `None`: not installed.
    novnc: Option<std::path::PathBuf>,
    public_url: Option<String>,
    sessions: Option<hearth_sessions::Sessions>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The API's routes over `controller`. The caller runs the controller's
/// reconcilers ([`Controller::start`]).
pub fn router(controller: Arc<Controller>, config: &ServerConfig) -> Router {
    build(controller, config).0
}

fn build(controller: Arc<Controller>, config: &ServerConfig) -> (Router, AppState) {
    let state = AppState(Arc::new(Shared {
        controller,
        limiter: rate::Limiter::new(config.rate_limit),
        metrics: metrics::RequestMetrics::default(),
        max_body_bytes: config.max_body_bytes,
        shutdown: watch::Sender::new(false),
        novnc: config.novnc_dir.clone().or_else(viewer::find_novnc),
        public_url: config.public_url.clone(),
        sessions: config.sessions.clone(),
    }));
    let authenticated = Router::new()
        .route("/v1/vms", post(vms::create).get(vms::list))
        .route("/v1/vms/{id}", get(vms::get).delete(vms::destroy))
        .route("/v1/vms/{id}/hold", post(vms::hold))
        .route("/v1/vms/{id}/release", post(vms::release))
        .route("/v1/vms/{id}/stop", post(vms::stop))
        .route("/v1/vms/{id}/start", post(vms::start))
        .route("/v1/vms/{id}/events", get(vms::events))
        .route("/v1/vms/{id}/diagnosis", get(diagnosis::diagnosis))
        .route("/v1/vms/{id}/exec", post(exec::exec))
        .route("/v1/vms/{id}/exec/attach", get(exec_attach::attach))
        .route("/v1/vms/{id}/ports/{port}", get(ports::forward))
        .route("/v1/vms/{id}/health", get(agent::health))
        .route(
            "/v1/vms/{id}/services/{name}/logs",
            get(agent::service_logs),
        )
        .route("/v1/vms/{id}/boot-report", get(agent::boot_report))
        .route("/v1/vms/{id}/network", get(network::network))
        .route(
            "/v1/vms/{id}/files",
            // The body is read by the handler, up to the file bound.
            put(files::put)
                .get(files::get)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/vms/{id}/console", get(logs::console))
        .route("/v1/vms/{id}/logs/hypervisor", get(logs::hypervisor))
        .route(
            "/v1/vms/{id}/viewer-links",
            post(viewer_links::create).get(viewer_links::list),
        )
        .route(
            "/v1/vms/{id}/viewer-links/{link}",
            delete(viewer_links::revoke),
        )
        .route("/v1/users/{user}/credentials", get(credentials::list))
        .route(
            "/v1/users/{user}/credentials/{provider}",
            delete(credentials::delete),
        )
        .route("/v1/sessions", post(sessions::start).get(sessions::list))
        .route("/v1/sessions/{id}", get(sessions::get))
        .route("/v1/sessions/{id}/cancel", post(sessions::cancel))
        .route("/v1/sessions/{id}/events", get(sessions::events))
        .route("/v1/sessions/{id}/egress", get(sessions::egress))
        .route("/v1/providers", get(sessions::providers))
        // Users' CLI VMs.
        .route(
            "/v1/cli/{user}",
            post(cli_vms::start)
                .get(cli_vms::get)
                .delete(cli_vms::delete),
        )
        .route("/v1/cli/{user}/stop", post(cli_vms::stop))
        .route(
            "/v1/tenants/{tenant}/egress",
            put(egress_settings::put_tenant)
                .get(egress_settings::get_tenant)
                .delete(egress_settings::delete_tenant),
        )
        .route(
            "/v1/tenants/{tenant}/network-policy",
            put(tenant_network::put)
                .get(tenant_network::get)
                .delete(tenant_network::delete),
        )
        .route(
            "/v1/users/{user}/egress",
            put(egress_settings::put_user)
                .get(egress_settings::get_user)
                .delete(egress_settings::delete_user),
        )
        .route("/api/auth/start", post(legacy::auth_start))
        .route("/api/vm/{id}/console-log", get(legacy::console_log))
        // Snapshots.
        .route(
            "/v1/snapshots",
            post(snapshots::create).get(snapshots::list),
        )
        .route(
            "/v1/snapshots/{name}",
            get(snapshots::get).delete(snapshots::remove),
        )
        // Warm pools (issue 11).
        .route("/v1/pools", get(pools::list))
        .route(
            "/v1/pools/{image}",
            put(pools::put).get(pools::get).delete(pools::delete),
        )
        .route("/v1/tokens", get(tokens::list))
        .route("/v1/tokens/{id}", delete(tokens::revoke))
        .route("/metrics", get(metrics::metrics))
        .route_layer(from_fn_with_state(state.clone(), auth::authenticate));
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/health", get(legacy::health))
        .route("/openapi.json", get(openapi_document))
        // A viewer link's key or an API token, checked by the handlers.
        .route("/v1/vms/{id}/viewer", get(viewer::state_of))
        .route("/v1/vms/{id}/vnc", get(viewer::vnc))
        .route("/viewer", get(viewer::page))
        .route("/viewer/viewer.js", get(viewer::script))
        .route("/viewer/novnc/{*path}", get(viewer::novnc_file))
        .merge(authenticated)
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(from_fn_with_state(state.clone(), observe::observe))
        .with_state(state.clone());
    (router, state)
}

/// Binds `config.listen` and serves until `shutdown` resolves. Running VMs
/// are left alone: they are detached, and the next controller adopts them.
pub async fn serve(
    controller: Arc<Controller>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    serve_on(listener, controller, config, shutdown).await
}

/// [`serve`] on a listener already bound (tests bind port 0);
/// `config.listen` is ignored. On shutdown the server stops accepting,
/// ends console streams and finishes the requests in flight.
pub async fn serve_on(
    listener: TcpListener,
    controller: Arc<Controller>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (router, state) = build(controller, &config);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving the hearth API");
    }
    let stop = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing requests in flight; VMs keep running");
        state.shutdown.send_replace(true);
    };
    // Interactive exec sends small frames one after another (output, then
    // the exit): with Nagle's algorithm each waits for the client's delayed
    // ACK, 40 ms.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
        .map_err(ServerError::Serve)
}

/// The body of `GET /healthz`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct Health {
    /// Always `ok` when the server answers.
    status: &'static str,
}

/// Liveness: answers without a token.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "server",
    responses((status = 200, description = "The server is up", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// This API's OpenAPI document (the same as `openapi/hearth.json`).
async fn openapi_document() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The library's default, the CLI's (`DEFAULT_LISTEN` too) and what
    /// docs/api.md tells people are one address.
    #[test]
    fn the_documented_default_address_is_the_real_one() {
        assert_eq!(ServerConfig::default().listen, DEFAULT_LISTEN);
        assert_eq!(DEFAULT_LISTEN.to_string(), "127.0.0.1:7070");
        let doc = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md");
        let doc = std::fs::read_to_string(doc).expect("docs/api.md");
        assert!(
            doc.contains(&format!("listens on `{DEFAULT_LISTEN}` by default")),
            "docs/api.md does not give {DEFAULT_LISTEN} as the default address"
        );
    }
}
