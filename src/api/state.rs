//! What every handler shares: the application state (built at start-up), and the drain
//! that shutdown uses to stop intake and wait for requests in flight.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;

use super::auth::ApiKeys;
use super::hooks::routes::HookRoutes;
use super::ApiError;
use crate::config::Settings;
use crate::journal::Journal;
use crate::org::Org;
use crate::store::queue::JobQueue;

/// What every handler shares. Cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    /// The Genesys org every update goes to: its client, engine, lookups, mirror and feed.
    pub org: Org,
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
    /// Recent updates, for the console: this process's, or the deployment's on Redis.
    pub journal: Journal,
    /// Seals secure attributes at rest and keys idempotency fingerprints (`secure.keys`).
    pub keyring: crate::seal::Keyring,
}

impl AppState {
    /// When a request that arrives now must be answered: `server.request_timeout_ms` from now.
    pub fn request_deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.settings.server.request_timeout()
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
pub async fn drain_guard(State(drain): State<Drain>, request: Request, next: Next) -> Response {
    if drain.is_draining() && request.uri().path() != "/healthz" {
        return ApiError::ShuttingDown.into_response();
    }
    drain.in_flight.fetch_add(1, Ordering::SeqCst);
    let _guard = InFlight(drain);
    next.run(request).await
}
