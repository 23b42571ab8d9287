//! The operator console at `/console`: the Genesys budget now, recent updates and how each was
//! found, verified and paid for, the jobs (with replay), and the webhook routes, server-rendered
//! with askama (escaped by default, checked at compile time) from what the engine, the budget, the
//! journal and the queue report.
//!
//! Security: an admin key is asked once, in a form; the browser then holds a signed session cookie
//! (`HttpOnly`, `SameSite=Strict`, `Secure` behind TLS). Every state-changing action is a POST that
//! carries the session's form token and passes an origin check. Every page is sent with a
//! Content-Security-Policy that allows no inline script, and may not be framed.

mod pages;
pub mod session;
mod views;

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::api::state::AppState;
use session::{Session, Sessions, COOKIE};

/// The console's own state: the application's, and the sessions it signs.
#[derive(Clone)]
pub struct Console {
    pub app: AppState,
    pub sessions: Sessions,
}

/// Whether this deployment serves a console: on by default, wherever an admin key is configured.
pub fn enabled(state: &AppState) -> bool {
    state.settings.console.enabled && !state.settings.auth.admin_keys.is_empty()
}

/// Where a browser on this host opens the console of a listener bound at `at`: a listener on every
/// address (`0.0.0.0`, `[::]`) is reached through loopback, since not every browser opens an
/// unspecified address.
pub fn url(at: std::net::SocketAddr) -> String {
    let ip = match at.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!(
        "http://{}/console",
        std::net::SocketAddr::new(ip, at.port())
    )
}

/// No script but the console's own file, no inline style, no framing, no form posting elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console, to be nested at `/console`.
pub fn router(state: &AppState) -> Router {
    let console = Console {
        sessions: Sessions::new(
            &state.settings.auth.admin_keys,
            Duration::from_secs(state.settings.console.session_ttl_s),
        ),
        app: state.clone(),
    };
    let signed_in = Router::new()
        .route("/", get(|| async { Redirect::to("/console/now") }))
        .route("/now", get(pages::now))
        .route("/updates", get(pages::updates))
        .route("/updates/{id}", get(pages::update))
        .route("/jobs", get(pages::jobs))
        .route("/jobs/replay", post(pages::replay_matching))
        .route("/jobs/{id}/replay", post(pages::replay_one))
        .route("/routes", get(pages::routes))
        .route("/sign-out", post(pages::sign_out))
        .route_layer(middleware::from_fn_with_state(
            console.clone(),
            require_session,
        ));
    let header =
        |name, value| SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value));
    Router::new()
        .route("/sign-in", get(pages::sign_in_form).post(pages::sign_in))
        .route("/assets/console.css", get(assets::css))
        .route("/assets/console.js", get(assets::js))
        .merge(signed_in)
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such console page") })
        .layer(
            ServiceBuilder::new()
                .layer(header(
                    header::CONTENT_SECURITY_POLICY,
                    CONTENT_SECURITY_POLICY,
                ))
                .layer(header(header::X_FRAME_OPTIONS, "DENY"))
                // `same-origin`, not `no-referrer`: under `no-referrer` a browser sends
                // `Origin: null` with the console's own forms, and the origin check needs it.
                .layer(header(header::REFERRER_POLICY, "same-origin"))
                .layer(header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .layer(header(header::CACHE_CONTROL, "no-store")),
        )
        .with_state(console)
}

/// Pages need a session: without one, the browser is sent to sign in. A POST also needs the
/// session's form token (checked by the handler, which reads the form) and must come from the
/// console's own origin.
async fn require_session(
    State(console): State<Console>,
    mut request: Request,
    next: Next,
) -> Response {
    let session = cookie(request.headers(), COOKIE).and_then(|c| console.sessions.verify(c));
    let Some(session) = session else {
        return Redirect::to("/console/sign-in").into_response();
    };
    if request.method() == axum::http::Method::POST && !same_origin(request.headers()) {
        tracing::warn!("console: a form was posted from another origin; refused");
        return (StatusCode::FORBIDDEN, "cross-origin request refused").into_response();
    }
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// A cookie's value from the `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a browser says the request comes from this console's origin: `Origin` names this host,
/// or, without it, `Sec-Fetch-Site` says same-origin. A client that sends neither is no browser a
/// page could steer, and still needs the form token.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let origin_host = origin
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        return host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host));
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(site) => matches!(site, "same-origin" | "none"),
        None => true,
    }
}

/// The session cookie, `Secure` when the request came over TLS (directly or, as a proxy says, by
/// `X-Forwarded-Proto`).
fn session_cookie(value: &str, max_age: Duration, headers: &HeaderMap) -> HeaderValue {
    let tls = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        max_age.as_secs()
    ))
    .expect("cookie text is ASCII")
}

/// Notes the budget's use every few seconds for the chart, until `stop`.
pub async fn sample_budget(state: AppState, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let view = state.org.genesys().budget_view().await;
        state
            .journal
            .series()
            .note_budget(view.standing.used, view.standing.limit);
    }
}

/// Asset files, compiled into the binary: the console works offline and fetches nothing else.
mod assets {
    use axum::http::header;
    use axum::response::IntoResponse;

    pub async fn css() -> impl IntoResponse {
        (
            [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
            include_str!("assets/console.css"),
        )
    }

    pub async fn js() -> impl IntoResponse {
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            include_str!("assets/console.js"),
        )
    }
}

/// The session a page was reached with, put there by [`require_session`].
pub type SignedIn = axum::Extension<Session>;

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_post_from_another_origin_is_told_apart_from_the_consoles_own() {
        let own = headers(&[("host", "pb:8080"), ("origin", "http://pb:8080")]);
        assert!(same_origin(&own));
        let other = headers(&[("host", "pb:8080"), ("origin", "https://evil.example")]);
        assert!(!same_origin(&other));
        let fetch = headers(&[("host", "pb:8080"), ("sec-fetch-site", "cross-site")]);
        assert!(!same_origin(&fetch));
        assert!(same_origin(&headers(&[("host", "pb:8080")])));
    }

    #[test]
    fn the_console_of_a_listener_on_every_address_is_opened_through_loopback() {
        let at = |s: &str| s.parse().unwrap();
        assert_eq!(url(at("0.0.0.0:8080")), "http://127.0.0.1:8080/console");
        assert_eq!(url(at("[::]:8080")), "http://[::1]:8080/console");
        assert_eq!(url(at("10.0.0.7:9100")), "http://10.0.0.7:9100/console");
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; patchbay_console=v.x.y; b=2")]);
        assert_eq!(cookie(&h, COOKIE), Some("v.x.y"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
