//! RFC 9457 problem+json: the one error shape callers see, rendered and logged in one place.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tower_http::request_id::RequestId;

use crate::domain::DomainError;
use crate::genesys::GenesysError;
use crate::service::UpdateError;

/// Where the problem types are documented; `type` is this plus the code.
pub const PROBLEM_TYPE_BASE: &str = "https://patchbay.dev/problems/";

/// Every error a caller can get, each with a stable `code`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    /// `reason` is for the log only: the caller learns nothing of why.
    #[error("{reason}")]
    Unauthorized {
        challenge: Challenge,
        reason: String,
    },
    #[error("no such route")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the request body is over {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the attributes take {size} bytes, over the limit of {limit}")]
    AttributesTooLarge { size: usize, limit: usize },
    #[error("the request took longer than server.request_timeout_ms")]
    RequestTimeout,
    #[error(transparent)]
    Update(#[from] UpdateError),
    #[error(transparent)]
    Lookup(crate::lookup::LookupError),
    #[error("the idempotency key was used before with a different body")]
    IdempotencyConflict,
    #[error("no key is configured to store secure attributes")]
    SecureNotStored,
    /// A custom-attributes write refused before it was made, or a conflict it could not settle.
    #[error(transparent)]
    Custom(crate::custom::CustomError),
    /// A queued job's secure attributes do not open with the configured keys.
    #[error(transparent)]
    SecureKeyMissing(crate::seal::SealError),
    #[error("a request with this idempotency key is still being answered")]
    IdempotencyInProgress,
    #[error("the queue store failed: {0}")]
    QueueUnavailable(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("no such job")]
    JobNotFound,
    #[error("the job is not dead")]
    NotDead,
}

impl From<crate::store::queue::QueueError> for ApiError {
    fn from(e: crate::store::queue::QueueError) -> Self {
        ApiError::QueueUnavailable(e.to_string())
    }
}

impl From<crate::lookup::LookupError> for ApiError {
    fn from(e: crate::lookup::LookupError) -> Self {
        match e {
            crate::lookup::LookupError::Update(u) => ApiError::Update(u),
            other => ApiError::Lookup(other),
        }
    }
}

impl From<crate::custom::CustomError> for ApiError {
    fn from(e: crate::custom::CustomError) -> Self {
        match e {
            crate::custom::CustomError::Update(u) => ApiError::Update(u),
            other => ApiError::Custom(other),
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ApiError::InvalidRequest(e.0)
    }
}

/// How a 401 tells the caller to authenticate (`WWW-Authenticate`, RFC 9110 §11.6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// An API key, as `Authorization: Bearer KEY` (or `X-API-Key`).
    Bearer,
    /// A webhook route with `scheme = "basic"`.
    Basic,
    /// A webhook route checked by a signature over the body: no standard scheme names it.
    Signature,
}

impl Challenge {
    pub fn header_value(self) -> &'static str {
        match self {
            Challenge::Bearer => r#"Bearer realm="patchbay""#,
            Challenge::Basic => r#"Basic realm="patchbay", charset="UTF-8""#,
            Challenge::Signature => r#"Signature realm="patchbay""#,
        }
    }
}

/// The rendered fields, carried in the response's extensions until [`render_problems`] writes them.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub retry_after: Option<Duration>,
    pub challenge: Option<Challenge>,
    /// The full internal cause, for the log only.
    pub cause: String,
}

/// Every problem `code` Patchbay answers with.
pub const PROBLEM_CODES: &[&str] = &[
    "invalid_request",
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "conversation_not_found",
    "participant_not_found",
    "job_not_found",
    "conversation_ended",
    "ambiguous_lookup",
    "idempotency_in_progress",
    "not_dead",
    "payload_too_large",
    "attributes_too_large",
    "idempotency_key_reused",
    "secure_not_stored",
    "secure_key_missing",
    "custom_schema_not_found",
    "custom_invalid",
    "custom_conflict",
    "rate_limited",
    "upstream_auth_failed",
    "upstream_error",
    "queue_unavailable",
    "shutting_down",
    "upstream_timeout",
];

/// An RFC 9457 problem, as every error is answered (`application/problem+json`): the one body,
/// written by [`render_problems`] and kept with an idempotent answer, and documented in OpenAPI.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Problem)]
pub struct ProblemBody<'a> {
    /// A URI naming the problem type: `https://patchbay.dev/problems/<code>`.
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    /// A sentence for people; never internals.
    detail: &'a str,
    /// Stable and machine-readable: one of [`PROBLEM_CODES`].
    #[schema(example = "conversation_ended")]
    code: &'a str,
    /// The request's id, as in the `x-request-id` header; absent from an answer replayed for an
    /// `Idempotency-Key`, which keeps the first request's body.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

impl Problem {
    /// The body callers get: the request's id when there is one.
    pub fn body<'a>(&'a self, request_id: Option<&'a str>) -> ProblemBody<'a> {
        ProblemBody {
            kind: format!("{PROBLEM_TYPE_BASE}{}", self.code),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
            request_id,
        }
    }
}

impl ApiError {
    pub fn problem(&self) -> Problem {
        use GenesysError as G;
        use UpdateError as U;
        let (status, code, title, detail, retry_after) = match self {
            ApiError::InvalidRequest(d) => (StatusCode::BAD_REQUEST, "invalid_request", "Invalid request", d.clone(), None),
            ApiError::Unauthorized { .. } => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                "The credential or signature this route requires is missing or wrong.".into(),
                None,
            ),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found", "Not found", "No such route.".into(), None),
            ApiError::Lookup(crate::lookup::LookupError::Ambiguous { candidates, .. }) => (
                StatusCode::CONFLICT,
                "ambiguous_lookup",
                "Ambiguous lookup",
                format!(
                    "{self}: {}. Send the conversationId, or \"pick\": \"latest\" in the lookup.",
                    candidates
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None,
            ),
            ApiError::Lookup(_) => (
                StatusCode::NOT_FOUND,
                "conversation_not_found",
                "Conversation not found",
                format!("{self}."),
                None,
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
                "This route does not accept that method.".into(),
                None,
            ),
            ApiError::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "Payload too large", self.to_string(), None),
            ApiError::AttributesTooLarge { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "attributes_too_large",
                "Attributes too large",
                self.to_string(),
                None,
            ),
            ApiError::RequestTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "Upstream timeout",
                "Genesys Cloud did not answer in time; the update may or may not have been applied.".into(),
                None,
            ),
            ApiError::SecureNotStored => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "secure_not_stored",
                "Secure attributes are not stored",
                "Secure attributes are stored only encrypted, and no key is configured (secure.keys): a job, a dead letter or an idempotent answer would keep their values at rest. Send the request without `Prefer: respond-async` and without an `Idempotency-Key`, or configure a key.".into(),
                None,
            ),
            ApiError::Custom(e @ crate::custom::CustomError::SchemaNotFound(_)) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "custom_schema_not_found",
                "No such custom-attributes schema",
                format!("{e}: `customSchema` takes a schema's id or its name (its JSON Schema title). Nothing was written."),
                None,
            ),
            ApiError::Custom(e @ crate::custom::CustomError::Invalid { .. }) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "custom_invalid",
                "Custom attributes do not fit their schema",
                format!("{e}. Nothing was written."),
                None,
            ),
            ApiError::Custom(crate::custom::CustomError::Update(e)) => {
                return ApiError::Update(e.clone()).problem()
            }
            ApiError::Custom(e @ crate::custom::CustomError::Conflict(_)) => (
                StatusCode::CONFLICT,
                "custom_conflict",
                "Custom attributes kept changing",
                format!("{e}. Other writers kept changing the record; send the update again."),
                None,
            ),
            ApiError::SecureKeyMissing(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "secure_key_missing",
                "Secure attributes cannot be opened",
                format!("{e}. Configure that key in secure.keys again and replay the job."),
                None,
            ),
            ApiError::IdempotencyConflict => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency key reused",
                "This Idempotency-Key was used before with a different body; use a new key for a new request.".into(),
                None,
            ),
            ApiError::IdempotencyInProgress => (
                StatusCode::CONFLICT,
                "idempotency_in_progress",
                "Request in progress",
                "A request with this Idempotency-Key is still being answered; retry shortly.".into(),
                Some(Duration::from_secs(1)),
            ),
            ApiError::QueueUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_unavailable",
                "Queue unavailable",
                "The update could not be stored durably, so it was not accepted; retry later.".into(),
                Some(Duration::from_secs(5)),
            ),
            ApiError::ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "Shutting down",
                "This instance is shutting down; retry, and another will answer.".into(),
                Some(Duration::from_secs(5)),
            ),
            ApiError::JobNotFound => (StatusCode::NOT_FOUND, "job_not_found", "Job not found", "No job has this id.".into(), None),
            ApiError::NotDead => (
                StatusCode::CONFLICT,
                "not_dead",
                "Job not dead",
                "Only a dead job can be replayed.".into(),
                None,
            ),
            ApiError::Update(U::ConversationNotFound(c)) => (
                StatusCode::NOT_FOUND,
                "conversation_not_found",
                "Conversation not found",
                format!("Conversation {c} does not exist."),
                None,
            ),
            ApiError::Update(U::ParticipantNotFound(c, who)) => (
                StatusCode::NOT_FOUND,
                "participant_not_found",
                "Participant not found",
                format!("Conversation {c} has no participant matching `{who}`."),
                None,
            ),
            ApiError::Update(U::ConversationEnded(c)) => (
                StatusCode::CONFLICT,
                "conversation_ended",
                "Conversation ended",
                format!("Conversation {c} has ended; its attributes can no longer be changed."),
                None,
            ),
            ApiError::Update(U::Upstream(g)) => match g {
                G::RateLimited { retry_after, .. } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "Rate limited",
                    "Genesys Cloud is rate limiting; try again later.".into(),
                    Some(retry_after.unwrap_or(crate::genesys::retry::DEFAULT_RETRY_AFTER)),
                ),
                G::Auth { .. } | G::Rejected { status: 403, .. } => (
                    StatusCode::BAD_GATEWAY,
                    "upstream_auth_failed",
                    "Upstream authentication failed",
                    "Genesys Cloud rejected Patchbay's OAuth client or its permissions; the operator must fix the configuration.".into(),
                    None,
                ),
                G::Timeout => (
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    "Upstream timeout",
                    "Genesys Cloud did not answer in time.".into(),
                    None,
                ),
                G::Rejected { status, .. } => (
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    "Upstream error",
                    format!("Genesys Cloud refused the call (HTTP {status})."),
                    None,
                ),
                G::Server { .. } | G::Transport(_) | G::InvalidResponse(_) => (
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    "Upstream error",
                    "Genesys Cloud failed to handle the call.".into(),
                    None,
                ),
            },
        };
        Problem {
            status,
            code,
            title,
            detail,
            retry_after,
            challenge: match self {
                ApiError::Unauthorized { challenge, .. } => Some(*challenge),
                _ => None,
            },
            cause: self.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let mut response = problem.status.into_response();
        response.extensions_mut().insert(problem);
        response
    }
}

/// Writes the problem+json body with the request id, and logs each error exactly once.
pub async fn render_problems(request: Request, next: Next) -> Response {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let response = next.run(request).await;
    let Some(problem) = response.extensions().get::<Problem>().cloned() else {
        return response;
    };
    // On the trace alone: the log line below says it once.
    tracing_opentelemetry::OpenTelemetrySpanExt::set_attribute(
        &tracing::Span::current(),
        "code",
        problem.code,
    );
    if problem.status.is_server_error() {
        tracing::error!(code = problem.code, status = problem.status.as_u16(), cause = %problem.cause, "request failed");
    } else {
        tracing::info!(code = problem.code, status = problem.status.as_u16(), cause = %problem.cause, "request refused");
    }
    let body = problem.body(Some(&request_id));
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(challenge) = problem.challenge {
        parts.headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge.header_value()),
        );
    }
    if let Some(wait) = problem.retry_after {
        parts.headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs().max(1)),
        );
    }
    let json = serde_json::to_vec(&body).expect("problem bodies serialize");
    Response::from_parts(parts, axum::body::Body::from(json))
}
