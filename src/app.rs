//! The application: shared state, the pure `router(state)`, and `serve(listener, shutdown)`.

use std::future::Future;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderName;
use axum::routing::{get, post};
use axum::{middleware, Router};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::api::attributes::set_attributes;
use crate::api::auth::{require_api_key, ApiKeys};
use crate::api::problem::render_problems;
use crate::api::ApiError;
use crate::config::Settings;
use crate::genesys::GenesysClient;
use crate::hooks::{self, HookRoutes};
use crate::service::Updater;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What every handler shares. Cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub updater: Updater,
    pub api_keys: ApiKeys,
    pub hooks: HookRoutes,
}

impl AppState {
    /// Builds the state from validated settings. Does no I/O: the first token is fetched on demand.
    pub fn new(settings: Settings) -> anyhow::Result<Self> {
        let genesys = GenesysClient::new(&settings.genesys)?;
        let hooks = HookRoutes::compile(&settings.hooks, &settings.auth.api_keys)?;
        Ok(Self {
            hooks,
            updater: Updater::new(genesys, settings.verify.clone()),
            api_keys: ApiKeys::new(&settings.auth.api_keys, settings.auth.allow_anonymous),
            settings: Arc::new(settings),
        })
    }
}

/// The whole HTTP surface, with its middleware, and no I/O.
///
/// Layer order, outermost first: a request id is set (or the caller's kept), the trace span opens
/// with it and the matched route, the id is copied to the response, and problems get their body.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    let ingest = Router::new()
        .route("/v1/attributes", post(set_attributes))
        .route_layer(middleware::from_fn_with_state(
            state.api_keys.clone(),
            require_api_key,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(ingest)
        // Each webhook route authenticates with its own scheme, inside the handler, over the raw body.
        .route("/v1/hooks/{name}", post(hooks::receive))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.settings.server.max_body_bytes))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(make_span))
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(middleware::from_fn(render_problems)),
        )
        .with_state(state)
}

fn make_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %request.method(),
        route,
        request_id,
        conversation_id = tracing::field::Empty,
        participant_id = tracing::field::Empty,
    )
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
    tracing::info!("shutting down: no new connections, finishing requests in flight");
}
