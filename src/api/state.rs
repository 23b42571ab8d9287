//! What every handler shares: the application state built from validated settings, and the drain
//! that shutdown uses to stop intake and wait for requests in flight.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;

use super::auth::ApiKeys;
use super::hooks::HookRoutes;
use super::jobs;
use super::ApiError;
use crate::cluster::channels::Slots;
use crate::cluster::journal::RedisJournal;
use crate::cluster::limiter::{Budget, RateBudget};
use crate::cluster::queue::RedisQueue;
use crate::cluster::token::SharedToken;
use crate::cluster::Redis;
use crate::config::{QueueBackend, Settings};
use crate::engine::Engine;
use crate::genesys::shared::TokenStore;
use crate::genesys::GenesysClient;
use crate::journal::{replica_name, Journal, JournalStore, Ring};
use crate::lookup::Finder;
use crate::mirror::feed::Feed;
use crate::mirror::Mirror;
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
    /// Finds the conversation of an update addressed by a lookup.
    pub finder: Finder,
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
    /// The live mirror's feed, when `mirror.enabled`; started by `app::run`.
    pub feed: Option<Feed>,
    /// Recent updates, for the console: this process's, or the deployment's on Redis.
    pub journal: Journal,
}

/// Opens the queue store the settings name: SQLite at `queue.path`, or the Redis queue on
/// `redis` (connected here when not given). `patchbay replay` opens it alone.
pub fn open_queue(settings: &Settings, redis: Option<Redis>) -> anyhow::Result<Arc<dyn JobQueue>> {
    let ttl = Duration::from_secs(settings.idempotency.ttl_s);
    let lease = Duration::from_secs(settings.queue.lease_s);
    Ok(match settings.queue.backend {
        QueueBackend::Redis => {
            let redis = match redis {
                Some(redis) => redis,
                None => Redis::connect(&settings.redis)?,
            };
            Arc::new(RedisQueue::new(redis, ttl, lease))
        }
        QueueBackend::Sqlite => Arc::new(
            SqliteQueue::open(&settings.queue.path, ttl, lease).map_err(|e| {
                anyhow::anyhow!("queue.path `{}`: {e}", settings.queue.path.display())
            })?,
        ),
    })
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
        let queue = open_queue(&settings, redis.clone())?;
        let auth = &settings.auth;
        let readers: Vec<_> = auth
            .api_keys
            .iter()
            .chain(&auth.admin_keys)
            .cloned()
            .collect();
        let mut engine = Engine::new(
            Updater::new(genesys, settings.verify.clone()),
            settings.delivery.clone(),
            settings.limits.max_attributes_bytes,
        );
        let mut feed = None;
        if settings.mirror.enabled {
            let mirror = Mirror::new(settings.mirror.max_conversations);
            engine = engine.with_mirror(
                mirror.clone(),
                settings.mirror.confirm(settings.verify.timeout_ms),
            );
            feed = Some(Feed::new(
                engine.updater().shared_genesys(),
                mirror,
                settings.mirror.clone(),
                Arc::new(Slots::new(settings.mirror.max_channels, redis.clone())),
            ));
        }
        let console = &settings.console;
        let store: Arc<dyn JournalStore> = match &redis {
            Some(redis) => Arc::new(RedisJournal::new(redis.clone(), console.recent)),
            None => Arc::new(Ring::new(console.recent)),
        };
        let journal = Journal::new(store, &replica_name(), console.show_values, console.recent);
        Ok(Self {
            journal,
            hooks,
            finder: Finder::new(engine.clone(), settings.lookup.clone(), redis.clone()),
            engine,
            api_keys: ApiKeys::new(&auth.api_keys, auth.allow_anonymous, "auth.api_keys"),
            admin_keys: ApiKeys::new(&auth.admin_keys, false, "auth.admin_keys"),
            reader_keys: ApiKeys::new(
                &readers,
                auth.allow_anonymous,
                "auth.api_keys or auth.admin_keys",
            ),
            queue,
            wake: Arc::new(Notify::new()),
            drain: Drain::default(),
            feed,
            settings: Arc::new(settings),
        })
    }

    /// When a request that arrives now must be answered: `server.request_timeout_ms` from now.
    pub fn request_deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.settings.server.request_timeout()
    }

    pub fn workers(&self) -> Workers {
        Workers {
            queue: self.queue.clone(),
            engine: self.engine.clone(),
            settings: self.settings.queue.clone(),
            wake: self.wake.clone(),
            presenter: Arc::new(jobs::JobAnswers),
            journal: self.journal.clone(),
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
pub async fn drain_guard(State(drain): State<Drain>, request: Request, next: Next) -> Response {
    if drain.is_draining() && request.uri().path() != "/healthz" {
        return ApiError::ShuttingDown.into_response();
    }
    drain.in_flight.fetch_add(1, Ordering::SeqCst);
    let _guard = InFlight(drain);
    next.run(request).await
}
