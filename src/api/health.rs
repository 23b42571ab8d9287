//! Operations endpoints: liveness, readiness and the Prometheus text.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::state::AppState;
use super::ApiError;

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
    if let Some(mirror) = state.org.mirror() {
        use crate::metrics::{
            MIRROR_CHANNELS, MIRROR_CONVERSATIONS, MIRROR_LAST_FRAME, MIRROR_LIVE, MIRROR_TOPICS,
        };
        let status = mirror.status();
        metrics::gauge!(MIRROR_CHANNELS).set(status.channels as f64);
        metrics::gauge!(MIRROR_TOPICS).set(status.topics as f64);
        metrics::gauge!(MIRROR_LIVE).set(if status.live { 1.0 } else { 0.0 });
        metrics::gauge!(MIRROR_CONVERSATIONS).set(status.conversations as f64);
        if let Some(since) = mirror.since_last_frame() {
            metrics::gauge!(MIRROR_LAST_FRAME).set(since.as_secs_f64());
        }
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
    let genesys = state.org.genesys().ready().await;
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
