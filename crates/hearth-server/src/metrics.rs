//! `GET /metrics` in the Prometheus text format (version 0.0.4): VMs by
//! state, boot times, pending cleanup, VMs created and cleaned, warm pools, and the
//! API's own latency by route template and status class. The format is
//! simple enough to write by hand. The series count every tenant's VMs, so
//! only admin tokens may read them: a tenant's token would otherwise learn
//! what other tenants run.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hearth_control::controller::pool::PoolCounts;
use hearth_control::controller::{ControlError, Controller};
use hearth_store::VmFilter;
use hearth_types::api::ApiError;
use hearth_types::histogram::Histogram;
use hearth_types::pool::PoolVmState;
use hearth_types::VmState;

use crate::error::Problem;
use crate::extract::Caller;
use crate::AppState;

/// Upper bounds of the request latency buckets, seconds.
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `_bucket`, `_sum` and `_count` lines of `h`; `labels` is `a="b",`
/// or empty.
fn write_histogram(h: &Histogram, out: &mut String, name: &str, labels: &str) {
    for (bound, count) in h.buckets() {
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {count}");
    }
    let count = h.count();
    let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
    let labels = labels.trim_end_matches(',');
    let braces = |l: &str| {
        if l.is_empty() {
            String::new()
        } else {
            format!("{{{l}}}")
        }
    };
    let _ = writeln!(out, "{name}_sum{} {}", braces(labels), h.sum());
    let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
}

/// Latency of the API's requests, by route template and status class.
#[derive(Debug, Default)]
pub(crate) struct RequestMetrics {
    by_route: Mutex<BTreeMap<(String, &'static str), Histogram>>,
}

impl RequestMetrics {
    pub fn observe(&self, route: &str, status: StatusCode, took: Duration) {
        let mut map = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((route.to_owned(), status_class(status)))
            .or_insert_with(|| Histogram::new(REQUEST_BUCKETS))
            .observe(took.as_secs_f64());
    }

    fn write(&self, out: &mut String) {
        let name = "hearth_api_request_duration_seconds";
        header_lines(
            out,
            name,
            "histogram",
            "Time to answer an API request (to the response head), by route template and status class.",
        );
        let map = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        for ((route, class), h) in map.iter() {
            let labels = format!("route=\"{}\",status=\"{class}\",", escape(route));
            write_histogram(h, out, name, &labels);
        }
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A label value: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header_lines(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The whole exposition.
async fn render(ctl: &Controller, requests: &RequestMetrics) -> Result<String, ControlError> {
    let store = ctl.store();
    let vms = store.list_vms(&VmFilter::default()).await?;
    let pending = store.count_pending_jobs().await?;
    let counters = ctl.counters();
    let mut out = String::new();

    header_lines(
        &mut out,
        "hearth_vms",
        "gauge",
        "VMs known to the store, by state.",
    );
    for state in VmState::ALL {
        let n = vms.iter().filter(|r| r.vm.state == state).count();
        let _ = writeln!(out, "hearth_vms{{state=\"{state}\"}} {n}");
    }

    let boot = counters
        .boot_seconds
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    header_lines(
        &mut out,
        "hearth_boot_seconds",
        "histogram",
        "Seconds from a VM's creation to its guest reporting ready.",
    );
    write_histogram(&boot, &mut out, "hearth_boot_seconds", "");

    let gauges = [
        (
            "hearth_cleanup_jobs_pending",
            "gauge",
            "Cleanup jobs waiting to run.",
            pending,
        ),
        (
            "hearth_vms_created_total",
            "counter",
            "VMs created since the server started.",
            counters.created.load(Ordering::Relaxed),
        ),
        (
            "hearth_vms_cleaned_total",
            "counter",
            "VMs destroyed since the server started.",
            counters.cleaned.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, value) in gauges {
        header_lines(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }

    write_pools(ctl, &mut out).await?;
    requests.write(&mut out);
    Ok(out)
}

/// A pool counter's name, help and value.
type PoolSeries = (&'static str, &'static str, fn(&PoolCounts) -> u64);

/// Warm pools: their VMs by image and state, and what they did.
async fn write_pools(ctl: &Controller, out: &mut String) -> Result<(), ControlError> {
    let pools = ctl.list_pools().await?;
    header_lines(
        out,
        "hearth_pool_vms",
        "gauge",
        "VMs waiting in (or booting into) a warm pool, by image and state.",
    );
    for pool in &pools {
        for state in [PoolVmState::Booting, PoolVmState::Waiting] {
            let n = pool.vms.iter().filter(|v| v.state == state).count();
            let image = escape(&pool.image);
            let _ = writeln!(
                out,
                "hearth_pool_vms{{image=\"{image}\",state=\"{}\"}} {n}",
                state.as_str()
            );
        }
    }
    let counts = ctl.pool_counts();
    let series: [PoolSeries; 4] = [
        ("hearth_pool_handouts_total", "Creates served by a pooled VM, by image.", |c| c.handed_out),
        ("hearth_pool_cold_total", "Creates for a pooled image that booted cold (none waiting, or it did not fit), by image.", |c| c.cold),
        ("hearth_pool_boots_total", "Pooled VMs started, by image.", |c| c.boots),
        ("hearth_pool_expired_total", "Pooled VMs removed unused (time to live, changed assets, pool shrunk or removed), by image.", |c| c.expired),
    ];
    for (name, help, value) in series {
        header_lines(out, name, "counter", help);
        for (image, c) in &counts {
            let _ = writeln!(out, "{name}{{image=\"{}\"}} {}", escape(image), value(c));
        }
    }
    Ok(())
}

/// Metrics for Prometheus, over every tenant: admin tokens only.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "server",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 403, description = "`forbidden`: the token is not an admin token", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn metrics(
    State(state): State<AppState>,
    Caller(scope): Caller,
) -> Result<Response, Problem> {
    if !scope.admin {
        return Err(Problem::forbidden(
            "the metrics count every tenant's VMs, so they need an admin token: \
             scrape with one made by `hearth token create --admin`",
        ));
    }
    let text = render(&state.controller, &state.metrics).await?;
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_inf_sum_and_count() {
        let mut h = Histogram::new(&[1.0, 5.0]);
        for v in [0.5, 3.0, 7.0] {
            h.observe(v);
        }
        let mut out = String::new();
        write_histogram(&h, &mut out, "x", "route=\"/a\",");
        assert_eq!(
            out,
            "x_bucket{route=\"/a\",le=\"1\"} 1\n\
             x_bucket{route=\"/a\",le=\"5\"} 2\n\
             x_bucket{route=\"/a\",le=\"+Inf\"} 3\n\
             x_sum{route=\"/a\"} 10.5\n\
             x_count{route=\"/a\"} 3\n"
        );
        let mut out = String::new();
        write_histogram(&Histogram::new(&[1.0]), &mut out, "y", "");
        assert!(out.contains("y_bucket{le=\"1\"} 0\n") && out.contains("y_count 0\n"));
    }

    #[test]
    fn requests_are_grouped_by_route_and_status_class() {
        let m = RequestMetrics::default();
        let ms = Duration::from_millis(3);
        m.observe("/v1/vms/{id}", StatusCode::OK, ms);
        m.observe("/v1/vms/{id}", StatusCode::NO_CONTENT, ms);
        m.observe("/v1/vms/{id}", StatusCode::NOT_FOUND, ms);
        let mut out = String::new();
        m.write(&mut out);
        assert!(out.contains(
            "hearth_api_request_duration_seconds_count{route=\"/v1/vms/{id}\",status=\"2xx\"} 2"
        ));
        assert!(out.contains("status=\"4xx\"} 1"), "{out}");
        assert_eq!(escape("a\"b\\"), "a\\\"b\\\\");
    }
}
