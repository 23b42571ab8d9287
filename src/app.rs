//! The application: shared state, the pure `router(state)`, and `run`/`serve` with graceful shutdown.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::api::attributes::set_attributes;
use crate::api::auth::{require_api_key, ApiKeys};
use crate::api::jobs;
use crate::api::problem::render_problems;
use crate::api::ApiError;
use crate::cluster::limiter::{Budget, RateBudget};
use crate::cluster::queue::RedisQueue;
use crate::cluster::token::SharedToken;
use crate::cluster::Redis;
use crate::config::{QueueBackend, Settings};
use crate::engine::Engine;
use crate::genesys::shared::TokenStore;
use crate::genesys::GenesysClient;
use crate::hooks::{self, HookRoutes};
use crate::queue::sqlite::SqliteQueue;
use crate::queue::worker::Workers;
use crate::queue::JobQueue;
use crate::service::Updater;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What every handler shares. Cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    /// Applies every update, synchronous or queued.
    pub engine: Engine,
    pub api_keys: ApiKeys,
    /// Admin endpoints: `auth.admin_keys` only.
    pub admin_keys: ApiKeys,
    /// Job status: an ingest key or an admin key.
    pub reader_keys: ApiKeys,
    pub hooks: HookRoutes,
    pub queue: Arc<dyn JobQueue>,
    /// Wakes an idle worker when a job is enqueued.
    pub wake: Arc<Notify>,
    pub drain: Drain,
}

impl AppState {
    /// Builds the state from validated settings and opens the queue store. The first Genesys token
    /// is fetched on demand.
    pub fn new(settings: Settings) -> anyhow::Result<Self> {
        // Installed before any request, so no count is lost.
        crate::metrics::handle();
        let redis = match settings.queue.backend {
            QueueBackend::Redis => Some(Redis::connect(&settings.redis)?),
            QueueBackend::Sqlite => None,
        };
        // The budget and the token are the deployment's on Redis, this process's otherwise.
        let budget = RateBudget::new(
            Budget {
                per_minute: settings.genesys.rate_per_minute,
            },
            redis.clone(),
        );
        let shared_token = redis
            .clone()
            .map(|r| Arc::new(SharedToken::new(r)) as Arc<dyn TokenStore>);
        let genesys = GenesysClient::new(&settings.genesys, Arc::new(budget), shared_token)?;
        let hooks = HookRoutes::compile(&settings.hooks, &settings.auth.api_keys)?;
        let ttl = Duration::from_secs(settings.idempotency.ttl_s);
        let lease = Duration::from_secs(settings.queue.lease_s);
        let queue: Arc<dyn JobQueue> = match (settings.queue.backend, redis) {
            (QueueBackend::Redis, Some(redis)) => Arc::new(RedisQueue::new(redis, ttl, lease)),
            _ => Arc::new(
                SqliteQueue::open(
                    &settings.queue.path,
                    Duration::from_secs(settings.idempotency.ttl_s),
                    Duration::from_secs(settings.queue.lease_s),
                )
                .map_err(|e| {
                    anyhow::anyhow!("queue.path `{}`: {e}", settings.queue.path.display())
                })?,
            ),
        };
        let auth = &settings.auth;
        let readers: Vec<_> = auth
            .api_keys
            .iter()
            .chain(&auth.admin_keys)
            .cloned()
            .collect();
        Ok(Self {
            hooks,
            engine: Engine::new(
                Updater::new(genesys, settings.verify.clone()),
                settings.delivery.clone(),
                settings.limits.max_attributes_bytes,
            ),
            api_keys: ApiKeys::new(&auth.api_keys, auth.allow_anonymous),
            admin_keys: ApiKeys::new(&auth.admin_keys, false),
            reader_keys: ApiKeys::new(&readers, auth.allow_anonymous),
            queue,
            wake: Arc::new(Notify::new()),
            drain: Drain::default(),
            settings: Arc::new(settings),
        })
    }

    pub fn workers(&self) -> Workers {
        Workers {
            queue: self.queue.clone(),
            engine: self.engine.clone(),
            settings: self.settings.queue.clone(),
            wake: self.wake.clone(),
            presenter: Arc::new(jobs::JobAnswers),
        }
    }
}

/// Shutdown's view of the server: whether intake has stopped, and how many requests are in flight.
#[derive(Clone, Default)]
pub struct Drain {
    draining: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

impl Drain {
    pub fn begin(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.idle.notify_waiters();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Resolves once no request is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Decrements the in-flight count however the request ends.
struct InFlight(Drain);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Counts requests in flight; once shutdown begins, answers new ones 503 `shutting_down`.
async fn drain_guard(State(drain): State<Drain>, request: Request, next: Next) -> Response {
    if drain.is_draining() && request.uri().path() != "/healthz" {
        return ApiError::ShuttingDown.into_response();
    }
    drain.in_flight.fetch_add(1, Ordering::SeqCst);
    let _guard = InFlight(drain);
    next.run(request).await
}

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

/// `GET /healthz`: liveness only; it answers while the process serves.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /metrics`, for the main port or `server.admin_listen`.
pub fn metrics_router() -> Router<AppState> {
    Router::new().route("/metrics", get(render_metrics))
}

/// The Prometheus text, with the queue's gauges read fresh.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
pub async fn render_metrics(State(state): State<AppState>) -> Response {
    match state.queue.stats().await {
        Ok(stats) => {
            metrics::gauge!(crate::metrics::QUEUE_DEPTH).set(stats.queued as f64);
            metrics::gauge!(crate::metrics::QUEUE_RUNNING).set(stats.running as f64);
            metrics::gauge!(crate::metrics::DEAD_LETTERS).set(stats.dead as f64);
            metrics::gauge!(crate::metrics::QUEUE_OLDEST_AGE)
                .set(stats.oldest_queued_age_ms.unwrap_or(0) as f64 / 1000.0);
        }
        Err(e) => tracing::warn!(error = %e, "queue figures unavailable for /metrics"),
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics::handle().render(),
    )
        .into_response()
}

/// The readiness answer.
#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// Each check (`config`, `queue`, `genesys`): `ok`, or the problem code of what is wrong.
    pub checks: std::collections::BTreeMap<String, String>,
}

/// `GET /readyz`: ready when the configuration is loaded (it is, or the process would not run), the
/// queue backend answers, and a Genesys token can be had (cached, so probes never hammer login).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Readiness), (status = 503, description = "Not ready", body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut checks = std::collections::BTreeMap::from([("config".to_string(), "ok".to_string())]);
    let queue = state.queue.stats().await.map(drop);
    if let Err(e) = &queue {
        tracing::warn!(error = %e, "not ready: the queue backend does not answer");
    }
    let queue_check = if queue.is_ok() {
        "ok"
    } else {
        "queue_unavailable"
    };
    checks.insert("queue".into(), queue_check.into());
    let genesys = state.engine.updater().genesys().ready().await;
    let genesys_check = match &genesys {
        Ok(()) => "ok".to_string(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: no Genesys token");
            ApiError::Update(e.clone().into())
                .problem()
                .code
                .to_string()
        }
    };
    checks.insert("genesys".into(), genesys_check);
    let ready = queue.is_ok() && genesys.is_ok();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" }.into(),
        checks,
    };
    (status, axum::Json(body)).into_response()
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
        genesys_correlation_id = tracing::field::Empty,
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
    if let Some(admin) = state.settings.server.admin_listen {
        let metrics = metrics_router().with_state(state.clone());
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
