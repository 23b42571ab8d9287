//! The OpenAPI 3.1 document, generated from the handlers' annotations and the types they use, so it
//! cannot drift from the code. Served at `GET /openapi.json`.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::exchange::{AttributesResponse, MismatchBody};
use super::jobs::{DeadLetters, JobView};
use crate::api::health::Readiness;
use crate::queue::{JobStatus, StoredProblem};

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
    "rate_limited",
    "upstream_auth_failed",
    "upstream_error",
    "queue_unavailable",
    "shutting_down",
    "upstream_timeout",
];

/// An RFC 9457 problem, as every error is answered (`application/problem+json`).
#[derive(ToSchema)]
#[schema(as = Problem)]
#[allow(dead_code)]
pub struct ProblemDoc {
    /// A URI naming the problem type: `https://patchbay.dev/problems/<code>`.
    #[schema(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    /// A sentence for people; never internals.
    detail: String,
    /// Stable and machine-readable.
    #[schema(inline, value_type = String, example = "conversation_ended")]
    code: String,
    /// The request's id, as in the `x-request-id` header.
    #[schema(rename = "requestId")]
    request_id: String,
}

/// A Genesys participant purpose (`crate::domain::PURPOSES`; any letter case is accepted).
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = Purpose, rename_all = "lowercase")]
pub enum PurposeDoc {
    Customer,
    Agent,
    User,
    External,
    Acd,
    Ivr,
    Api,
    Botflow,
    Campaign,
    Dialer,
    Fax,
    Group,
    Inbound,
    Manual,
    Outbound,
    Station,
    Voicemail,
    Voicesurveyflow,
    Workflow,
}

/// An attribute value: strings are written as they are; numbers and booleans as their JSON text.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = AttributeValue)]
pub enum AttributeValueDoc {
    String(String),
    Number(f64),
    Boolean(bool),
}

/// The body of `POST /v1/attributes`.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = AttributesRequest)]
pub struct AttributesRequestDoc {
    /// The live conversation. Required unless `lookup` is sent instead.
    #[schema(
        rename = "conversationId",
        nullable = false,
        example = "6f1d8c62-3b3e-4f0a-9a57-2d4c8e1b7a01",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    conversation_id: Option<String>,
    /// Instead of `conversationId`: find the live conversation.
    #[schema(nullable = false)]
    lookup: Option<LookupDoc>,
    /// The participant to write to. Absent (or empty): the purpose selects one.
    #[schema(
        rename = "participantId",
        nullable = false,
        pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"
    )]
    participant_id: Option<String>,
    /// A Genesys participant purpose; `customer` by default.
    #[schema(nullable = false)]
    purpose: Option<PurposeDoc>,
    /// At least one attribute. UTF-8 bytes of keys and values within `limits.max_attributes_bytes`.
    attributes: std::collections::BTreeMap<String, AttributeValueDoc>,
    /// Override `verify.enabled`.
    #[schema(nullable = false)]
    verify: Option<bool>,
}

/// Exactly one of `userId`, `ani` and `externalContactId`.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = Lookup)]
pub struct LookupDoc {
    /// The agent's Genesys user id: their live conversation (the agent by default).
    #[schema(rename = "userId", nullable = false)]
    user_id: Option<String>,
    /// The number the customer called from, with its country code: `+13175550123`, `13175550123`,
    /// `tel:+13175550123`; spaces, dashes, dots and parentheses are ignored.
    #[schema(nullable = false, example = "+13175550123")]
    ani: Option<String>,
    /// The Genesys external contact on the conversation.
    #[schema(rename = "externalContactId", nullable = false)]
    external_contact_id: Option<String>,
    /// `voice` by default.
    #[schema(rename = "mediaType", nullable = false)]
    media_type: Option<String>,
    /// `latest`: the newest of several matches, instead of 409 `ambiguous_lookup`.
    #[schema(nullable = false)]
    pick: Option<String>,
}

/// The 202 answer of an asynchronous request.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = Accepted)]
pub struct AcceptedDoc {
    #[schema(rename = "jobId")]
    job_id: String,
    status: JobStatus,
}

/// The answers of the two write endpoints, `POST /v1/attributes` and `POST /v1/hooks/{name}`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum WriteResponses {
    /// Written, and read back from Genesys
    #[response(status = 200)]
    Written(AttributesResponse),
    /// Accepted for asynchronous delivery: committed durably
    #[response(status = 202, headers(("Location" = String, description = "/v1/jobs/<jobId>")))]
    Accepted(AcceptedDoc),
    /// invalid_request
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemDoc),
    /// unauthorized
    #[response(status = 401, content_type = "application/problem+json",
        headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"patchbay\"`; on a webhook route, `Basic` or `Signature` by its scheme")))]
    Unauthorized(ProblemDoc),
    /// conversation_not_found, participant_not_found, or (hooks) not_found
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemDoc),
    /// conversation_ended, idempotency_in_progress
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(ProblemDoc),
    /// payload_too_large
    #[response(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(ProblemDoc),
    /// attributes_too_large, idempotency_key_reused
    #[response(status = 422, content_type = "application/problem+json")]
    Unprocessable(ProblemDoc),
    /// rate_limited (with Retry-After)
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(ProblemDoc),
    /// upstream_auth_failed, upstream_error
    #[response(status = 502, content_type = "application/problem+json")]
    BadGateway(ProblemDoc),
    /// queue_unavailable, shutting_down (with Retry-After)
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemDoc),
    /// upstream_timeout
    #[response(status = 504, content_type = "application/problem+json")]
    Timeout(ProblemDoc),
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Patchbay",
        description = "Set Genesys Cloud participant attributes on live conversations, and prove they landed.",
        license(name = "Apache-2.0")
    ),
    paths(
        super::attributes::set_attributes,
        crate::api::hooks::receive,
        super::jobs::get_job,
        super::jobs::dead_letters,
        super::jobs::replay,
        crate::api::health::healthz,
        crate::api::health::readyz,
        crate::api::health::render_metrics,
        openapi_json,
    ),
    components(schemas(
        AttributesRequestDoc, LookupDoc, AttributeValueDoc, PurposeDoc, AttributesResponse, MismatchBody, ProblemDoc, AcceptedDoc,
        JobView, JobStatus, StoredProblem, DeadLetters, Readiness
    )),
    modifiers(&Security, &ProblemCodes),
    tags(
        (name = "attributes", description = "Write attributes, synchronously or through the queue"),
        (name = "jobs", description = "Asynchronous jobs and dead letters"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// The security schemes: ingest keys (two ways), Basic for Architect, signatures for webhooks, admin keys.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An ingest key (auth.api_keys); admin endpoints take auth.admin_keys.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An ingest key (auth.api_keys); admin endpoints take auth.admin_keys.",
            ))),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some("A webhook route with scheme = \"basic\"."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Signature",
                "A webhook route with scheme = \"hmac\" (the header is the route's own) or \"standard_webhooks\" \
                 (webhook-id, webhook-timestamp, webhook-signature).",
            ))),
        );
    }
}

/// Lists the problem codes as an enum on `Problem.code`.
struct ProblemCodes;

impl Modify for ProblemCodes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
        use utoipa::openapi::RefOr;
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        if let Some(RefOr::T(Schema::Object(problem))) = components.schemas.get_mut("Problem") {
            problem.properties.insert(
                "code".into(),
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(PROBLEM_CODES.iter().copied()))
                    .description(Some("Stable and machine-readable."))
                    .into(),
            );
        }
        // The request bodies refuse fields they do not name (a misspelling must not pass as absent).
        for name in ["AttributesRequest", "Lookup"] {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name) {
                object.additional_properties = Some(Box::new(
                    utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
                ));
            }
        }
    }
}

/// The OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document", content_type = "application/json")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiError;

    #[test]
    fn the_document_names_every_purpose_and_problem_code() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let purposes = &doc["components"]["schemas"]["Purpose"]["enum"];
        let listed: Vec<&str> = purposes
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert_eq!(listed, crate::domain::PURPOSES);
        let codes = &doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"];
        assert_eq!(codes.as_array().unwrap().len(), PROBLEM_CODES.len());
        for body in ["AttributesRequest", "Lookup"] {
            let schema = &doc["components"]["schemas"][body];
            assert_eq!(schema["additionalProperties"], false, "{body}");
            let documented: Vec<&str> = schema["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let taken = match body {
                "Lookup" => crate::api::attributes::LOOKUP_SHAPE.fields,
                _ => crate::api::attributes::REQUEST_SHAPE.fields,
            };
            assert_eq!(
                documented.iter().collect::<std::collections::BTreeSet<_>>(),
                taken.iter().collect(),
                "{body}: the document and the parser name the same fields"
            );
        }
        for scheme in ["bearer", "apiKey", "basic", "signature"] {
            assert!(
                doc["components"]["securitySchemes"][scheme].is_object(),
                "{scheme}"
            );
        }
    }

    #[test]
    fn every_problem_code_the_code_can_produce_is_documented() {
        use crate::genesys::GenesysError as G;
        use crate::service::UpdateError as U;
        let cid = crate::domain::ConversationId::new(uuid::Uuid::nil());
        let errors = vec![
            ApiError::InvalidRequest(String::new()),
            ApiError::Unauthorized {
                challenge: crate::api::problem::Challenge::Bearer,
                reason: String::new(),
            },
            ApiError::NotFound,
            ApiError::MethodNotAllowed,
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::AttributesTooLarge { size: 2, limit: 1 },
            ApiError::RequestTimeout,
            ApiError::IdempotencyConflict,
            ApiError::IdempotencyInProgress,
            ApiError::QueueUnavailable(String::new()),
            ApiError::ShuttingDown,
            ApiError::JobNotFound,
            ApiError::NotDead,
            ApiError::Update(U::ConversationNotFound(cid)),
            ApiError::Update(U::ParticipantNotFound(cid, String::new())),
            ApiError::Update(U::ConversationEnded(cid)),
            ApiError::Update(U::Upstream(G::Timeout)),
            ApiError::Update(U::Upstream(G::Transport(String::new()))),
            ApiError::Update(U::Upstream(G::RateLimited {
                retry_after: None,
                correlation_id: None,
            })),
            ApiError::Update(U::Upstream(G::Auth {
                status: 401,
                correlation_id: None,
            })),
        ];
        for e in errors {
            let code = e.problem().code;
            assert!(PROBLEM_CODES.contains(&code), "{code} is not documented");
        }
    }
}
