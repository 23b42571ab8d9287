//! The application: the pure `router(state)`, and `run`/`serve` with graceful shutdown.

use std::future::Future;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderName;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::api::attributes::set_attributes;
use crate::api::auth::require_api_key;
pub use crate::api::health::Readiness;
use crate::api::health::{healthz, metrics_router, readyz};
use crate::api::hooks;
use crate::api::jobs;
use crate::api::problem::render_problems;
use crate::api::state::drain_guard;
pub use crate::api::state::{open_queue, AppState, Drain, REQUEST_ID_HEADER};
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
    let parent = crate::telemetry::context::from_headers(request.headers());
    crate::telemetry::context::adopt(&span, parent);
    span
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Share of the shutdown budget given to requests and jobs in flight; the rest is for closing up.
const DRAIN_SHARE: f64 = 0.8;

/// Runs the gateway: recovers jobs a previous process left running, starts the workers, and serves
/// until `shutdown` resolves. Then intake stops (503 `shutting_down`), requests in flight finish,
/// workers finish or release their job, and this returns within `server.shutdown_timeout_ms`.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match state.queue.recover().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            jobs = n,
            "resuming jobs that were running when the last process stopped"
        ),
        Err(e) => {
            tracing::error!(error = %e, "could not recover running jobs; they run again when their lease ends")
        }
    }
    let budget = Duration::from_millis(state.settings.server.shutdown_timeout_ms);
    let drain_budget = budget.mul_f64(DRAIN_SHARE);
    let signal = CancellationToken::new();
    let stop = CancellationToken::new();
    let abandon = CancellationToken::new();
    let workers = state.workers().spawn(stop.clone(), abandon.clone());
    // The mirror's feed runs until shutdown begins; updates in flight then verify by reads.
    let feed = state
        .feed
        .clone()
        .map(|feed| feed.spawn(signal.child_token()));

    tokio::spawn({
        let signal = signal.clone();
        async move {
            shutdown.await;
            signal.cancel();
        }
    });
    tokio::spawn({
        let (signal, abandon) = (signal.clone(), abandon.clone());
        async move {
            signal.cancelled().await;
            tokio::time::sleep(drain_budget).await;
            abandon.cancel();
        }
    });
    let drain = state.drain.clone();
    let graceful = {
        let signal = signal.clone();
        async move {
            signal.cancelled().await;
            tracing::info!("shutting down: refusing new requests, finishing those in flight");
            drain.begin();
            stop.cancel();
            let _ = tokio::time::timeout(drain_budget, drain.idle()).await;
        }
    };
    if crate::console::enabled(&state) {
        tokio::spawn(crate::console::sample_budget(
            state.clone(),
            signal.child_token(),
        ));
    }
    if let Some(admin) = state.settings.server.admin_listen {
        let mut metrics = metrics_router().with_state(state.clone());
        if crate::console::enabled(&state) {
            metrics = metrics.nest_service("/console", crate::console::router(&state));
        }
        let admin_signal = signal.clone();
        let admin_listener = TcpListener::bind(admin).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("server.admin_listen {admin}: {e}"))
        })?;
        tokio::spawn(async move {
            let stop = async move { admin_signal.cancelled().await };
            let _ = axum::serve(admin_listener, metrics)
                .with_graceful_shutdown(stop)
                .await;
        });
    }
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(graceful);
    let deadline = async {
        signal.cancelled().await;
        tokio::time::sleep(budget).await;
    };
    let served = tokio::select! {
        served = server => served,
        _ = deadline => {
            tracing::warn!("shutdown deadline reached with connections still open");
            Ok(())
        }
    };
    let remaining = budget.saturating_sub(drain_budget);
    if let Some(feed) = feed {
        let _ = tokio::time::timeout(remaining / 4, feed).await;
    }
    if tokio::time::timeout(remaining, futures::future::join_all(workers))
        .await
        .is_err()
    {
        tracing::warn!("shutdown deadline reached with workers still running; their jobs run again at the next start");
    }
    served
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
