//! Prometheus metrics: the process-wide recorder, the metric names, and the HTTP middleware.
//!
//! Labels are route templates (`/v1/jobs/{id}`) and operation names, never raw paths or ids, so the
//! number of series stays bounded.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "patchbay_http_requests_total";
pub const HTTP_DURATION: &str = "patchbay_http_request_duration_seconds";
pub const GENESYS_CALLS: &str = "patchbay_genesys_calls_total";
pub const GENESYS_DURATION: &str = "patchbay_genesys_call_duration_seconds";
pub const TOKEN_GRANTS: &str = "patchbay_token_grants_total";
pub const RETRIES: &str = "patchbay_genesys_retries_total";
pub const VERIFICATIONS: &str = "patchbay_verifications_total";
pub const QUEUE_DEPTH: &str = "patchbay_queue_depth";
pub const QUEUE_RUNNING: &str = "patchbay_queue_running";
pub const QUEUE_OLDEST_AGE: &str = "patchbay_queue_oldest_job_age_seconds";
pub const DEAD_LETTERS: &str = "patchbay_dead_letters";
pub const JOBS_FINISHED: &str = "patchbay_jobs_finished_total";
pub const RATE_BUDGET_WAITS: &str = "patchbay_rate_budget_waits_total";
pub const REDIS_FALLBACKS: &str = "patchbay_redis_fallbacks_total";
/// Where the token stands as Genesys last reported it (`inin-ratelimit-*`).
pub const GENESYS_BUDGET_COUNT: &str = "patchbay_genesys_ratelimit_count";
pub const GENESYS_BUDGET_ALLOWED: &str = "patchbay_genesys_ratelimit_allowed";
pub const GENESYS_BUDGET_RESET: &str = "patchbay_genesys_ratelimit_reset_seconds";
/// Lookups by key kind and outcome (`cached`, `found`, `not_found`, `ambiguous`, `failed`).
pub const LOOKUPS: &str = "patchbay_lookups_total";
/// Synchronous updates refused at once because the budget could not serve them before their deadline.
pub const ADMISSION_REFUSALS: &str = "patchbay_admission_refusals_total";

/// Latency buckets from 1 ms to 30 s: Genesys calls take tens of milliseconds, verifications seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use. One per process: tests that start several
/// gateways in one process share it.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .expect("buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program's): keep rendering ours.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Counts every request by route template, method and status, and times it.
pub async fn track_http(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

/// One attempt of a Genesys call; `status` is the HTTP status, or `timeout` / `error`.
pub fn genesys_call(operation: &'static str, status: String, elapsed: Duration) {
    metrics::counter!(GENESYS_CALLS, "operation" => operation, "status" => status).increment(1);
    metrics::histogram!(GENESYS_DURATION, "operation" => operation).record(elapsed.as_secs_f64());
}

/// Where the token stands, as Genesys reported it on its latest answer.
pub fn genesys_budget(count: u32, allowed: u32, reset: Duration) {
    metrics::gauge!(GENESYS_BUDGET_COUNT).set(f64::from(count));
    metrics::gauge!(GENESYS_BUDGET_ALLOWED).set(f64::from(allowed));
    metrics::gauge!(GENESYS_BUDGET_RESET).set(reset.as_secs_f64());
}
