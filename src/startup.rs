//! Start-up: the one place that assembles the gateway. It builds every part from validated
//! settings (stores, the org's Genesys client with its budget and token, the engine, the mirror and
//! its feed, lookups, the journal, webhook routes), binds both listeners, and runs it all until
//! shutdown. Tests build the same [`Application`] and read the addresses it bound.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::api::auth::ApiKeys;
use crate::api::health::metrics_router;
use crate::api::hooks::HookRoutes;
use crate::api::jobs::JobAnswers;
use crate::api::state::{AppState, Drain};
use crate::app::router;
use crate::config::{QueueBackend, Settings};
use crate::journal::{replica_name, Journal};
use crate::org::Org;
use crate::store::journal::redis::RedisJournal;
use crate::store::journal::{ring::Ring, JournalStore};
use crate::store::queue::redis::RedisQueue;
use crate::store::queue::sqlite::SqliteQueue;
use crate::store::queue::JobQueue;
use crate::store::Redis;
use crate::worker::Workers;

/// The gateway, built and bound, not yet serving.
pub struct Application {
    state: AppState,
    listener: TcpListener,
    /// `server.admin_listen`'s listener: metrics and the console, apart from the public API.
    admin: Option<TcpListener>,
}

impl Application {
    /// Builds every part from `settings`, then binds `server.listen` and `server.admin_listen`. A
    /// store that cannot open or a port that cannot be bound fails here, before anything serves.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let state = build_state(settings)?;
        let server = &state.settings.server;
        let listener = TcpListener::bind(server.listen)
            .await
            .with_context(|| format!("cannot listen on {} (server.listen)", server.listen))?;
        let admin = match server.admin_listen {
            Some(admin) => Some(
                TcpListener::bind(admin)
                    .await
                    .with_context(|| format!("cannot listen on {admin} (server.admin_listen)"))?,
            ),
            None => None,
        };
        Ok(Self {
            state,
            listener,
            admin,
        })
    }

    /// The address the API is served on, as bound (a port of 0 is the one the system chose).
    pub fn address(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where metrics and the console are served apart, when `server.admin_listen` is set.
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin
            .as_ref()
            .map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Runs the gateway: recovers jobs a previous process left running, starts the workers and the
    /// mirror's feed, and serves until `shutdown` resolves. Then intake stops (503
    /// `shutting_down`), requests in flight finish, workers finish or release their job, and this
    /// returns within `server.shutdown_timeout_ms`.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self {
            state,
            listener,
            admin,
        } = self;
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
        let workers = workers(&state).spawn(stop.clone(), abandon.clone());
        // The mirror's feed runs until shutdown begins; updates in flight then verify by reads.
        let feed = state
            .org
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
        if let Some(admin) = admin {
            let mut metrics = metrics_router().with_state(state.clone());
            if crate::console::enabled(&state) {
                metrics = metrics.nest_service("/console", crate::console::router(&state));
            }
            let admin_signal = signal.clone();
            tokio::spawn(async move {
                let stop = async move { admin_signal.cancelled().await };
                let _ = axum::serve(without_nagle(admin), metrics)
                    .with_graceful_shutdown(stop)
                    .await;
            });
        }
        let server =
            axum::serve(without_nagle(listener), router(state)).with_graceful_shutdown(graceful);
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
}

/// Share of the shutdown budget given to requests and jobs in flight; the rest is for closing up.
const DRAIN_SHARE: f64 = 0.8;

/// The state every handler shares, built from validated settings, with the queue store open. The
/// first Genesys token is fetched on demand.
pub fn build_state(settings: Settings) -> anyhow::Result<AppState> {
    // Installed before any request, so no count is lost.
    crate::metrics::handle();
    let redis = match settings.queue.backend {
        QueueBackend::Redis => Some(Redis::connect(&settings.redis)?),
        QueueBackend::Sqlite => None,
    };
    // Everything of the Genesys org, built once: on Redis its token, budget, channel slots and
    // finds are the deployment's.
    let org = Org::build(&settings, redis.clone())?;
    let keyring = settings.secure.keyring();
    let hooks = HookRoutes::compile(
        &settings.hooks,
        &settings.auth.api_keys,
        !keyring.is_empty(),
    )?;
    let queue = open_queue(&settings, redis.clone())?;
    let auth = &settings.auth;
    let readers: Vec<_> = auth
        .api_keys
        .iter()
        .chain(&auth.admin_keys)
        .cloned()
        .collect();
    let console = &settings.console;
    let store: Arc<dyn JournalStore> = match &redis {
        Some(redis) => Arc::new(RedisJournal::new(redis.clone(), console.recent)),
        None => Arc::new(Ring::new(console.recent)),
    };
    let journal = Journal::new(store, &replica_name(), console.show_values, console.recent);
    match keyring.newest() {
        Some(newest) => tracing::info!(newest, "secure attributes at rest are sealed under the key `{newest}`"),
        None => tracing::warn!("no secure.keys configured: secure attributes are written only synchronously, without an Idempotency-Key; set PATCHBAY__SECURE__KEYS to queue them encrypted"),
    }
    Ok(AppState {
        keyring,
        journal,
        hooks,
        org,
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
        settings: Arc::new(settings),
    })
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

/// The workers that apply queued jobs, answering as a synchronous caller would have been.
fn workers(state: &AppState) -> Workers {
    Workers {
        queue: state.queue.clone(),
        engine: state.org.engine.clone(),
        settings: state.settings.queue.clone(),
        wake: state.wake.clone(),
        presenter: Arc::new(JobAnswers),
        journal: state.journal.clone(),
        keyring: state.keyring.clone(),
        custom: state.org.custom.clone(),
        secure: state.org.secure.clone(),
    }
}

/// `listener`, its connections sending each write at once: an answer on a kept-alive connection
/// must not wait, under Nagle's algorithm, for the caller's delayed ACK of the previous one (tens
/// of milliseconds of an Architect action's few seconds).
fn without_nagle(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    })
}
