//! The one Genesys Cloud client: a pooled rustls HTTP client, the token cache and the retry policy.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, ACCEPT, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use tracing::Instrument;
use url::Url;

use super::error::{Correlation, GenesysError};
use super::model::{
    AnalyticsConversationQueryResponse, Conversation, CustomRecordRead, CustomRecordResults,
    CustomRecordWrite, CustomSchemaListing, CustomSchemaRead, ErrorBody, ParticipantAttributes,
    SecureAttributesRead, TokenResponse,
};
use super::retry::{is_retryable_status, RetryPolicy, RetryReason};
use super::token::{AccessToken, TokenCache};
use crate::config::GenesysSettings;
use crate::domain::{AttributeMap, ConversationId, SecureValues};
use crate::store::budget::{CallBudget, Reported, Standing, WaitTooLong};
use crate::store::token::{TokenError, TokenStore};

/// What one piece of work gives its Genesys calls, and what they give back: when they must be done
/// (a synchronous request's deadline, a job's share of its lease, a verification's give-up), the
/// budget slots reserved ahead for them (a lane's round), earliest first, and, as they are made, the
/// API calls sent and Genesys's latest correlation id. Every call takes one, so none waits for the
/// budget past a deadline it was not given.
#[derive(Debug)]
pub struct CallContext {
    deadline: tokio::time::Instant,
    prepaid: VecDeque<tokio::time::Instant>,
    sent: u32,
    correlation_id: Option<String>,
}

impl CallContext {
    /// Calls that must be done by `deadline`, taking their budget as they go.
    pub fn until(deadline: tokio::time::Instant) -> Self {
        Self::prepaid(deadline, Vec::new())
    }

    /// Calls that spend `slots`, reserved ahead, before asking the budget again.
    pub fn prepaid(
        deadline: tokio::time::Instant,
        slots: impl IntoIterator<Item = tokio::time::Instant>,
    ) -> Self {
        Self {
            deadline,
            prepaid: slots.into_iter().collect(),
            sent: 0,
            correlation_id: None,
        }
    }

    /// API calls sent so far, retries included: what Genesys counts against the token.
    pub fn calls(&self) -> u32 {
        self.sent
    }

    /// The correlation id of Genesys's latest answer, for its support.
    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }
}

/// Where the token stands: calls Genesys counted in its window, the limit that applies to this call,
/// and the seconds until the window resets. Sent on every API answer.
pub const RATELIMIT_COUNT: &str = "inin-ratelimit-count";
pub const RATELIMIT_ALLOWED: &str = "inin-ratelimit-allowed";
pub const RATELIMIT_RESET: &str = "inin-ratelimit-reset";

/// Genesys tags every answer with this id; its support asks for it.
pub const CORRELATION_HEADER: &str = "ININ-Correlation-Id";
const USER_AGENT: &str = concat!("patchbay/", env!("CARGO_PKG_VERSION"));

/// Talks to one Genesys Cloud org. Cheap to clone: clones share the connection pool and the token.
#[derive(Clone)]
pub struct GenesysClient {
    http: reqwest::Client,
    login_base: Url,
    api_base: Url,
    client_id: String,
    client_secret: SecretString,
    tokens: TokenCache,
    /// Where the token is kept: for this process, or for every replica.
    token_store: std::sync::Arc<dyn TokenStore>,
    margin: Duration,
    budget: std::sync::Arc<dyn CallBudget>,
    /// The latest standing Genesys reported, `count << 32 | allowed` (0 before any answer), read by
    /// lanes to linger longer as the window fills.
    standing: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Genesys's latest report, whole, and when it came: the console shows it.
    reported: std::sync::Arc<std::sync::Mutex<Option<(Reported, std::time::Instant)>>>,
    policy: RetryPolicy,
}

/// The budget as Patchbay keeps it, beside what Genesys last reported of the token.
#[derive(Debug, Clone, Copy)]
pub struct BudgetView {
    pub standing: Standing,
    /// Genesys's `inin-ratelimit-*` on its latest answer to this replica, and how long ago it came.
    pub reported: Option<(Reported, Duration)>,
}

/// Operations Genesys limits on their own, beyond the token's budget: the analytics details query
/// (its `analytics` limits namespace). A standing their answers report under a limit lower than the
/// token's, and a 429 that does not report the token's window spent, hold back only them, so
/// lookups that exhaust analytics never stop updates addressed by their id; every call of theirs
/// still counts in the token's budget.
fn limited_on_its_own(op: &str) -> bool {
    op == "query_conversation_details"
}

impl std::fmt::Debug for GenesysClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenesysClient")
            .field("login_base", &self.login_base.as_str())
            .field("api_base", &self.api_base.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// How one attempt ended, before the retry policy decides what comes next.
enum Attempt {
    Done(Response),
    /// 401 on an API call: the token may be stale.
    Unauthorized(GenesysError),
    Retry(RetryReason, Option<Duration>, GenesysError),
    Fail(GenesysError),
}

fn correlation_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The token's standing from an answer's `inin-ratelimit-*` headers, when all three are there.
pub fn reported_standing(headers: &HeaderMap) -> Option<Reported> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some(Reported {
        count: u32::try_from(number(RATELIMIT_COUNT)?).unwrap_or(u32::MAX),
        allowed: u32::try_from(number(RATELIMIT_ALLOWED)?).unwrap_or(u32::MAX),
        reset: Duration::from_secs(number(RATELIMIT_RESET)?),
    })
}

/// An API answer's JSON body as `T`; one that does not decode is an invalid response, with its
/// correlation id for Genesys support.
pub(super) async fn decode<T: serde::de::DeserializeOwned>(
    response: Response,
    what: &str,
) -> Result<T, GenesysError> {
    let correlation = correlation_id(response.headers());
    response.json::<T>().await.map_err(|e| {
        GenesysError::InvalidResponse(format!(
            "{what} body did not decode ({}{})",
            describe(e),
            Correlation(&correlation)
        ))
    })
}

/// The share of the limit spent: `count` calls of the lower of Genesys's `allowed` and the
/// configured `per_minute`, at most 1; 0 before Genesys reported anything.
fn pressure(count: u32, allowed: u32, per_minute: u32) -> f64 {
    let limit = allowed.min(per_minute);
    if limit == 0 {
        return 0.0;
    }
    (f64::from(count) / f64::from(limit)).min(1.0)
}

/// Retry-After in whole seconds, as Genesys sends it.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

impl GenesysClient {
    /// A client for the org in `settings`, spending `budget`, its token kept in `token_store`.
    pub fn new(
        settings: &GenesysSettings,
        budget: std::sync::Arc<dyn CallBudget>,
        token_store: std::sync::Arc<dyn TokenStore>,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(USER_AGENT)
            .connect_timeout(settings.timeout())
            .timeout(settings.timeout())
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        Ok(Self {
            http,
            login_base: settings.login_base(),
            api_base: settings.api_base(),
            client_id: settings.client_id.clone(),
            client_secret: settings.client_secret.clone(),
            tokens: TokenCache::new(
                Duration::from_secs(settings.token_expiry_margin_s),
                Duration::from_millis(settings.auth_failure_cache_ms),
            ),
            token_store,
            margin: Duration::from_secs(settings.token_expiry_margin_s),
            budget,
            standing: Default::default(),
            reported: Default::default(),
            policy: RetryPolicy::from(&settings.retry),
        })
    }

    pub(super) fn api_url(&self, path: &str) -> Url {
        let mut url = self.api_base.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}{path}"));
        url
    }

    /// `GET /api/v2/conversations/{conversationId}`.
    pub async fn get_conversation(
        &self,
        cx: &mut CallContext,
        id: &ConversationId,
    ) -> Result<Conversation, GenesysError> {
        let url = self.api_url(&format!("/api/v2/conversations/{id}"));
        let response = self
            .send_api(cx, "get_conversation", |http| http.get(url.clone()))
            .await?;
        decode(response, "conversation").await
    }

    /// `POST /api/v2/analytics/conversations/details/query` with `query` (a `ConversationQuery`).
    pub async fn query_conversation_details(
        &self,
        cx: &mut CallContext,
        query: &serde_json::Value,
    ) -> Result<AnalyticsConversationQueryResponse, GenesysError> {
        let url = self.api_url("/api/v2/analytics/conversations/details/query");
        let response = self
            .send_api(cx, "query_conversation_details", |http| {
                http.post(url.clone()).json(query)
            })
            .await?;
        decode(response, "analytics answer").await
    }

    /// `PATCH /api/v2/conversations/{conversationId}/participants/{participantId}/attributes`.
    ///
    /// Any 2xx means accepted, never verified: only a read-back proves the write.
    pub async fn patch_participant_attributes(
        &self,
        cx: &mut CallContext,
        conversation: &ConversationId,
        participant: &str,
        attributes: &AttributeMap,
    ) -> Result<(), GenesysError> {
        let url = self.api_url(&format!(
            "/api/v2/conversations/{conversation}/participants/{participant}/attributes"
        ));
        let body = ParticipantAttributes {
            attributes: attributes.as_map().clone(),
        };
        self.send_api(cx, "patch_participant_attributes", |http| {
            http.patch(url.clone()).json(&body)
        })
        .await
        .map(drop)
    }

    /// `GET /api/v2/conversations/{conversationId}/secureattributes` (`ConversationSecureAttributes`).
    pub async fn get_secure_attributes(
        &self,
        cx: &mut CallContext,
        conversation: &ConversationId,
    ) -> Result<SecureAttributesRead, GenesysError> {
        let url = self.api_url(&format!(
            "/api/v2/conversations/{conversation}/secureattributes"
        ));
        let response = self
            .send_api(cx, "get_secure_attributes", |http| http.get(url.clone()))
            .await?;
        // Not `decode`: a parser's message may quote the body, and this body is personal data.
        let correlation = correlation_id(response.headers());
        response.json().await.map_err(|_| {
            GenesysError::InvalidResponse(format!(
                "secure attributes body did not decode{}",
                Correlation(&correlation)
            ))
        })
    }

    /// `PATCH /api/v2/conversations/{conversationId}/secureattributes` with `values`, merged into
    /// the conversation's (a PATCH ignores `version`). Any 2xx means accepted, never verified.
    pub async fn patch_secure_attributes(
        &self,
        cx: &mut CallContext,
        conversation: &ConversationId,
        values: &SecureValues,
    ) -> Result<(), GenesysError> {
        let url = self.api_url(&format!(
            "/api/v2/conversations/{conversation}/secureattributes"
        ));
        // The one place the values are exposed: the body, built per attempt and dropped with it.
        let body = serde_json::json!({
            "attributes": values
                .expose()
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(v)))
                .collect::<serde_json::Map<_, _>>()
        });
        self.send_api(cx, "patch_secure_attributes", |http| {
            http.patch(url.clone()).json(&body)
        })
        .await
        .map(drop)
    }

    /// `GET /api/v2/conversations/customattributes/schemas` (`ConversationDataSchemaListing`).
    pub async fn list_custom_schemas(
        &self,
        cx: &mut CallContext,
    ) -> Result<Vec<CustomSchemaRead>, GenesysError> {
        let url = self.api_url("/api/v2/conversations/customattributes/schemas");
        let response = self
            .send_api(cx, "list_custom_schemas", |http| http.get(url.clone()))
            .await?;
        Ok(decode::<CustomSchemaListing>(response, "schema listing")
            .await?
            .entities)
    }

    /// `GET /api/v2/conversations/customattributes/schemas/{schemaId}` (`ConversationDataSchema`).
    pub async fn get_custom_schema(
        &self,
        cx: &mut CallContext,
        id: &str,
    ) -> Result<CustomSchemaRead, GenesysError> {
        let url = self.api_url(&format!(
            "/api/v2/conversations/customattributes/schemas/{id}"
        ));
        let response = self
            .send_api(cx, "get_custom_schema", |http| http.get(url.clone()))
            .await?;
        decode(response, "schema").await
    }

    /// `GET /api/v2/conversations/{conversationId}/customattributes/{attributesId}`
    /// (`CustomAttributes`); `None` when the record does not exist (404).
    pub async fn get_custom_record(
        &self,
        cx: &mut CallContext,
        conversation: &ConversationId,
        record: &str,
    ) -> Result<Option<CustomRecordRead>, GenesysError> {
        let url = self.api_url(&format!(
            "/api/v2/conversations/{conversation}/customattributes/{record}"
        ));
        match self
            .send_api(cx, "get_custom_attributes", |http| http.get(url.clone()))
            .await
        {
            Ok(response) => decode(response, "custom attributes").await.map(Some),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PUT /api/v2/conversations/{conversationId}/customattributes/bulk` with one record
    /// (`CustomAttributesUpdateRequest`): creates it, or replaces it. Answers the record as Genesys
    /// shows it after the write, when its answer holds it.
    pub async fn put_custom_record(
        &self,
        cx: &mut CallContext,
        conversation: &ConversationId,
        body: &CustomRecordWrite,
    ) -> Result<Option<CustomRecordRead>, GenesysError> {
        self.write_custom_record(
            cx,
            conversation,
            body,
            reqwest::Method::PUT,
            "put_custom_attributes_bulk",
        )
        .await
    }

    /// `PATCH /api/v2/conversations/{conversationId}/customattributes/bulk` with one record
    /// (`CustomAttributesPatchRequest`): amends the fields sent. Answers as
    /// [`GenesysClient::put_custom_record`] does.
    pub async fn patch_custom_record(
        &self,
        cx: &mut CallContext,
        conversation: &ConversationId,
        body: &CustomRecordWrite,
    ) -> Result<Option<CustomRecordRead>, GenesysError> {
        self.write_custom_record(
            cx,
            conversation,
            body,
            reqwest::Method::PATCH,
            "patch_custom_attributes_bulk",
        )
        .await
    }

    /// A bulk write of the one record `body` to `…/customattributes/bulk` with `method`. The bulk
    /// form, not the single record's, because its answer (`CustomAttributesBulkUpdateResponseMap`,
    /// "results after updating") holds the record as it stands after the write, with each field's
    /// time of writing: what a read back would show, without the read. The record's own status in
    /// it decides, as an HTTP status would.
    async fn write_custom_record(
        &self,
        cx: &mut CallContext,
        conversation: &ConversationId,
        body: &CustomRecordWrite,
        method: reqwest::Method,
        op: &'static str,
    ) -> Result<Option<CustomRecordRead>, GenesysError> {
        let url = self.api_url(&format!(
            "/api/v2/conversations/{conversation}/customattributes/bulk"
        ));
        let sent = [body];
        let response = self
            .send_api(cx, op, |http| {
                http.request(method.clone(), url.clone()).json(&sent)
            })
            .await?;
        let correlation = correlation_id(response.headers());
        let mut answer: CustomRecordResults = decode(response, "custom attributes results").await?;
        let Some(result) = answer.results.remove(&body.id) else {
            // Accepted, with nothing said of the record: a read shows it.
            return Ok(None);
        };
        match result.status_code {
            Some(status) if status >= 500 => Err(GenesysError::Server {
                status,
                correlation_id: correlation,
            }),
            Some(status) if status >= 400 => Err(GenesysError::rejected(
                status,
                Some(ErrorBody {
                    message: result.error_message,
                    ..ErrorBody::default()
                }),
                correlation,
            )),
            _ => Ok(result.attributes),
        }
    }

    /// The client-credentials grant, counted by outcome.
    async fn grant(&self) -> Result<(SecretString, Duration), GenesysError> {
        let result = self.request_grant().await;
        let outcome = if result.is_ok() { "granted" } else { "failed" };
        metrics::counter!(crate::metrics::TOKEN_GRANTS, "outcome" => outcome).increment(1);
        result
    }

    /// The client-credentials grant, exactly as the SDKs send it: Basic auth and a form body.
    async fn request_grant(&self) -> Result<(SecretString, Duration), GenesysError> {
        let mut url = self.login_base.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}/oauth/token"));
        let response = self
            .send_with_retry("token_grant", None, |http| {
                http.post(url.clone())
                    .basic_auth(&self.client_id, Some(self.client_secret.expose_secret()))
                    .form(&[("grant_type", "client_credentials")])
            })
            .await?;
        let token: TokenResponse = response.json().await.map_err(|e| {
            GenesysError::InvalidResponse(format!("token body did not decode ({e})"))
        })?;
        if token.access_token.is_empty() {
            return Err(GenesysError::InvalidResponse("empty access token".into()));
        }
        tracing::info!(
            expires_in = token.expires_in,
            "obtained a Genesys access token"
        );
        Ok((
            SecretString::from(token.access_token),
            Duration::from_secs(token.expires_in),
        ))
    }

    /// Whether a token can be had: the cached one, or a grant (whose failure is cached briefly, so
    /// readiness probes never hammer the login service).
    pub async fn ready(&self) -> Result<(), GenesysError> {
        self.token().await.map(drop)
    }

    /// The cached token; on a miss, the store's, which grants one when it has none.
    async fn token(&self) -> Result<std::sync::Arc<AccessToken>, GenesysError> {
        self.tokens
            .get(|| async {
                let store = &self.token_store;
                // A store error here came before any grant: a slow answer is worth one more try
                // before this replica grants a token of its own.
                let mut stored = store.get(self.margin, Box::pin(self.grant())).await;
                if let Err(TokenError::Store(e)) = &stored {
                    if e.transient {
                        stored = store.get(self.margin, Box::pin(self.grant())).await;
                    }
                }
                match stored {
                    // The local cache takes the margin off again: give back what the store took off.
                    Ok((token, usable)) => Ok((token, usable + self.margin)),
                    Err(TokenError::Grant(e)) => Err(e),
                    Err(TokenError::Store(e)) => {
                        metrics::counter!(crate::metrics::REDIS_FALLBACKS, "what" => "token").increment(1);
                        tracing::warn!(error = %e, "Redis is unreachable: granting a token for this replica alone");
                        self.grant().await
                    }
                }
            })
            .await
    }

    /// Drops a refused token here and, if still current, for the whole deployment.
    async fn invalidate(&self, stale: &AccessToken) {
        self.tokens.invalidate(stale).await;
        if let Err(e) = self.token_store.invalidate(stale.expose()).await {
            tracing::warn!(error = %e, "could not drop the refused token in Redis");
        }
    }

    /// Reserves `calls` slots of the rate budget, the last within `max_wait`, to spend through a
    /// [`CallContext::prepaid`]. Refused, nothing is reserved: the caller can be answered at once.
    pub async fn reserve_calls(
        &self,
        calls: u32,
        max_wait: Duration,
    ) -> Result<Vec<tokio::time::Instant>, GenesysError> {
        self.budget
            .reserve(calls, max_wait)
            .await
            .map_err(rate_limited)
    }

    /// Whether `calls` slots could be had, the last within `max_wait`, without reserving them.
    pub async fn check_calls(&self, calls: u32, max_wait: Duration) -> Result<(), GenesysError> {
        self.budget
            .check(calls, max_wait)
            .await
            .map_err(rate_limited)
    }

    /// The slot this call may use: a prepaid one, or one from the budget within the context's
    /// deadline (past it, the call is `RateLimited`).
    async fn take_budget(&self, cx: &mut CallContext) -> Result<(), GenesysError> {
        if let Some(slot) = cx.prepaid.pop_front() {
            tokio::time::sleep_until(slot).await;
            return Ok(());
        }
        let max_wait = cx
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        self.budget.acquire(max_wait).await.map_err(rate_limited)
    }

    /// The budget's standing and Genesys's latest report of it.
    pub async fn budget_view(&self) -> BudgetView {
        let reported = *self.reported.lock().unwrap_or_else(|p| p.into_inner());
        BudgetView {
            standing: self.budget.standing().await,
            reported: reported.map(|(r, at)| (r, at.elapsed())),
        }
    }

    /// How full the token's window was at Genesys's latest answer, from 0 (empty, or not yet
    /// known) to 1 (the configured budget or Genesys's own allowance spent).
    pub fn budget_pressure(&self) -> f64 {
        let packed = self.standing.load(std::sync::atomic::Ordering::Relaxed);
        pressure(
            (packed >> 32) as u32,
            packed as u32,
            self.budget.per_minute(),
        )
    }

    /// Corrects the budget from Genesys's own figures. Far from the limit a correction changes no
    /// decision, so on Redis it is sent only near it (or when Genesys reports a lower limit).
    async fn observe_standing(&self, reported: Reported) {
        *self.reported.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((reported, std::time::Instant::now()));
        self.standing.store(
            (u64::from(reported.count) << 32) | u64::from(reported.allowed),
            std::sync::atomic::Ordering::Relaxed,
        );
        let per_minute = self.budget.per_minute();
        if reported.count.saturating_mul(2) >= reported.allowed.min(per_minute)
            || reported.allowed < per_minute
        {
            self.budget.observe(reported).await;
        } else {
            crate::metrics::genesys_budget(reported.count, reported.allowed, reported.reset);
        }
    }

    /// An API call with a bearer token; a 401 drops the token and tries once more with a new one.
    pub(super) async fn send_api<F>(
        &self,
        cx: &mut CallContext,
        op: &'static str,
        build: F,
    ) -> Result<Response, GenesysError>
    where
        F: Fn(&reqwest::Client) -> RequestBuilder,
    {
        let mut renewed = false;
        loop {
            let token = self.token().await?;
            // On the heap: the request, its retries and their waits are kilobytes of state that
            // every caller's future would otherwise carry, and move, whole.
            match Box::pin(self.send_with_retry(op, Some((&token, &mut *cx)), &build)).await {
                Err(GenesysError::Auth { status: 401, .. }) if !renewed => {
                    tracing::info!(op, "Genesys refused the cached token; renewing it once");
                    self.invalidate(&token).await;
                    renewed = true;
                }
                other => return other,
            }
        }
    }

    /// One logical call under the retry policy.
    /// `api` is the token and the call's context of an API call; a token grant has neither: it is
    /// not charged to the budget.
    async fn send_with_retry<F>(
        &self,
        op: &'static str,
        mut api: Option<(&AccessToken, &mut CallContext)>,
        build: F,
    ) -> Result<Response, GenesysError>
    where
        F: Fn(&reqwest::Client) -> RequestBuilder,
    {
        let started = Instant::now();
        let api_call = api.is_some();
        let own_limit = api_call && limited_on_its_own(op);
        if own_limit {
            if let Some(wait) = self.budget.operation_paused(op).await {
                // Refused at once: Genesys would only answer 429 again.
                return Err(GenesysError::RateLimited {
                    retry_after: Some(wait.max(Duration::from_secs(1))),
                    correlation_id: None,
                });
            }
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            // One span an attempt, by OpenTelemetry's HTTP client conventions: the path as a
            // template, so no id (a conversation's, a channel's) reaches a trace.
            let span = tracing::info_span!(
                target: crate::trace::TRACE_TARGET,
                "genesys call",
                otel.name = tracing::field::Empty,
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
                http.request.method = tracing::field::Empty,
                url.template = tracing::field::Empty,
                server.address = tracing::field::Empty,
                // Integers, as OpenTelemetry's conventions type them: tracing-opentelemetry
                // records a `u64` as text, so these are `i64`.
                http.request.resend_count = i64::from(attempts - 1),
                http.response.status_code = tracing::field::Empty,
                error.type = tracing::field::Empty,
                genesys.operation = op,
                genesys.correlation_id = tracing::field::Empty,
                patchbay.budget_wait_ms = tracing::field::Empty,
            );
            let mut request = build(&self.http).header(ACCEPT, "application/json");
            if let Some((token, cx)) = api.as_mut() {
                // The budget counts API calls (Genesys limits them per token); grants are not among them.
                let waited = std::time::Instant::now();
                self.take_budget(cx).instrument(span.clone()).await?;
                cx.sent += 1;
                span.record(
                    "patchbay.budget_wait_ms",
                    waited.elapsed().as_millis() as u64,
                );
                request = request.bearer_auth(token.expose());
            }
            let sent_at = std::time::Instant::now();
            let result = match request.build() {
                Ok(request) => {
                    let template = url_template(request.url().path());
                    let method = request.method().as_str().to_string();
                    span.record("otel.name", format!("{method} {template}"));
                    span.record("http.request.method", method.as_str());
                    span.record("url.template", template.as_str());
                    span.record(
                        "server.address",
                        request.url().host_str().unwrap_or_default(),
                    );
                    self.http.execute(request).instrument(span.clone()).await
                }
                Err(e) => Err(e),
            };
            match &result {
                Ok(r) => {
                    span.record("http.response.status_code", i64::from(r.status().as_u16()));
                    if let Some(id) = correlation_id(r.headers()) {
                        span.record("genesys.correlation_id", id.as_str());
                    }
                    if !r.status().is_success() {
                        span.record("error.type", r.status().as_str());
                        span.record("otel.status_code", "ERROR");
                    }
                }
                Err(e) => {
                    span.record(
                        "error.type",
                        if e.is_timeout() {
                            "timeout"
                        } else {
                            "transport"
                        },
                    );
                    span.record("otel.status_code", "ERROR");
                }
            }
            observe(
                op,
                &result,
                sent_at.elapsed(),
                api.as_mut().map(|(_, cx)| &mut **cx),
            );
            let reported = result
                .as_ref()
                .ok()
                .filter(|_| api_call)
                .and_then(|r| reported_standing(r.headers()));
            // A limit lower than the token's budget applies to this call: the operation's own.
            let own_standing =
                own_limit && reported.is_some_and(|r| r.allowed < self.budget.per_minute());
            match reported {
                Some(r) if own_standing && r.count >= r.allowed => {
                    self.budget.pause_operation(op, r.reset).await
                }
                Some(r) if !own_standing => self.observe_standing(r).await,
                _ => {}
            }
            // A 429 is the token's when Genesys reports the token's window spent.
            let token_spent = !own_standing && reported.is_some_and(|r| r.count >= r.allowed);
            let attempt = classify(result, api_call).await;
            match attempt {
                Attempt::Done(response) => return Ok(response),
                Attempt::Unauthorized(err) | Attempt::Fail(err) => return Err(err),
                Attempt::Retry(RetryReason::RateLimited, wait, err)
                    if own_limit && !token_spent =>
                {
                    // Its own limit, not the token's: hold back only this operation, and answer
                    // now rather than wait out a window the caller's deadline rarely covers.
                    self.budget
                        .pause_operation(op, wait.unwrap_or(super::retry::DEFAULT_RETRY_AFTER))
                        .await;
                    return Err(err);
                }
                Attempt::Retry(reason, wait, err) => {
                    if reason == RetryReason::RateLimited && api_call {
                        // Every replica pauses, not only this call.
                        self.budget
                            .pause(wait.unwrap_or(super::retry::DEFAULT_RETRY_AFTER))
                            .await;
                    }
                    match self
                        .policy
                        .next_delay(reason, attempts, started.elapsed(), wait)
                    {
                        Some(delay) => {
                            metrics::counter!(crate::metrics::RETRIES, "reason" => reason.as_str())
                                .increment(1);
                            tracing::warn!(
                                op,
                                attempt = attempts,
                                ?reason,
                                delay_ms = delay.as_millis() as u64,
                                error = %err,
                                "Genesys call failed; retrying"
                            );
                            tokio::time::sleep(delay).await;
                        }
                        None => return Err(err),
                    }
                }
            }
        }
    }
}

/// A path as a template: every segment but plain words and the API version becomes `{id}`, so
/// conversation, participant and channel ids stay out of traces.
pub fn url_template(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            let word = segment
                .chars()
                .all(|c| c.is_ascii_alphabetic() || c == '-' || c == '_');
            let version = segment
                .strip_prefix('v')
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
            if word || version {
                segment
            } else {
                "{id}"
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A budget refusal as the caller sees it: rate limited, with the wait (at least a second) to retry.
fn rate_limited(wait: WaitTooLong) -> GenesysError {
    GenesysError::RateLimited {
        retry_after: Some(wait.0.max(Duration::from_secs(1))),
        correlation_id: None,
    }
}

/// Counts and logs one attempt, with its correlation id, on a debug event of its own. The id is also
/// kept in the call's context, which the outcome carries to the request's span: recording it on the
/// span here would repeat the field on every line, once per call.
fn observe(
    op: &'static str,
    result: &Result<Response, reqwest::Error>,
    elapsed: Duration,
    cx: Option<&mut CallContext>,
) {
    let status = match result {
        Ok(r) => r.status().as_u16().to_string(),
        Err(e) if e.is_timeout() => "timeout".into(),
        Err(_) => "error".into(),
    };
    let correlation = result
        .as_ref()
        .ok()
        .and_then(|r| correlation_id(r.headers()));
    if let (Some(id), Some(cx)) = (&correlation, cx) {
        cx.correlation_id = Some(id.clone());
    }
    tracing::debug!(
        op,
        status = %status,
        correlation_id = correlation.as_deref().unwrap_or_default(),
        elapsed_ms = elapsed.as_millis() as u64,
        "Genesys call"
    );
    crate::metrics::genesys_call(op, status, elapsed);
}

/// Sorts an answer (or its absence) into what the retry loop must do.
async fn classify(result: Result<Response, reqwest::Error>, api_call: bool) -> Attempt {
    let response = match result {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Attempt::Retry(RetryReason::Timeout, None, GenesysError::Timeout)
        }
        Err(e) if e.is_connect() => {
            return Attempt::Retry(
                RetryReason::Connect,
                None,
                GenesysError::Transport(describe(e)),
            )
        }
        Err(e) => return Attempt::Fail(GenesysError::Transport(describe(e))),
    };
    let status = response.status();
    if status.is_success() {
        return Attempt::Done(response);
    }
    let correlation = correlation_id(response.headers());
    let wait = retry_after(response.headers());
    let code = status.as_u16();
    if let Some(reason) = is_retryable_status(code) {
        let err = if reason == RetryReason::RateLimited {
            GenesysError::RateLimited {
                retry_after: wait,
                correlation_id: correlation,
            }
        } else {
            GenesysError::Server {
                status: code,
                correlation_id: correlation,
            }
        };
        return Attempt::Retry(reason, wait, err);
    }
    if !api_call && matches!(status, StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED) {
        // The login service answers `invalid_client` with 400 or 401: the operator's credentials are wrong.
        return Attempt::Fail(GenesysError::Auth {
            status: code,
            correlation_id: correlation,
        });
    }
    if status == StatusCode::UNAUTHORIZED {
        return Attempt::Unauthorized(GenesysError::Auth {
            status: code,
            correlation_id: correlation,
        });
    }
    let body = response.json::<ErrorBody>().await.ok();
    Attempt::Fail(GenesysError::rejected(code, body, correlation))
}

/// reqwest's message and its source chain, without the URL: a notification channel's URL carries
/// the channel's id, a secret.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_path_template_keeps_the_api_words_and_hides_every_id() {
        assert_eq!(
            url_template("/api/v2/conversations/6f1d8c62-3b3e-4f0a-9a57-2d4c8e1b7a01/participants/0c5a1f0e-8d2b-4c8e-9b1a-1e2f3a4b5c01/attributes"),
            "/api/v2/conversations/{id}/participants/{id}/attributes"
        );
        assert_eq!(
            url_template("/api/v2/notifications/channels/streaming-0-fmtdmf8cdis7jh14udg5p89t6z/subscriptions"),
            "/api/v2/notifications/channels/{id}/subscriptions"
        );
        assert_eq!(url_template("/oauth/token"), "/oauth/token");
    }
    use super::*;

    #[test]
    fn pressure_is_the_share_of_the_lower_limit_spent() {
        assert_eq!(pressure(0, 0, 280), 0.0, "nothing reported yet");
        assert_eq!(
            pressure(140, 300, 280),
            0.5,
            "the configured budget is lower"
        );
        assert_eq!(pressure(50, 100, 280), 0.5, "Genesys allows fewer");
        assert_eq!(pressure(400, 300, 280), 1.0);
    }
}
