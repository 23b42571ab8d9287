//! The documented answers of the write endpoints, one list that both handlers' OpenAPI paths
//! name. Refusals that may pass carry `Retry-After`; `x-request-id`, on every answer of every
//! endpoint, is added to the whole document at once (`openapi::document`).

use super::exchange::AttributesResponse;
use super::intake::Accepted;
use super::problem::ProblemBody;

/// The answers of the two write endpoints, `POST /v1/attributes` and `POST /v1/hooks/{name}`.
// Never built: it exists for its OpenAPI description, so its variants' sizes cost nothing.
#[allow(clippy::large_enum_variant)]
#[derive(utoipa::IntoResponses)]
pub enum WriteResponses {
    /// Written, and read back from Genesys
    #[response(status = 200,
        headers(("Idempotent-Replayed" = String, description = "`true` on the first answer to an `Idempotency-Key`, replayed")))]
    Written(AttributesResponse),
    /// Accepted for asynchronous delivery: committed durably
    #[response(status = 202, headers(("Idempotent-Replayed" = String, description = "`true` on the first answer to an `Idempotency-Key`, replayed"), ("Location" = String, description = "/v1/jobs/<jobId>")))]
    Accepted(Accepted<'static>),
    /// invalid_request
    #[response(status = 400, content_type = "application/problem+json",
        headers(("Idempotent-Replayed" = String, description = "`true` on the first answer to an `Idempotency-Key`, replayed")))]
    BadRequest(ProblemBody<'static>),
    /// unauthorized
    #[response(status = 401, content_type = "application/problem+json",
        headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"patchbay\"`; on a webhook route, `Basic` or `Signature` by its scheme")))]
    Unauthorized(ProblemBody<'static>),
    /// conversation_not_found, participant_not_found, or (hooks) not_found
    #[response(status = 404, content_type = "application/problem+json",
        headers(("Idempotent-Replayed" = String, description = "`true` on the first answer to an `Idempotency-Key`, replayed")))]
    NotFound(ProblemBody<'static>),
    /// conversation_ended, idempotency_in_progress, custom_conflict
    #[response(status = 409, content_type = "application/problem+json",
        headers(("Idempotent-Replayed" = String, description = "`true` on the first answer to an `Idempotency-Key`, replayed")))]
    Conflict(ProblemBody<'static>),
    /// payload_too_large
    #[response(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(ProblemBody<'static>),
    /// attributes_too_large, idempotency_key_reused, secure_not_stored, custom_invalid,
    /// custom_schema_not_found
    #[response(status = 422, content_type = "application/problem+json",
        headers(("Idempotent-Replayed" = String, description = "`true` on the first answer to an `Idempotency-Key`, replayed")))]
    Unprocessable(ProblemBody<'static>),
    /// rate_limited (with Retry-After)
    #[response(status = 429, content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait before trying again")))]
    RateLimited(ProblemBody<'static>),
    /// upstream_auth_failed, upstream_error
    #[response(status = 502, content_type = "application/problem+json")]
    BadGateway(ProblemBody<'static>),
    /// queue_unavailable, shutting_down (with Retry-After)
    #[response(status = 503, content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait before trying again")))]
    Unavailable(ProblemBody<'static>),
    /// upstream_timeout
    #[response(status = 504, content_type = "application/problem+json")]
    Timeout(ProblemBody<'static>),
}
