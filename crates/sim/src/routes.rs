//! The simulator's HTTP surface: the login host's grant, the conversation API, and (in
//! `notifications`) the Notifications API's channels and the routing queues.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::json;
use tokio::time::Instant;

use super::{Op, PendingWrite, RecordedCall, Simulator, Standing};
use crate::errors::{error, CorrelationId};
use crate::wire::{self, CORRELATION_HEADER, RATELIMIT_ALLOWED, RATELIMIT_COUNT, RATELIMIT_RESET};

/// The media types with their own attributes endpoint.
const MEDIA_TYPES: &[&str] = &["calls", "callbacks", "chats", "emails", "messages"];

pub fn router(sim: Simulator) -> Router {
    let api = Router::new()
        .route("/api/v2/conversations/{id}", get(get_conversation))
        .route(
            "/api/v2/conversations/{id}/participants/{pid}/attributes",
            patch(patch_attributes),
        )
        .route(
            "/api/v2/conversations/{media}/{id}/participants/{pid}/attributes",
            patch(patch_media_attributes),
        )
        .route(
            "/api/v2/conversations/{id}/participants/{pid}",
            patch(patch_participant),
        )
        .route(
            "/api/v2/conversations/{id}/secureattributes",
            get(get_secure_attributes).patch(patch_secure_attributes),
        )
        .route(
            "/api/v2/analytics/conversations/details/query",
            post(analytics_query),
        )
        .merge(super::notifications::routes())
        .merge(crate::custom::routes())
        .route_layer(middleware::from_fn_with_state(sim.clone(), require_bearer));
    Router::new()
        .route("/oauth/token", post(grant))
        // Control endpoints for a load generator in another process; not part of Genesys's API.
        .route("/__sim/stats", get(stats))
        .route("/__sim/latency/{ms}", post(set_latency))
        .route("/__sim/rate-limit/{per_minute}", post(set_rate_limit))
        .route("/__sim/calls/{i}/start", post(start_call))
        .route("/__sim/feed-outage/{ms}", post(feed_outage))
        .merge(super::notifications::socket_routes())
        .merge(api)
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not.found",
                "The requested resource was not found.",
            )
        })
        .layer(middleware::from_fn_with_state(sim.clone(), observe))
        .with_state(sim)
}

fn op_name(method: &Method, path: &str) -> &'static str {
    let segments = path.trim_matches('/').split('/').count();
    match (method.as_str(), path) {
        ("POST", "/oauth/token") => "token",
        ("GET", p) if p.starts_with("/api/v2/conversations/") && segments == 4 => {
            "get_conversation"
        }
        ("POST", "/api/v2/conversations/participants/attributes/search") => {
            "search_participant_attributes"
        }
        ("GET", "/api/v2/conversations/customattributes/schemas") => "list_custom_schemas",
        ("GET", p) if p.starts_with("/api/v2/conversations/customattributes/schemas/") => {
            "get_custom_schema"
        }
        ("GET", p) if p.contains("/customattributes") => "get_custom_attributes",
        ("PUT", p) if p.ends_with("/customattributes") => "put_custom_attributes",
        ("PUT", p) if p.ends_with("/customattributes/bulk") => "put_custom_attributes_bulk",
        ("PATCH", p) if p.ends_with("/customattributes/bulk") => "patch_custom_attributes_bulk",
        ("PATCH", p) if p.ends_with("/customattributes") => "patch_custom_attributes",
        ("GET", p) if p.ends_with("/secureattributes") => "get_secure_attributes",
        ("PATCH", p) if p.ends_with("/secureattributes") => "patch_secure_attributes",
        ("PATCH", p) if p.ends_with("/attributes") && segments == 7 => "patch_attributes",
        ("PATCH", p) if p.ends_with("/attributes") => "patch_media_attributes",
        ("PATCH", p) if p.contains("/participants/") => "patch_participant",
        ("POST", "/api/v2/analytics/conversations/details/query") => "analytics_query",
        ("POST", "/api/v2/notifications/channels") => "create_channel",
        ("GET", "/api/v2/notifications/channels") => "list_channels",
        ("HEAD", p) if p.starts_with("/api/v2/notifications/channels/") => "channel_exists",
        (_, p) if p.ends_with("/subscriptions") => "subscriptions",
        ("GET", "/api/v2/routing/queues") => "list_queues",
        _ => "other",
    }
}

/// Every permission the simulator enforces (`Control::revoke`), each named as Genesys's API
/// documentation names it for the calls [`permission`] lists.
pub const PERMISSIONS: &[&str] = &[
    "conversation:communication:view",
    "routing:queue:view",
    "conversation:participant:attributesview",
    "conversation:participant:attributesedit",
    "analytics:conversationDetail:view",
    "conversation:customAttributes:schemaView",
    "conversation:customAttributes:view",
    "conversation:customAttributes:edit",
];

/// The permission a call needs, as Genesys's API documentation names it, where the simulator
/// enforces one (`Control::revoke`).
pub(crate) fn permission(op: &str) -> Option<&'static str> {
    Some(match op {
        "get_conversation" => "conversation:communication:view",
        "list_queues" => "routing:queue:view",
        "get_secure_attributes" | "search_participant_attributes" => {
            "conversation:participant:attributesview"
        }
        "patch_secure_attributes" => "conversation:participant:attributesedit",
        "analytics_query" => "analytics:conversationDetail:view",
        "list_custom_schemas" | "get_custom_schema" => "conversation:customAttributes:schemaView",
        "get_custom_attributes" => "conversation:customAttributes:view",
        "put_custom_attributes"
        | "patch_custom_attributes"
        | "put_custom_attributes_bulk"
        | "patch_custom_attributes_bulk" => "conversation:customAttributes:edit",
        _ => return None,
    })
}

fn matches(op: Op, name: &str) -> bool {
    match op {
        Op::Any => true,
        Op::Token => name == "token",
        Op::GetConversation => name == "get_conversation",
        Op::PatchAttributes => name == "patch_attributes" || name == "patch_media_attributes",
        Op::PatchSecureAttributes => name == "patch_secure_attributes",
        Op::AnalyticsQuery => name == "analytics_query",
    }
}

/// Latency, scripted faults, the correlation id on every answer, and the call log.
async fn observe(State(sim): State<Simulator>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let op = op_name(&method, &path);
    let arrived = Instant::now();
    let (latency, fault) = {
        let mut s = sim.lock();
        let fault = s
            .faults
            .iter_mut()
            .find(|f| f.remaining > 0 && matches(f.op, op))
            .map(|f| {
                f.remaining -= 1;
                (f.status, f.retry_after)
            });
        s.faults.retain(|f| f.remaining > 0);
        let mut fault = fault;
        for p in s.periodic.iter_mut().filter(|p| matches(p.op, op)) {
            p.seen += 1;
            if fault.is_none() && p.seen % p.every == 0 {
                fault = Some((p.status, p.retry_after));
            }
        }
        (s.latency, fault)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let missing = permission(op).filter(|p| sim.lock().revoked.contains(*p));
    let mut response = match fault {
        _ if missing.is_some() => error(
            StatusCode::FORBIDDEN,
            "missing.any.permissions",
            &format!(
                "Unable to perform the requested action. You are missing the following permission(s): [{}]",
                missing.unwrap_or_default()
            ),
        ),
        Some((429, retry_after)) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "too.many.requests.retry.after",
                "Rate limit exceeded the maximum. Retry the request in [%s] seconds",
            );
            if let Some(s) = retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(s));
            }
            r
        }
        Some((status, _)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            error(
                status,
                "internal.server.error",
                "The server encountered an error.",
            )
        }
        None => next.run(request).await,
    };
    let correlation = response
        .extensions()
        .get::<CorrelationId>()
        .map(|c| c.0.clone())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if let Ok(v) = HeaderValue::from_str(&correlation) {
        response.headers_mut().insert(CORRELATION_HEADER, v);
    }
    let mut s = sim.lock();
    *s.counts.entry(op).or_default() += 1;
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        s.rate_limited += 1;
    }
    if s.calls.len() >= super::LOG_LIMIT {
        s.calls.pop_front();
    }
    s.calls.push_back(RecordedCall {
        op,
        method: method.to_string(),
        path,
        status: response.status().as_u16(),
        at: arrived,
    });
    response
}

fn bad_credentials() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "bad.credentials",
        "Invalid login credentials.",
    )
}

/// The bearer token of a request, as sent.
fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::to_owned)
}

/// Genesys's 429: `Retry-After` is the seconds left in the window.
fn too_many_requests(standing: Standing) -> Response {
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "too.many.requests",
        "Rate limit exceeded the maximum. Retry the request in [%s] seconds",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(standing.reset_s));
    r
}

/// Reports `standing` in the `inin-ratelimit-*` headers.
fn report(response: &mut Response, standing: Standing) {
    let headers = response.headers_mut();
    headers.insert(RATELIMIT_COUNT, HeaderValue::from(standing.count));
    headers.insert(RATELIMIT_ALLOWED, HeaderValue::from(standing.allowed));
    headers.insert(RATELIMIT_RESET, HeaderValue::from(standing.reset_s));
}

async fn require_bearer(State(sim): State<Simulator>, request: Request, next: Next) -> Response {
    let token = bearer(request.headers());
    let Some(token) = token.filter(|t| sim.lock().tokens.contains(t)) else {
        return bad_credentials();
    };
    // Genesys counts calls per token, and tells where the token stands on every answer.
    let standing = sim.lock().count_call(&token, Instant::now());
    let mut response = if standing.count > standing.allowed {
        too_many_requests(standing)
    } else {
        next.run(request).await
    };
    // Unless the endpoint reported a limit of its own, which is the one that applies to the call.
    if !response.headers().contains_key(RATELIMIT_COUNT) {
        report(&mut response, standing);
    }
    response
}

/// `POST /api/v2/analytics/conversations/details/query`: answers `AnalyticsConversationQueryResponse`.
async fn analytics_query(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let own = bearer(&headers).and_then(|t| sim.lock().count_analytics_query(&t, Instant::now()));
    let mut response = match own {
        Some(standing) if standing.count > standing.allowed => too_many_requests(standing),
        _ => answer_analytics_query(&sim, &body),
    };
    if let Some(standing) = own {
        report(&mut response, standing);
    }
    response
}

fn answer_analytics_query(sim: &Simulator, body: &Bytes) -> Response {
    let query: serde_json::Value = match serde_json::from_slice(body) {
        Ok(q) => q,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad.request",
                "The request could not be understood by the server due to malformed syntax.",
            )
        }
    };
    match sim.analytics_query(&query) {
        Ok(answer) => Json(answer).into_response(),
        Err(why) => error(StatusCode::BAD_REQUEST, "bad.request", &why),
    }
}

/// `GET /__sim/stats`: grants and calls by operation, for a load generator in another process.
async fn stats(State(sim): State<Simulator>) -> Response {
    let by_op: std::collections::BTreeMap<&str, usize> = sim
        .control()
        .counts()
        .into_iter()
        .filter(|(op, _)| *op != "other")
        .collect();
    Json(json!({"grants": sim.control().grants(), "calls": by_op, "rateLimited": sim.control().rate_limited()}))
        .into_response()
}

/// `POST /__sim/rate-limit/{per_minute}`: the per-token limit to enforce; 0 lifts it.
async fn set_rate_limit(State(sim): State<Simulator>, Path(per_minute): Path<u32>) -> StatusCode {
    sim.control()
        .set_rate_limit((per_minute > 0).then_some(per_minute));
    StatusCode::NO_CONTENT
}

/// `POST /__sim/calls/{i}/start`: the `i`-th numbered call starts now, from its own number.
async fn start_call(State(sim): State<Simulator>, Path(i): Path<usize>) -> StatusCode {
    sim.control().start_call(i);
    StatusCode::NO_CONTENT
}

/// `POST /__sim/feed-outage/{ms}`: the notifications' sockets go down for `ms`.
async fn feed_outage(State(sim): State<Simulator>, Path(ms): Path<u64>) -> StatusCode {
    sim.control().feed_outage(Duration::from_millis(ms));
    StatusCode::NO_CONTENT
}

/// `POST /__sim/latency/{ms}`: the latency added before every answer.
async fn set_latency(State(sim): State<Simulator>, Path(ms): Path<u64>) -> StatusCode {
    sim.control().set_latency(Duration::from_millis(ms));
    StatusCode::NO_CONTENT
}

/// `POST /oauth/token`: the client-credentials grant with Basic auth and a form body.
async fn grant(State(sim): State<Simulator>, headers: HeaderMap, body: Bytes) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let grant_type = form
        .iter()
        .find(|(k, _)| k == "grant_type")
        .map(|(_, v)| v.as_str());
    if grant_type != Some("client_credentials") {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "unsupported_grant_type", "description": "grant type is not supported", "error_description": "grant type is not supported"}))).into_response();
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let mut s = sim.lock();
    let expected = format!("{}:{}", s.client_id, s.client_secret);
    if presented.as_deref() != Some(expected.as_str()) {
        let status =
            StatusCode::from_u16(s.grant_reject_status).unwrap_or(StatusCode::UNAUTHORIZED);
        return (status, Json(json!({"error": "invalid_client", "description": "authentication failed", "error_description": "authentication failed"}))).into_response();
    }
    let token = format!("sim-{}", uuid::Uuid::new_v4().simple());
    s.tokens.insert(token.clone());
    s.issued.push(token.clone());
    s.grants += 1;
    Json(json!({"access_token": token, "token_type": "bearer", "expires_in": s.token_lifetime_s}))
        .into_response()
}

/// `GET /api/v2/conversations/{id}`, with writes that have become visible applied first.
async fn get_conversation(State(sim): State<Simulator>, Path(id): Path<String>) -> Response {
    let mut s = sim.lock();
    s.apply_due_writes(Instant::now());
    match s.conversations.get(&id.to_lowercase()) {
        Some(c) => Json(c.clone()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not.found",
            "The requested conversation was not found.",
        ),
    }
}

/// `GET /api/v2/conversations/{id}/secureattributes`: `ConversationSecureAttributes`.
async fn get_secure_attributes(State(sim): State<Simulator>, Path(id): Path<String>) -> Response {
    let s = sim.lock();
    let id = id.to_lowercase();
    if !s.conversations.contains_key(&id) {
        return error(
            StatusCode::NOT_FOUND,
            "not.found",
            "The requested conversation was not found.",
        );
    }
    Json(s.secure.get(&id).cloned().unwrap_or_default()).into_response()
}

/// `PATCH /api/v2/conversations/{id}/secureattributes`: merges the keys sent into the
/// conversation's, and a new version; 202 with no body. A live conversation's only: an ended one
/// is refused as a participant write to it is.
async fn patch_secure_attributes(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let sent: wire::ConversationSecureAttributes =
        match serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|mut v| {
                // The version is optional on a PATCH, which ignores it.
                v.as_object_mut()?.entry("version").or_insert(0.into());
                serde_json::from_value(v).ok()
            }) {
            Some(sent) => sent,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid.value",
                    "attributes must be a map of strings",
                )
            }
        };
    let mut s = sim.lock();
    let id = id.to_lowercase();
    let ended_status = s.ended_patch_status;
    match s.conversations.get(&id) {
        None => {
            return error(
                StatusCode::NOT_FOUND,
                "not.found",
                "The requested conversation was not found.",
            )
        }
        Some(c) if c.end_time.is_some() => {
            let status = StatusCode::from_u16(ended_status).unwrap_or(StatusCode::BAD_REQUEST);
            return error(status, "conversation.ended", "The conversation has ended.");
        }
        Some(_) => {}
    }
    let held = s.secure.entry(id).or_default();
    held.attributes.extend(sent.attributes);
    held.version += 1;
    StatusCode::ACCEPTED.into_response()
}

/// An `ErrorBody` answer not yet rendered: status, code, message.
type Refusal = (StatusCode, &'static str, &'static str);

/// Validates and stores a write; the shared part of the generic and media endpoints.
fn accept_write(
    sim: &Simulator,
    id: &str,
    pid: &str,
    body: &Bytes,
) -> Result<Vec<(String, String)>, Refusal> {
    let parsed: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
        (
            StatusCode::BAD_REQUEST,
            "bad.request",
            "The request could not be understood by the server due to malformed syntax.",
        )
    })?;
    let attrs = parsed
        .get("attributes")
        .and_then(|a| a.as_object())
        .ok_or((
            StatusCode::BAD_REQUEST,
            "invalid.value",
            "attributes is required",
        ))?;
    let mut out = Vec::new();
    for (k, v) in attrs {
        // ParticipantAttributes is a map of string to string: anything else is the client's bug.
        let v = v.as_str().ok_or((
            StatusCode::BAD_REQUEST,
            "invalid.value",
            "attribute values must be strings",
        ))?;
        out.push((k.clone(), v.to_string()));
    }
    let mut s = sim.lock();
    let ended_status = s.ended_patch_status;
    let delay = s.visibility_delay;
    let conversation = s.conversations.get(&id.to_lowercase()).ok_or((
        StatusCode::NOT_FOUND,
        "not.found",
        "The requested conversation was not found.",
    ))?;
    if conversation.is_ended() {
        let status = StatusCode::from_u16(ended_status).unwrap_or(StatusCode::BAD_REQUEST);
        return Err((status, "conversation.ended", "The conversation has ended."));
    }
    if conversation.participant(pid).is_none() {
        return Err((
            StatusCode::NOT_FOUND,
            "not.found",
            "The requested participant was not found.",
        ));
    }
    if s.writes.len() >= super::LOG_LIMIT {
        s.writes.pop_front();
    }
    s.writes.push_back(super::Write {
        conversation: id.to_lowercase(),
        participant: pid.to_string(),
        attributes: out.clone(),
    });
    let delay = delay.min(Duration::from_secs(365 * 86_400));
    s.pending.push(PendingWrite {
        visible_at: Instant::now() + delay,
        conversation: id.to_lowercase(),
        participant: pid.to_string(),
        attributes: out.clone(),
    });
    drop(s);
    // Once the write shows, the conversation's queue event carries it, as Genesys's would.
    let (sim, id, pid, written) = (sim.clone(), id.to_lowercase(), pid.to_string(), out.clone());
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        sim.lock().apply_due_writes(Instant::now());
        sim.publish_write(&id, &pid, &written);
    });
    Ok(out)
}

/// `PATCH /api/v2/conversations/{id}/participants/{pid}/attributes`: 202 with no body.
async fn patch_attributes(
    State(sim): State<Simulator>,
    Path((id, pid)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    match accept_write(&sim, &id, &pid, &body) {
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err((status, code, message)) => error(status, code, message),
    }
}

/// `PATCH /api/v2/conversations/{media}/{id}/participants/{pid}/attributes`: answers `ParticipantAttributes`.
async fn patch_media_attributes(
    State(sim): State<Simulator>,
    Path((media, id, pid)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    if !MEDIA_TYPES.contains(&media.as_str()) {
        return error(
            StatusCode::NOT_FOUND,
            "not.found",
            "The requested resource was not found.",
        );
    }
    match accept_write(&sim, &id, &pid, &body) {
        Ok(attrs) => Json(
            json!({"attributes": attrs.into_iter().collect::<std::collections::BTreeMap<_, _>>()}),
        )
        .into_response(),
        Err((status, code, message)) => error(status, code, message),
    }
}

/// `PATCH /api/v2/conversations/{id}/participants/{pid}` takes a `MediaParticipantRequest`
/// (wrapup, state, muted, …). It has no `attributes` field, so attributes sent here are ignored,
/// as the real service ignores them.
async fn patch_participant(
    State(sim): State<Simulator>,
    Path((id, pid)): Path<(String, String)>,
) -> Response {
    let s = sim.lock();
    match s.conversations.get(&id.to_lowercase()) {
        Some(c) if c.participant(&pid).is_some() => StatusCode::ACCEPTED.into_response(),
        _ => error(
            StatusCode::NOT_FOUND,
            "not.found",
            "The requested resource was not found.",
        ),
    }
}
