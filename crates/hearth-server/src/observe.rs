//! One log line and one latency observation per request, by route
//! template (`/v1/vms/{id}`), never by raw path, so neither the logs'
//! fields nor the metrics' labels grow with what clients send. Headers,
//! and so tokens, are never logged.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use hearth_types::VmId;

use crate::AppState;

/// The label of requests no route matched.
const UNMATCHED: &str = "unmatched";

pub(crate) async fn observe(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let route = route.as_deref().unwrap_or(UNMATCHED).to_owned();
    let vm = vm_of(&route, request.uri().path());
    let response = next.run(request).await;
    let took = started.elapsed();
    let status = response.status();
    state.metrics.observe(&route, status, took);
    tracing::info!(
        method = %method,
        route = %route,
        status = status.as_u16(),
        latency_ms = took.as_secs_f64() * 1000.0,
        vm = vm.as_ref().map(tracing::field::display),
        "request"
    );
    response
}

/// The VM id of a route with `{id}`, when the path holds a valid one.
fn vm_of(route: &str, path: &str) -> Option<VmId> {
    let index = route.split('/').position(|s| s == "{id}")?;
    path.split('/').nth(index)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vm_id_comes_from_the_routes_id_segment() {
        let id = vm_of("/v1/vms/{id}/console", "/v1/vms/vm-3f9a/console");
        assert_eq!(id.unwrap().as_str(), "vm-3f9a");
        assert_eq!(vm_of("/v1/vms/{id}", "/v1/vms/..%2Fx"), None);
        assert_eq!(vm_of("/v1/vms", "/v1/vms"), None);
    }
}
