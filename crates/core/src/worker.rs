//! Workers: claim a batch, apply it with the core's client, and record what happened.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::QueueSettings;
use crate::custom::{CustomAttributes, CustomError, CustomOutcome, CustomValues};
use crate::engine::Engine;
use crate::genesys::retry::Backoff;
use crate::genesys::GenesysError;
use crate::journal::Journal;
use crate::lane::{Asked, Gate};
use crate::seal::{Keyring, SealError};
use crate::secure::SecureOutcome;
use crate::service::{UpdateError, UpdateOutcome};
use crate::store::queue::{now_ms, Batch, JobQueue, QueueError, StoredProblem};

/// Whether a failure may go away by itself: 429, 5xx, timeouts, and Genesys refusing Patchbay's own
/// credentials (an operator can fix those while the job waits).
pub fn is_transient(error: &UpdateError) -> bool {
    match error {
        UpdateError::Upstream(g) => match g {
            GenesysError::Rejected { status, .. } => *status == 403,
            GenesysError::Auth { .. }
            | GenesysError::RateLimited { .. }
            | GenesysError::Server { .. }
            | GenesysError::Timeout
            | GenesysError::Transport(_)
            | GenesysError::InvalidResponse(_) => true,
        },
        UpdateError::ConversationNotFound(_)
        | UpdateError::ParticipantNotFound(..)
        | UpdateError::ConversationEnded(_) => false,
    }
}

/// Whether a delivery's failure may go away by itself: an update's as [`is_transient`] says, and a
/// custom-attributes record other writers kept changing. A schema that is missing or refuses the
/// values does not mend itself.
pub fn is_transient_delivery(error: &CustomError) -> bool {
    match error {
        CustomError::Update(u) => is_transient(u),
        CustomError::Conflict(_) => true,
        CustomError::SchemaNotFound(_) | CustomError::Invalid { .. } => false,
    }
}

/// How a finished job is kept for whoever asks about it: in the shapes of the layer that answers
/// callers. Passed in, so the delivery engine never depends on the HTTP layer.
pub trait Presenter: Send + Sync {
    /// The answer a job that landed keeps: its participant's outcome when it wrote participant
    /// attributes, and its secure attributes' when it wrote those.
    fn result(&self, landed: Landed, request_id: String) -> serde_json::Value;
    /// The problem a failed job keeps.
    fn problem(&self, error: CustomError) -> StoredProblem;
    /// The problem of a stored job that no longer parses.
    fn invalid_job(&self) -> StoredProblem;
    /// The problem of a job whose secure values do not open (their key is gone).
    fn unsealable(&self, error: SealError) -> StoredProblem;
}

/// What a job that landed wrote.
pub struct Landed {
    pub conversation_id: crate::domain::ConversationId,
    pub participant: Option<UpdateOutcome>,
    pub secure: Option<SecureOutcome>,
    /// One outcome per custom-attributes schema written.
    pub custom: Vec<CustomOutcome>,
}

/// Everything a worker needs.
#[derive(Clone)]
pub struct Workers {
    pub queue: Arc<dyn JobQueue>,
    pub engine: Engine,
    pub settings: QueueSettings,
    /// Rung on every enqueue, so an idle worker starts at once.
    pub wake: Arc<Notify>,
    pub presenter: Arc<dyn Presenter>,
    /// Each attempt's outcome, for the console.
    pub journal: Journal,
    /// Opens the secure attributes that jobs carry sealed.
    pub keyring: Keyring,
    /// The org's custom-attributes schemas and records.
    pub custom: CustomAttributes,
    /// The org's conversations' secure attributes lanes.
    pub secure: crate::secure::SecureAttributes,
}

impl Workers {
    /// Starts `queue.workers` workers. `stop` ends claiming; `abandon` makes a worker release the job
    /// it is running (shutdown's deadline).
    pub fn spawn(
        &self,
        stop: CancellationToken,
        abandon: CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        (0..self.settings.workers)
            .map(|n| {
                let w = self.clone();
                let (stop, abandon) = (stop.clone(), abandon.clone());
                tokio::spawn(async move { w.run(n, stop, abandon).await })
            })
            .collect()
    }

    async fn run(self, n: usize, stop: CancellationToken, abandon: CancellationToken) {
        let idle = Duration::from_millis(self.settings.poll_interval_ms);
        while !stop.is_cancelled() {
            match self.queue.claim(self.settings.max_batch).await {
                Ok(Some(batch)) => {
                    // Another job may be runnable too: let an idle worker look.
                    self.wake.notify_one();
                    self.process(batch, &abandon).await;
                }
                Ok(None) => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(idle) => {}
                        _ = stop.cancelled() => {}
                    }
                }
                Err(e) => {
                    tracing::error!(worker = n, error = %e, "the queue store failed; retrying shortly");
                    tokio::select! {
                        _ = tokio::time::sleep(idle) => {}
                        _ = stop.cancelled() => {}
                    }
                }
            }
        }
    }

    async fn process(&self, batch: Batch, abandon: &CancellationToken) {
        let span = tracing::info_span!(
            "job",
            otel.name = "job attempt",
            jobs = ?batch.ids(),
            attempt = batch.jobs[0].attempts,
            conversation_id = %batch.update.conversation_id,
            participant_id = tracing::field::Empty,
            genesys_correlation_id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        // In the trace of the request that queued the head job, however long ago and wherever; the
        // jobs merged into it are linked.
        let contexts: Vec<_> = batch
            .jobs
            .iter()
            .map(|j| crate::trace::from_kept(&j.update.trace))
            .collect();
        crate::trace::link(&span, contexts.iter().skip(1).cloned());
        crate::trace::adopt(&span, contexts.into_iter().next().unwrap_or_default());
        // Instrumented, not entered: a guard held across an await would lend the span to whatever
        // else the thread runs meanwhile.
        self.attempt(batch, abandon).instrument(span).await
    }

    async fn attempt(&self, batch: Batch, abandon: &CancellationToken) {
        let span = tracing::Span::current();
        let head = &batch.jobs[0];
        if !batch.writes_anything() {
            // Every key was already written by a newer job: nothing to send.
            let result = serde_json::json!({
                "conversationId": batch.update.conversation_id, "updated": false, "superseded": true,
                "requestId": head.request_id,
            });
            self.record(self.queue.succeed(&batch, result).await);
            return;
        }
        let update = match batch.update.to_update() {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "a stored job cannot be run");
                let problem = self.presenter.invalid_job();
                self.record(self.queue.fail(&batch, problem).await);
                return;
            }
        };
        let secure = match batch.open_secure(&self.keyring) {
            Ok(secure) => secure,
            Err(e) => {
                // Dead at once (a horizon below zero is past), not failed: once the operator
                // configures the key again, a replay delivers it.
                tracing::error!(error = %e, "a job's secure attributes cannot be opened");
                let problem = self.presenter.unsealable(e.clone());
                self.record(
                    self.queue
                        .retry(&batch, now_ms(), -1, &e.to_string(), problem)
                        .await,
                );
                return;
            }
        };
        // Bounded to half the lease, so no other replica reclaims a job that is still running here.
        let budget = Duration::from_secs(self.settings.lease_s) / 2;
        let started = tokio::time::Instant::now();
        let deadline = started + budget;
        let mut entry = self.journal.begin("queue", &head.request_id);
        entry.job_id = Some(head.id.clone());
        entry.conversation_id = Some(batch.update.conversation_id.clone());
        entry.writes(&batch.update.attributes);
        entry.secure_keys = batch.update.secure_keys.clone();
        let custom = &batch.custom;
        entry.custom_keys = custom
            .iter()
            .flat_map(|c| c.values.keys().cloned())
            .collect();
        let bounded = tokio::time::timeout(
            budget,
            self.deliver(&update, secure.as_ref(), custom, deadline),
        );
        let outcome = tokio::select! {
            outcome = bounded => outcome.unwrap_or(Err(CustomError::Update(UpdateError::Upstream(GenesysError::Timeout)))),
            _ = abandon.cancelled() => {
                tracing::info!("shutting down: releasing the running job");
                self.record(self.queue.release(&batch).await);
                return;
            }
        };
        match outcome {
            Ok(landed) => {
                if let Some(outcome) = &landed.participant {
                    // The engine recorded the participant when it resolved it.
                    if let Some(id) = &outcome.shared.correlation_id {
                        span.record("genesys_correlation_id", id.as_str());
                    }
                    tracing::info!(
                        verified = outcome.verified,
                        resolved_by = if outcome.resolved_by_mirror {
                            "mirror"
                        } else {
                            "rest"
                        },
                        verified_by = outcome.verified_by.map(|c| c.name()),
                        genesys_calls = outcome.shared.calls,
                        "job applied"
                    );
                    entry.applied(outcome);
                }
                if let Some(secure) = &landed.secure {
                    tracing::info!(
                        keys = secure.keys.len(),
                        verified = secure.verified,
                        genesys_calls = secure.calls,
                        "job's secure attributes applied"
                    );
                    entry.secure_verified = Some(secure.verified);
                }
                for custom in &landed.custom {
                    tracing::info!(
                        schema = %custom.schema_id,
                        keys = custom.keys.len(),
                        verified = custom.verified,
                        conflicts = custom.conflicts,
                        genesys_calls = custom.calls,
                        "job's custom attributes applied"
                    );
                }
                if !landed.custom.is_empty() {
                    entry.custom_verified = Some(landed.custom.iter().all(|c| c.verified));
                }
                entry.latency_ms = started.elapsed().as_millis() as u64;
                self.journal.record(entry);
                let result = self.presenter.result(landed, head.request_id.clone());
                self.record(self.queue.succeed(&batch, result).await);
            }
            Err(error) if is_transient_delivery(&error) => {
                let retry_after = match &error {
                    CustomError::Update(UpdateError::Upstream(GenesysError::RateLimited {
                        retry_after,
                        ..
                    })) => *retry_after,
                    _ => None,
                };
                let backoff = Backoff {
                    base: Duration::from_millis(self.settings.backoff_base_ms),
                    max: Duration::from_millis(self.settings.backoff_max_ms),
                };
                let delay = backoff.delay_at_least(head.attempts, retry_after);
                tracing::warn!(error = %error, attempts = head.attempts, delay_ms = delay.as_millis() as u64, "job failed; will retry");
                let text = error.to_string();
                let problem = self.presenter.problem(error);
                entry.failed(
                    &problem.code,
                    problem.status,
                    &format!(
                        "{} (attempt {}; retried in {} ms)",
                        problem.detail,
                        head.attempts,
                        delay.as_millis()
                    ),
                );
                entry.latency_ms = started.elapsed().as_millis() as u64;
                self.journal.record(entry);
                let horizon_ms = (self.settings.retry_horizon_s * 1000) as i64;
                self.record(
                    self.queue
                        .retry(
                            &batch,
                            now_ms() + delay.as_millis() as i64,
                            horizon_ms,
                            &text,
                            problem,
                        )
                        .await,
                );
            }
            Err(error) => {
                tracing::warn!(error = %error, "job failed for good");
                let problem = self.presenter.problem(error);
                entry.failed(&problem.code, problem.status, &problem.detail);
                entry.latency_ms = started.elapsed().as_millis() as u64;
                self.journal.record(entry);
                self.record(self.queue.fail(&batch, problem).await);
            }
        }
    }

    /// Writes a batch as the synchronous path does: its targets share one linger; the
    /// conversation's own (secure attributes, each custom record) are written side by side, and the
    /// participant's once Genesys accepted those, so a refusal of them leaves the participant
    /// unwritten; every target is then verified side by side.
    async fn deliver(
        &self,
        update: &crate::domain::AttributeUpdate,
        secure: Option<&crate::domain::SecureValues>,
        custom: &[CustomValues],
        deadline: tokio::time::Instant,
    ) -> Result<Landed, CustomError> {
        let updater = self.engine.updater();
        let verify = updater.verifies(update.verify);
        let mut gate = Gate::default();
        let asked = |gate: &mut Gate| Asked {
            written: Some(gate.wait_for()),
            ..Asked::by(verify, deadline)
        };
        let secure = secure.map(|values| (values, asked(&mut gate)));
        let custom: Vec<_> = custom
            .iter()
            .map(|values| (values, asked(&mut gate)))
            .collect();
        let secure = async {
            let Some((values, asked)) = secure else {
                return Ok(None);
            };
            let span = tracing::info_span!(
                "secure attributes",
                otel.name = "secure attributes",
                keys = values.len()
            );
            self.secure
                .write(updater, update.conversation_id, values.clone(), asked)
                .instrument(span)
                .await
                .map(Some)
                .map_err(CustomError::from)
        };
        let custom = futures::future::try_join_all(custom.into_iter().map(|(values, asked)| async move {
            let schema = self
                .custom
                .schema(updater, &values.schema, deadline)
                .await?;
            let prepared = schema.prepare(&values.values)?;
            let span = tracing::info_span!("custom attributes", otel.name = "custom attributes", schema = %schema.id, keys = prepared.len());
            self.custom
                .write(updater, update.conversation_id, schema, prepared, asked)
                .instrument(span)
                .await
        }));
        let participant = async {
            if update.attributes.is_empty() {
                return None;
            }
            // `None` when the conversation's own targets were refused: that is the job's outcome.
            gate.then(|lingered| self.engine.submit_after(update, deadline, lingered))
                .await
        };
        let (secure, custom, participant) = tokio::join!(secure, custom, participant);
        let (secure, custom) = (secure?, custom?);
        Ok(Landed {
            conversation_id: update.conversation_id,
            participant: participant.transpose()?,
            secure,
            custom,
        })
    }

    fn record(&self, result: Result<(), QueueError>) {
        let outcome = if result.is_ok() {
            "recorded"
        } else {
            "unrecorded"
        };
        metrics::counter!(crate::metrics::JOBS_FINISHED, "outcome" => outcome).increment(1);
        if let Err(e) = result {
            // The job stays running in the store; its lease, or the next start, makes it runnable again.
            tracing::error!(error = %e, "could not record a job's outcome");
        }
    }
}
