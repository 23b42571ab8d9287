//! `POST /v1/attributes`: parse the request, apply it, and answer with what Genesys shows.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use tower_http::request_id::RequestId;

use super::body;
use super::exchange::{read_body, request_id};
use super::intake::{self, Intake};
use super::problem::ApiError;
use super::request::{AttributesRequest, Parsed, REQUEST_SHAPE};
use crate::api::state::AppState;

/// The handler: parse, then hand over to [`intake::accept`].
#[utoipa::path(post, path = "/v1/attributes", tag = "attributes",
    summary = "Write to a live conversation, and answer with what Genesys shows",
    description = "Participant attributes, the conversation's secure attributes and a custom-attributes record, each verified by what Genesys shows. The conversation is named by its id or found by a lookup.",
    request_body(content = AttributesRequest, content_type = "application/json"),
    params(
        ("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 once the job is committed; `async-fallback`: answer synchronously, or 202 with a job when the Genesys budget cannot serve the update in time"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "1 to 255 visible ASCII characters. A repeat within idempotency.ttl_s answers with the original job or answer"),
    ),
    responses(crate::api::responses::WriteResponses),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn set_attributes(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Option<axum::Extension<RequestId>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = tokio::time::Instant::now();
    let deadline = state.request_deadline();
    let request_id = request_id(&headers, id.as_ref().map(|e| &e.0));
    let mut entry = state.journal.begin("api", &request_id);
    let result = async {
        let body = read_body(body, state.settings.server.max_body_bytes)?;
        let request: AttributesRequest = body::parse(&body, &REQUEST_SHAPE)?;
        let Parsed {
            update: request,
            secure,
            custom,
        } = request.parse_request()?;
        let mut update = intake::address(&state, request, deadline, &mut entry).await?;
        update.secure = secure;
        update.custom = custom;
        let intake = Intake::from_request(
            &state.keyring,
            &headers,
            request_id.clone(),
            "attributes",
            &body,
            None,
            false,
            false,
        )?;
        intake::accept(&state, update, intake, deadline, &mut entry).await
    }
    .await;
    intake::journal(&state, entry, started, &result);
    result
}
