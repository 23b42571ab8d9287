//! The OpenAPI 3.1 document, generated from the handlers' annotations and the very types they parse
//! and answer with, so it cannot drift from the code. Served at `GET /openapi.json`.

use axum::extract::State;
use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::exchange::{AttributesResponse, MismatchBody};
use super::hooks::HookRoutes;
use super::intake::Accepted;
use super::jobs::{DeadLetters, JobView};
use super::problem::{ProblemBody, PROBLEM_CODES};
use super::request::{request_rules, AttributesRequest, LookupRequest};
use super::state::AppState;
use crate::api::health::Readiness;
use crate::store::queue::{JobStatus, StoredProblem};

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
        AttributesRequest, LookupRequest, AttributesResponse, MismatchBody, ProblemBody, Accepted,
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
    }
}

/// The document: what utoipa derives, with the rules between fields the parser enforces.
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        request_rules(schemas);
    }
    // The request-id middleware sets `x-request-id` on every answer of every endpoint: said once,
    // here, rather than on each response.
    let request_id = serde_json::json!({
        "description": "The request's id: the caller's, or one made for it",
        "schema": {"type": "string"}
    });
    let operations = doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let responses = operation
            .get_mut("responses")
            .and_then(|r| r.as_object_mut());
        for response in responses.into_iter().flat_map(|r| r.values_mut()) {
            response["headers"]["x-request-id"] = request_id.clone();
        }
    }
    doc
}

/// The document for this deployment: each configured webhook route is a path of its own, whose
/// body is the schema its mapping derives (what the generic `/v1/hooks/{name}` cannot say).
pub fn document_for(routes: &HookRoutes) -> serde_json::Value {
    let mut doc = document();
    let Some(paths) = doc["paths"].as_object_mut() else {
        return doc;
    };
    let Some(generic) = paths.get(GENERIC_HOOK).cloned() else {
        return doc;
    };
    if routes.names().next().is_none() {
        return doc;
    }
    paths.remove(GENERIC_HOOK);
    for (name, route) in routes.iter() {
        let mut item = generic.clone();
        let post = &mut item["post"];
        if let Some(params) = post["parameters"].as_array_mut() {
            params.retain(|p| p["in"] != "path");
        }
        post["operationId"] = format!("hook_{name}").into();
        post["requestBody"]["content"]["application/json"]["schema"] = route.mapping.body_schema();
        paths.insert(format!("/v1/hooks/{name}"), item);
    }
    doc
}

const GENERIC_HOOK: &str = "/v1/hooks/{name}";

/// The OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document", content_type = "application/json")))]
pub async fn openapi_json(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(document_for(&state.hooks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiError;

    /// The properties every alternative of a `oneOf` schema names, together.
    fn properties(schema: &serde_json::Value) -> std::collections::BTreeSet<String> {
        schema["oneOf"]
            .as_array()
            .expect("a oneOf of alternatives")
            .iter()
            .flat_map(|branch| branch["properties"].as_object().unwrap().keys().cloned())
            .collect()
    }

    #[test]
    fn the_document_takes_the_requests_fields_and_rules_from_the_parsers_own_structs() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        for (body, shape, alternatives) in [
            (
                "AttributesRequest",
                &*crate::api::request::REQUEST_SHAPE,
                vec!["conversationId", "lookup"],
            ),
            (
                "Lookup",
                &*crate::api::request::LOOKUP_SHAPE,
                vec!["userId", "ani", "externalContactId"],
            ),
        ] {
            let schema = &schemas[body];
            assert_eq!(
                properties(schema),
                shape.fields.iter().map(|f| f.to_string()).collect(),
                "{body}: the document and the parser name the same fields"
            );
            let branches = schema["oneOf"].as_array().unwrap();
            assert_eq!(branches.len(), alternatives.len(), "{body}");
            for (branch, chosen) in branches.iter().zip(&alternatives) {
                assert_eq!(branch["additionalProperties"], false, "{body}");
                let required = branch["required"].as_array().unwrap();
                assert!(required.iter().any(|r| r == chosen), "{body}: {chosen}");
                for other in alternatives.iter().filter(|a| *a != chosen) {
                    assert!(
                        branch["properties"].get(*other).is_none(),
                        "{body}: {other}"
                    );
                }
            }
        }
        let request = &schemas["AttributesRequest"]["oneOf"][0]["properties"];
        let purposes: Vec<&str> = request["purpose"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert_eq!(purposes, crate::domain::PURPOSES);
        assert_eq!(request["attributes"]["minProperties"], 1);
        assert!(request["conversationId"]["pattern"].is_string());
        let codes = &schemas["Problem"]["properties"]["code"]["enum"];
        assert_eq!(codes.as_array().unwrap().len(), PROBLEM_CODES.len());
        for scheme in ["bearer", "apiKey", "basic", "signature"] {
            assert!(
                doc["components"]["securitySchemes"][scheme].is_object(),
                "{scheme}"
            );
        }
    }

    #[test]
    fn every_answer_of_a_write_declares_its_headers() {
        let doc = document();
        let responses = &doc["paths"]["/v1/attributes"]["post"]["responses"];
        for (status, answer) in responses.as_object().unwrap() {
            assert!(answer["headers"]["x-request-id"].is_object(), "{status}");
        }
        for status in ["429", "503"] {
            assert!(
                responses[status]["headers"]["Retry-After"].is_object(),
                "{status}"
            );
        }
        assert!(responses["200"]["headers"]["Idempotent-Replayed"].is_object());
    }

    #[test]
    fn the_books_table_of_problem_codes_is_the_code_list() {
        let readme = include_str!("../../book/src/reference/errors.md");
        // The table's rows: `| `code` | status | meaning |`, with a 4xx or 5xx status.
        let listed: std::collections::BTreeSet<&str> = readme
            .lines()
            .filter_map(|row| {
                let cells: Vec<&str> = row.split('|').map(str::trim).collect();
                let status: u16 = cells.get(2)?.parse().ok()?;
                let code = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                (400..600).contains(&status).then_some(code)
            })
            .collect();
        let table: std::collections::BTreeSet<&str> = PROBLEM_CODES.iter().copied().collect();
        assert_eq!(
            listed, table,
            "the book's problem codes and PROBLEM_CODES differ"
        );
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
