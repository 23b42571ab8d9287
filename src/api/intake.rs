//! Intake: what every inbound route does with a valid update, synchronously or through the queue,
//! under an idempotency key when the caller sends one.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::exchange::{check_attribute_bytes, AttributesResponse};
use super::problem::ApiError;
use crate::api::state::AppState;
use crate::custom::{CustomValues, Schema};
use crate::domain::lookup::Lookup;
use crate::domain::{Address, AttributeUpdate, SecureValues, UpdateRequest};
use crate::journal::{Entry, Outcome};
use crate::lane::{Asked, Gate};
use crate::lookup::Source;
use crate::seal::Keyring;
use crate::store::queue::{Begun, Enqueued, IdempotencyKey, Job, StoredResponse, StoredUpdate};
use crate::worker::is_transient;

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Idempotency keys are opaque, but bounded: they are stored.
const MAX_KEY_LEN: usize = 255;

/// How the caller wants its update handled.
#[derive(Debug, Clone)]
pub struct Intake {
    pub request_id: String,
    pub asynchronous: bool,
    /// When the budget cannot serve a synchronous update in time: queue it (202) instead of 429.
    pub async_fallback: bool,
    pub idempotency: Option<IdempotencyKey>,
}

/// `Prefer: respond-async` (RFC 7240), among other preferences.
pub fn prefers_async(headers: &HeaderMap) -> bool {
    prefers(headers, "respond-async")
}

/// `Prefer: async-fallback`: answer synchronously, or queue the update (202) when the Genesys budget
/// cannot serve it before its deadline.
pub const ASYNC_FALLBACK: &str = "async-fallback";

/// Whether the `Prefer` headers hold `token` (RFC 7240), among other preferences.
fn prefers(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| {
            p.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(token))
        })
}

impl Intake {
    /// Reads the mode and the idempotency key. `fallback_key` is a sender's own delivery id (the
    /// Standard Webhooks `webhook-id`), used when no `Idempotency-Key` is sent. The body is
    /// fingerprinted with the keyring's HMAC when a key is configured (a body may carry personal
    /// values, which a plain hash of a short value would give away), with SHA-256 otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn from_request(
        keyring: &Keyring,
        headers: &HeaderMap,
        request_id: String,
        scope: &str,
        body: &[u8],
        fallback_key: Option<&str>,
        always_async: bool,
        async_fallback: bool,
    ) -> Result<Self, ApiError> {
        let key = match headers.get(IDEMPOTENCY_HEADER) {
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .map(str::trim)
                    .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
                    .ok_or_else(|| {
                        ApiError::InvalidRequest(format!(
                            "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
                        ))
                    })?
                    .to_string(),
            ),
            None => fallback_key.map(str::to_string),
        };
        Ok(Self {
            request_id,
            asynchronous: always_async || prefers_async(headers),
            async_fallback: async_fallback || prefers(headers, ASYNC_FALLBACK),
            idempotency: key.map(|key| {
                let mut fingerprints = keyring.fingerprints(body).into_iter();
                IdempotencyKey {
                    scope: scope.to_string(),
                    key,
                    body_hash: fingerprints
                        .next()
                        .unwrap_or_else(|| hex::encode(Sha256::digest(body))),
                    earlier: fingerprints.collect(),
                }
            }),
        })
    }
}

/// The 202 body: the job, and where it stands.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted<'a> {
    job_id: &'a str,
    #[schema(value_type = crate::store::queue::JobStatus)]
    status: &'a str,
}

/// `202 Accepted` for a job, with its `Location`.
pub fn accepted(job: &Job) -> Response {
    let mut response = (
        StatusCode::ACCEPTED,
        Json(Accepted {
            job_id: &job.id,
            status: job.status.as_str(),
        }),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn replayed(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    if let Ok(ct) = HeaderValue::from_str(&stored.content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// An update whose conversation is known, and the lookup that found it, if one did.
#[derive(Debug, Clone)]
pub struct Addressed {
    pub update: AttributeUpdate,
    pub found: Option<(Lookup, Source)>,
    /// The conversation's secure attributes to write too, if any.
    pub secure: Option<SecureValues>,
    /// Values for the conversation's custom-attributes record, if any.
    pub custom: Option<CustomValues>,
}

impl Addressed {
    /// How the conversation was named, as the answer says it.
    fn found_by(&self) -> &'static str {
        self.found
            .as_ref()
            .map_or("conversationId", |(_, source)| source.name())
    }
}

/// The update for `request`: its conversation as named, or as a lookup finds it by `deadline`.
pub async fn address(
    state: &AppState,
    request: UpdateRequest,
    deadline: tokio::time::Instant,
    entry: &mut Entry,
) -> Result<Addressed, ApiError> {
    let lookup = match &request.address {
        Address::Conversation(cid) => {
            let cid = *cid;
            entry.conversation_id = Some(cid.to_string());
            entry.found_by = Some("conversationId".into());
            return Ok(Addressed {
                update: request.into_update(cid),
                found: None,
                secure: None,
                custom: None,
            });
        }
        Address::Lookup(lookup) => lookup.clone(),
    };
    entry.lookup = Some(lookup.key.to_string());
    // The kind of key, never the key: a caller's number stays out of traces.
    let span = tracing::info_span!(target: crate::telemetry::TRACE_TARGET, "lookup", otel.name = "lookup", lookup.kind = lookup.key.kind().name(), lookup.source = tracing::field::Empty);
    let (cid, source) = state
        .org
        .finder
        .find(&lookup, deadline)
        .instrument(span.clone())
        .await?;
    span.record("lookup.source", source.name());
    entry.conversation_id = Some(cid.to_string());
    entry.found_by = Some(source.name().into());
    tracing::info!(conversation_id = %cid, lookup = %lookup.key, found_by = source.name(), "the lookup found the conversation");
    Ok(Addressed {
        update: request.into_update(cid),
        found: Some((lookup, source)),
        secure: None,
        custom: None,
    })
}

/// Applies or queues a valid update, as the caller asked, answering by `deadline`.
pub async fn accept(
    state: &AppState,
    addressed: Addressed,
    intake: Intake,
    deadline: tokio::time::Instant,
    entry: &mut Entry,
) -> Result<Response, ApiError> {
    entry.writes(addressed.update.attributes.as_map());
    check_attribute_bytes(
        &addressed.update.attributes,
        state.settings.limits.max_attributes_bytes,
    )?;
    let mut addressed = addressed;
    let custom = match addressed.custom.take() {
        Some(values) => {
            // Checked against the schema before anything is written or queued.
            let (schema, prepared) = prepare_custom(state, &values, deadline).await?;
            entry.custom_keys = prepared.keys().cloned().collect();
            let values = CustomValues {
                schema: values.schema,
                values: prepared,
            };
            let size = serde_json::to_string(&values.values).map_or(0, |t| t.len());
            if size > state.settings.limits.max_attributes_bytes {
                return Err(ApiError::AttributesTooLarge {
                    size,
                    limit: state.settings.limits.max_attributes_bytes,
                });
            }
            addressed.custom = Some(values);
            Some(schema)
        }
        None => None,
    };
    let addressed = addressed;
    let update = &addressed.update;
    if let Some(secure) = &addressed.secure {
        // Keys only: the journal and the console never hold a secure value.
        entry.secure_keys = secure.key_names();
        if secure.byte_len() > state.settings.limits.max_attributes_bytes {
            return Err(ApiError::AttributesTooLarge {
                size: secure.byte_len(),
                limit: state.settings.limits.max_attributes_bytes,
            });
        }
        // A job, a dead letter or an idempotent answer keeps them at rest, sealed: not without a key.
        let stored = intake.asynchronous || intake.async_fallback || intake.idempotency.is_some();
        if stored && state.keyring.is_empty() {
            return Err(ApiError::SecureNotStored);
        }
    }
    tracing::Span::current().record(
        "conversation_id",
        tracing::field::display(update.conversation_id),
    );
    if intake.asynchronous {
        return enqueue(
            state,
            &addressed,
            &intake.request_id,
            intake.idempotency,
            entry,
        )
        .await;
    }
    let Some(key) = intake.idempotency else {
        match admit(state, &addressed, custom.as_ref(), deadline).await {
            Ok(()) => {}
            Err(_) if intake.async_fallback => {
                return enqueue(state, &addressed, &intake.request_id, None, entry).await
            }
            Err(refused) => return Err(refused),
        };
        return apply_now(
            state,
            &addressed,
            custom.as_ref(),
            intake.request_id,
            deadline,
            entry,
        )
        .await
        .map(IntoResponse::into_response);
    };
    match state.queue.idempotency_begin(&key).await? {
        Begun::New => {}
        Begun::Existing(job) => {
            entry.job_id = Some(job.id.clone());
            return Ok(accepted(&job));
        }
        Begun::Answered(stored) => {
            entry.outcome = Outcome::Repeated;
            return Ok(replayed(stored));
        }
        Begun::InProgress => return Err(ApiError::IdempotencyInProgress),
        Begun::Conflict => return Err(ApiError::IdempotencyConflict),
    }
    if let Err(refused) = admit(state, &addressed, custom.as_ref(), deadline).await {
        // Nothing was sent: the key is free again, for the job or for the caller's retry.
        if let Err(e) = state.queue.idempotency_abandon(&key).await {
            tracing::error!(error = %e, "could not release the idempotency key");
        }
        if intake.async_fallback {
            return enqueue(state, &addressed, &intake.request_id, Some(key), entry).await;
        }
        return Err(refused);
    }
    let result = apply_now(
        state,
        &addressed,
        custom.as_ref(),
        intake.request_id,
        deadline,
        entry,
    )
    .await;
    // Keep answers that a repeat must get again; forget transient failures, so a retry runs again.
    let keep = match &result {
        Ok(json) => Some(StoredResponse {
            status: 200,
            body: serde_json::to_string(&json.0).expect("answers serialize"),
            content_type: "application/json".into(),
        }),
        Err(ApiError::Update(e)) if !is_transient(e) => {
            let p = ApiError::Update(e.clone()).problem();
            Some(StoredResponse {
                status: p.status.as_u16(),
                body: serde_json::to_string(&p.body(None)).expect("problem bodies serialize"),
                content_type: "application/problem+json".into(),
            })
        }
        Err(_) => None,
    };
    let recorded = match &keep {
        Some(stored) => state.queue.idempotency_finish(&key, stored).await,
        None => state.queue.idempotency_abandon(&key).await,
    };
    if let Err(e) = recorded {
        tracing::error!(error = %e, "could not record the idempotency key's answer");
    }
    result.map(IntoResponse::into_response)
}

/// Commits the update as a job and answers 202 (or what the idempotency key already stands for).
async fn enqueue(
    state: &AppState,
    addressed: &Addressed,
    request_id: &str,
    idempotency: Option<IdempotencyKey>,
    entry: &mut Entry,
) -> Result<Response, ApiError> {
    let mut stored = StoredUpdate::from(&addressed.update);
    stored.trace = patchbay_core::trace::current();
    if let Some(custom) = &addressed.custom {
        stored = stored.with_custom(custom);
    }
    if let Some(secure) = &addressed.secure {
        // Sealed for this conversation under the newest key; checked above that there is one.
        stored = stored
            .with_secure(secure, &state.keyring)
            .ok_or(ApiError::SecureNotStored)?;
    }
    match state.queue.enqueue(stored, request_id, idempotency).await? {
        Enqueued::Created(job) => {
            state.wake.notify_one();
            tracing::info!(job_id = %job.id, "update accepted for asynchronous delivery");
            entry.job_id = Some(job.id.clone());
            Ok(accepted(&job))
        }
        Enqueued::Existing(job) => {
            entry.job_id = Some(job.id.clone());
            Ok(accepted(&job))
        }
        Enqueued::Answered(stored) => {
            entry.outcome = Outcome::Repeated;
            Ok(replayed(stored))
        }
        Enqueued::InProgress => Err(ApiError::IdempotencyInProgress),
        Enqueued::Conflict => Err(ApiError::IdempotencyConflict),
    }
}

/// Admits the Genesys calls of the whole request (its participant's, its secure attributes' and
/// its custom record's), or refuses it at once with 429 and Retry-After, before any target is
/// written: a request the budget can only partly serve is not left half applied. Nothing is
/// reserved; each write takes its slots when it is made.
async fn admit(
    state: &AppState,
    addressed: &Addressed,
    schema: Option<&std::sync::Arc<Schema>>,
    deadline: tokio::time::Instant,
) -> Result<(), ApiError> {
    let update = &addressed.update;
    let org = &state.org;
    let verify = org.engine.updater().verifies(update.verify);
    let mut calls = 0;
    if !update.attributes.is_empty() {
        calls += org.engine.calls_needed(update).await;
    }
    if addressed.secure.is_some() {
        calls += crate::secure::SecureAttributes::calls_needed(verify);
    }
    if let Some(schema) = schema {
        calls += org
            .custom
            .calls_needed(update.conversation_id, schema)
            .await;
    }
    if calls == 0 {
        return Ok(());
    }
    let span = tracing::info_span!(target: crate::telemetry::TRACE_TARGET, "admission", otel.name = "admission", admitted = tracing::field::Empty, genesys_calls = calls);
    let admitted = org
        .engine
        .updater()
        .admit_calls(calls, deadline)
        .instrument(span.clone())
        .await;
    span.record("admitted", admitted.is_ok());
    admitted.map_err(|e| {
        metrics::counter!(crate::metrics::ADMISSION_REFUSALS).increment(1);
        ApiError::from(e)
    })
}

/// Applies `update` by `deadline`; `lingered` when its request already lingered in its
/// conversation's other lanes.
async fn submit(
    state: &AppState,
    update: &AttributeUpdate,
    deadline: tokio::time::Instant,
    lingered: bool,
) -> Result<crate::service::UpdateOutcome, ApiError> {
    let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
    Ok(tokio::time::timeout(
        timeout,
        state.org.engine.submit_after(update, deadline, lingered),
    )
    .await
    .map_err(|_| ApiError::RequestTimeout)??)
}

/// The synchronous path: apply within `server.request_timeout_ms` and answer with the verification.
/// The request's targets share one linger: the conversation's own (secure attributes, a custom
/// record) are written side by side, and the participant's once Genesys accepted those, so a
/// refusal of them leaves the participant unwritten; every target is then verified side by side.
async fn apply_now(
    state: &AppState,
    addressed: &Addressed,
    schema: Option<&std::sync::Arc<Schema>>,
    request_id: String,
    deadline: tokio::time::Instant,
    entry: &mut Entry,
) -> Result<Json<AttributesResponse>, ApiError> {
    let mut gate = Gate::default();
    let secure = addressed
        .secure
        .as_ref()
        .map(|values| (values, gate.wait_for()));
    let custom = addressed
        .custom
        .as_ref()
        .zip(schema)
        .map(|(values, schema)| (values, schema, gate.wait_for()));
    let own = async {
        tokio::join!(
            async {
                match secure {
                    Some((values, written)) => {
                        apply_secure(state, addressed, values, deadline, written)
                            .await
                            .map(Some)
                    }
                    None => Ok(None),
                }
            },
            async {
                match custom {
                    Some((values, schema, written)) => {
                        apply_custom(state, addressed, schema, values, deadline, written)
                            .await
                            .map(Some)
                    }
                    None => Ok(None),
                }
            }
        )
    };
    let participant = async {
        if addressed.update.attributes.is_empty() {
            return None;
        }
        // `None` when the conversation's own targets were refused: their refusal is the answer.
        gate.then(|lingered| {
            apply_participant(
                state,
                addressed,
                request_id.clone(),
                deadline,
                entry,
                lingered,
            )
        })
        .await
    };
    let ((secure, custom), participant) = tokio::join!(own, participant);
    let (secure, custom) = (secure?, custom?);
    let answer = match participant {
        Some(answer) => answer?,
        None => AttributesResponse::conversation_only(addressed.update.conversation_id, request_id)
            .found_by(addressed.found_by()),
    };
    let answer = match secure {
        Some(outcome) => {
            entry.secure_verified = Some(outcome.verified);
            answer.with_secure(outcome)
        }
        None => answer,
    };
    Ok(Json(match custom {
        Some(outcome) => {
            entry.custom_verified = Some(outcome.verified);
            answer.with_custom(outcome)
        }
        None => answer,
    }))
}

/// The schema `values` name, and the values checked against it and coerced: a 422 before anything
/// is written when they do not fit. Reading the schema the first time is one call.
pub async fn prepare_custom(
    state: &AppState,
    values: &CustomValues,
    deadline: tokio::time::Instant,
) -> Result<
    (
        std::sync::Arc<Schema>,
        serde_json::Map<String, serde_json::Value>,
    ),
    ApiError,
> {
    let updater = state.org.engine.updater();
    let schema = state
        .org
        .custom
        .schema(updater, &values.schema, deadline)
        .await?;
    let prepared = schema.prepare(&values.values)?;
    Ok((schema, prepared))
}

/// Writes the conversation's custom-attributes record and verifies it, by `deadline`.
async fn apply_custom(
    state: &AppState,
    addressed: &Addressed,
    schema: &std::sync::Arc<Schema>,
    values: &CustomValues,
    deadline: tokio::time::Instant,
    written: tokio::sync::oneshot::Sender<()>,
) -> Result<crate::custom::CustomOutcome, ApiError> {
    let cid = addressed.update.conversation_id;
    let updater = state.org.engine.updater();
    let verify = updater.verifies(addressed.update.verify);
    let span = tracing::info_span!(target: crate::telemetry::TRACE_TARGET, "custom attributes", otel.name = "custom attributes", schema = %schema.id, keys = values.values.len(), verified = tracing::field::Empty);
    let outcome = state
        .org
        .custom
        .write(
            updater,
            cid,
            schema.clone(),
            values.values.clone(),
            Asked {
                written: Some(written),
                ..Asked::by(verify, deadline)
            },
        )
        .instrument(span.clone())
        .await?;
    span.record("verified", outcome.verified);
    tracing::info!(
        schema = %schema.id,
        keys = outcome.keys.len(),
        verified = outcome.verified,
        created = outcome.created,
        conflicts = outcome.conflicts,
        genesys_calls = outcome.calls,
        "custom attributes updated"
    );
    Ok(outcome)
}

/// Writes the conversation's secure attributes and reads them back, by `deadline`.
async fn apply_secure(
    state: &AppState,
    addressed: &Addressed,
    values: &SecureValues,
    deadline: tokio::time::Instant,
    written: tokio::sync::oneshot::Sender<()>,
) -> Result<crate::secure::SecureOutcome, ApiError> {
    let cid = addressed.update.conversation_id;
    let updater = state.org.engine.updater();
    let verify = updater.verifies(addressed.update.verify);
    let span = tracing::info_span!(target: crate::telemetry::TRACE_TARGET, "secure attributes", otel.name = "secure attributes", keys = values.len(), verified = tracing::field::Empty);
    let outcome = state
        .org
        .secure
        .write(
            updater,
            cid,
            values.clone(),
            Asked {
                written: Some(written),
                ..Asked::by(verify, deadline)
            },
        )
        .instrument(span.clone())
        .await?;
    span.record("verified", outcome.verified);
    tracing::info!(
        keys = outcome.keys.len(),
        verified = outcome.verified,
        genesys_calls = outcome.calls,
        "secure attributes updated"
    );
    Ok(outcome)
}

/// The participant's update, within `server.request_timeout_ms`. A conversation the mirror named
/// that Genesys refuses is looked up again through the REST API, as a stale read is.
async fn apply_participant(
    state: &AppState,
    addressed: &Addressed,
    request_id: String,
    deadline: tokio::time::Instant,
    entry: &mut Entry,
    lingered: bool,
) -> Result<AttributesResponse, ApiError> {
    let mut addressed = std::borrow::Cow::Borrowed(addressed);
    let outcome = match submit(state, &addressed.update, deadline, lingered).await {
        Err(ApiError::Update(e))
            if e.refused_target() && matches!(addressed.found, Some((_, Source::Mirror))) =>
        {
            let mut again = addressed.into_owned();
            let refused = again.update.conversation_id;
            let lookup = again
                .found
                .take()
                .map(|(lookup, _)| lookup)
                .expect("matched above");
            tracing::info!(conversation_id = %refused, error = %e, "Genesys refused the conversation the mirror named; looking it up through the REST API");
            let (cid, source) = state
                .org
                .finder
                .find_by_rest(&lookup, refused, deadline)
                .await?;
            again.update.conversation_id = cid;
            again.found = Some((lookup, source));
            entry.conversation_id = Some(cid.to_string());
            entry.found_by = Some(source.name().into());
            tracing::Span::current().record("conversation_id", tracing::field::display(cid));
            let outcome = submit(state, &again.update, deadline, lingered).await;
            addressed = std::borrow::Cow::Owned(again);
            outcome?
        }
        outcome => outcome?,
    };
    let update = &addressed.update;
    // The engine recorded the participant on the span when it resolved it; each field once a line.
    if let Some(id) = &outcome.shared.correlation_id {
        tracing::Span::current().record("genesys_correlation_id", id.as_str());
    }
    let found_by = addressed.found_by();
    entry.applied(&outcome);
    tracing::info!(
        keys = update.attributes.len(),
        verified = outcome.verified,
        found_by,
        resolved_by = outcome.resolved_by(),
        verified_by = outcome.verified_by.map(|c| c.name()),
        genesys_calls = outcome.shared.calls,
        shared_with = outcome.shared.updates,
        "attributes updated"
    );
    Ok(AttributesResponse::from_outcome(outcome, request_id).found_by(found_by))
}

/// Keeps what became of one inbound update, for the console: `entry` as the handler filled it in,
/// the problem if it failed, and how long it took.
pub fn journal(
    state: &AppState,
    mut entry: Entry,
    started: tokio::time::Instant,
    result: &Result<Response, ApiError>,
) {
    if let Err(e) = result {
        let p = e.problem();
        entry.failed(p.code, p.status.as_u16(), &p.detail);
    }
    entry.latency_ms = started.elapsed().as_millis() as u64;
    state.journal.record(entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respond_async_is_found_among_other_preferences() {
        let mut h = HeaderMap::new();
        h.insert(
            "prefer",
            HeaderValue::from_static("return=minimal, Respond-Async; wait=5"),
        );
        assert!(prefers_async(&h));
        h.insert("prefer", HeaderValue::from_static("return=minimal"));
        assert!(!prefers_async(&h));
    }
}
