//! Webhook routes: `POST /v1/hooks/<name>` turns any JSON event into an attribute update, by
//! configuration alone, after checking the caller with the route's own scheme.

pub mod auth;
pub mod mapping;
pub mod routes;
/// The routes' configuration lives with the rest of the configuration.
pub use crate::config::hooks as settings;
pub use routes::{HookRoute, HookRoutes};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use tower_http::request_id::RequestId;

use crate::api::body;
use crate::api::exchange::{read_body, request_id};
use crate::api::intake::{self, Intake};
use crate::api::request::Parsed;
use crate::api::state::AppState;
use crate::api::ApiError;
use auth::{HookAuth, Inbound};

/// `POST /v1/hooks/<name>`: authenticate the raw body, then parse, map and apply.
#[utoipa::path(post, path = "/v1/hooks/{name}", tag = "attributes",
    summary = "A webhook route: a sender's own JSON, authenticated and mapped as the route says",
    description = "A configured webhook route: the body is the sender's own JSON, mapped by the route's JSON Pointers.",
    request_body(content = Object, content_type = "application/json"),
    params(
        ("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 once the job is committed; `async-fallback`: answer synchronously, or 202 with a job when the Genesys budget cannot serve the update in time"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "1 to 255 visible ASCII characters. A repeat within idempotency.ttl_s answers with the original job or answer"),
        ("name" = String, Path, description = "The route's name, as configured in [hooks.<name>]", example = "crm"),
    ),
    responses(crate::api::responses::WriteResponses),
    security(("bearer" = []), ("apiKey" = []), ("basic" = []), ("signature" = []))
)]
pub async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    id: Option<axum::Extension<RequestId>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let route = state.hooks.get(&name).ok_or(ApiError::NotFound)?;
    let started = tokio::time::Instant::now();
    let deadline = state.request_deadline();
    let request_id = request_id(&headers, id.as_ref().map(|e| &e.0));
    let mut entry = state.journal.begin(&format!("hook:{name}"), &request_id);
    let body = match read_body(body, state.settings.server.max_body_bytes) {
        Ok(body) => body,
        Err(e) => {
            let refused = Err(e);
            intake::journal(&state, entry, started, &refused);
            return refused;
        }
    };
    let inbound = Inbound {
        method: &method,
        path_and_query: uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        headers: &headers,
        body: &body,
    };
    // Before any parsing: a forged request must not reach the JSON parser, let alone Genesys.
    let ticket = match route.auth.verify(&inbound) {
        Ok(ticket) => ticket,
        Err(why) => {
            // Kept for the console too: a sender whose secret is wrong shows there, refused.
            let refused = Err(ApiError::Unauthorized {
                challenge: route.auth.challenge(),
                reason: format!("webhook route `{name}`: {why}"),
            });
            intake::journal(&state, entry, started, &refused);
            return refused;
        }
    };
    let result = async {
        let event = body::json(&body)?;
        let Parsed {
            update: request,
            secure,
            custom,
        } = route
            .mapping
            .apply(&event)
            .map_err(|e| ApiError::InvalidRequest(e.0))?;
        let mut update = intake::address(&state, request, deadline, &mut entry).await?;
        // A Standard Webhooks sender keeps `webhook-id` across its retries: the natural idempotency
        // key. For secure attributes only when a key can seal what it keeps; without one their
        // PATCH merges the same values again, so a retried delivery needs no stored answer.
        let delivery_id = match route.auth {
            HookAuth::StandardWebhooks(..) if secure.is_none() || !state.keyring.is_empty() => {
                headers.get("webhook-id").and_then(|v| v.to_str().ok())
            }
            _ => None,
        };
        update.secure = secure;
        update.custom = custom;
        let intake = Intake::from_request(
            &state.keyring,
            &headers,
            request_id.clone(),
            &format!("hook:{name}"),
            &body,
            delivery_id,
            route.mode == settings::HookMode::Async,
            route.mode == settings::HookMode::SyncOrAsync,
        )?;
        intake::accept(&state, update, intake, deadline, &mut entry).await
    }
    .await;
    intake::journal(&state, entry, started, &result);
    if result.is_err() {
        // The delivery failed: its sender may retry it, signature and all.
        if let Some(ticket) = ticket {
            ticket.release();
        }
    }
    result
}
