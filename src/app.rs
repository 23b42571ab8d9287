//! The HTTP surface: the pure `router(state)` with its middleware in order, and the shutdown signal.

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderName;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::api::attributes::set_attributes;
use crate::api::auth::require_api_key;
pub use crate::api::exchange::REQUEST_ID_HEADER;
pub use crate::api::health::Readiness;
use crate::api::health::{healthz, metrics_router, readyz};
use crate::api::hooks;
use crate::api::jobs;
use crate::api::problem::render_problems;
use crate::api::state::drain_guard;
pub use crate::api::state::{AppState, Drain};
use crate::api::ApiError;

/// The whole HTTP surface, with its middleware, and no I/O.
///
/// Layer order, outermost first: a request id is set (or the caller's kept), the trace span opens
/// with it and the matched route, the id is copied to the response, problems get their body, and
/// the drain guard counts the request or refuses it during shutdown.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    let ingest = Router::new()
        .route("/v1/attributes", post(set_attributes))
        .route_layer(middleware::from_fn_with_state(
            state.api_keys.clone(),
            require_api_key,
        ));
    let readers = Router::new()
        .route("/v1/jobs/{id}", get(jobs::get_job))
        .route_layer(middleware::from_fn_with_state(
            state.reader_keys.clone(),
            require_api_key,
        ));
    let admin = Router::new()
        .route("/v1/dead-letters", get(jobs::dead_letters))
        .route("/v1/dead-letters/{id}/replay", post(jobs::replay))
        .route_layer(middleware::from_fn_with_state(
            state.admin_keys.clone(),
            require_api_key,
        ));
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(crate::api::openapi::openapi_json))
        .route("/readyz", get(readyz));
    if state.settings.server.admin_listen.is_none() {
        app = app.merge(metrics_router());
        if crate::console::enabled(&state) {
            app = app.nest_service("/console", crate::console::router(&state));
        }
    }
    app.merge(ingest)
        .merge(readers)
        .merge(admin)
        // Each webhook route authenticates with its own scheme, inside the handler, over the raw body.
        .route("/v1/hooks/{name}", post(hooks::receive))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.settings.server.max_body_bytes))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                // A failure is logged once, by `render_problems`, with its code and cause; the trace
                // layer's own ERROR for every 5xx would say it a second time with less.
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(make_span)
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(middleware::from_fn(crate::metrics::track_http))
                .layer(middleware::from_fn(render_problems))
                .layer(middleware::from_fn_with_state(
                    state.drain.clone(),
                    drain_guard,
                )),
        )
        .with_state(state)
}

/// Routes that probes and scrapers call every few seconds: they get no span, so a trace at
/// sampling 1.0 holds the work, not Kubernetes's heartbeat.
const UNTRACED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

fn make_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    if UNTRACED.contains(&route) {
        return tracing::Span::none();
    }
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let method = request.method().as_str();
    // OpenTelemetry's HTTP server conventions: `{method} {route}`, the route template, never the
    // path with its ids. The conventions' attributes are the trace's alone (`set_attribute`), so
    // log lines keep their own names and no field twice.
    let name = format!("{method} {route}");
    let span = tracing::info_span!(
        "request",
        otel.name = %name,
        otel.kind = "server",
        method = %request.method(),
        route,
        request_id,
        conversation_id = tracing::field::Empty,
        participant_id = tracing::field::Empty,
        genesys_correlation_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    span.set_attribute("http.request.method", method.to_string());
    span.set_attribute("http.route", route.to_string());
    // A caller's W3C trace context continues its trace; without one the request starts a trace.
    let parent = patchbay_core::trace::from_headers(request.headers());
    patchbay_core::trace::adopt(&span, parent);
    span
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
