//! Inbound authentication per route: API keys, Basic, generic HMAC and Standard Webhooks.
//!
//! Everything here works on the raw body before any parsing. A failure gives the caller a bare 401;
//! the reason goes to the log, without secrets.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, Method};
use base64::Engine;
use hmac::{Hmac, Mac};
use moka::sync::Cache;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::settings::{HmacSettings, HookAuthSettings, SignatureEncoding, SignedPart};
use crate::api::auth::ApiKeys;
use crate::api::problem::Challenge;

/// Why a request was refused, for the log only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthFailure(pub String);

fn fail<T>(why: impl Into<String>) -> Result<T, AuthFailure> {
    Err(AuthFailure(why.into()))
}

/// What a scheme needs to see of a request.
pub struct Inbound<'a> {
    pub method: &'a Method,
    /// Path and query, as received.
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// A route's compiled scheme.
#[derive(Clone)]
pub enum HookAuth {
    ApiKey(ApiKeys),
    Basic {
        username: [u8; 32],
        password: [u8; 32],
    },
    Hmac(Arc<HmacScheme>),
    StandardWebhooks(Arc<Vec<standardwebhooks::Webhook>>, ReplayGuard),
}

pub struct HmacScheme {
    header: String,
    secrets: Vec<SecretString>,
    prefix: Option<String>,
    encoding: SignatureEncoding,
    timestamp_header: Option<String>,
    tolerance: Duration,
    signed: Vec<SignedPart>,
    separator: String,
    public_url: Option<String>,
    replays: ReplayGuard,
}

/// Remembers signatures already accepted, for twice the tolerance, so an exact copy of a signed
/// request is refused: with a timestamp, the copy is refused until it expires anyway.
///
/// A signature is reserved when it verifies and released again when the request fails, so a
/// sender's retry of a failed delivery (which may carry the very same signature, when the sender
/// signs no timestamp) is processed, while a copy of a delivery that succeeded, or one racing it,
/// is refused. Senders that sign a timestamp re-sign each retry, so retries are never confused with
/// replays there.
#[derive(Clone)]
pub struct ReplayGuard(Cache<String, ()>);

impl ReplayGuard {
    fn new(tolerance: Duration) -> Self {
        // Twice the tolerance: a timestamp may be that far from the one it is compared with.
        Self(
            Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(tolerance * 2)
                .build(),
        )
    }

    /// A ticket the first time `key` is seen, `None` after.
    fn reserve(&self, key: String) -> Option<ReplayTicket> {
        self.0
            .entry(key.clone())
            .or_insert(())
            .is_fresh()
            .then(|| ReplayTicket {
                guard: self.clone(),
                key,
            })
    }
}

/// A reserved signature. [`ReplayTicket::release`] it when the request fails, so a retry may pass.
pub struct ReplayTicket {
    guard: ReplayGuard,
    key: String,
}

impl ReplayTicket {
    pub fn release(self) {
        self.guard.0.invalidate(&self.key);
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

impl HookAuth {
    /// Compiles a route's scheme; `global_keys` serve `api_key` routes without keys of their own.
    pub fn compile(
        settings: Option<&HookAuthSettings>,
        global_keys: &[SecretString],
    ) -> Result<Self, String> {
        match settings {
            None | Some(HookAuthSettings::ApiKey { keys: None }) => {
                if global_keys.is_empty() {
                    return Err("api_key needs keys of its own or auth.api_keys".into());
                }
                Ok(HookAuth::ApiKey(ApiKeys::new(
                    global_keys,
                    false,
                    "auth.api_keys",
                )))
            }
            Some(HookAuthSettings::ApiKey { keys: Some(keys) }) => {
                if keys.is_empty() || keys.iter().any(|k| k.expose_secret().is_empty()) {
                    return Err("auth.keys must hold non-empty keys".into());
                }
                Ok(HookAuth::ApiKey(ApiKeys::new(
                    keys,
                    false,
                    "the route's auth.keys",
                )))
            }
            Some(HookAuthSettings::Basic { username, password }) => {
                if username.is_empty()
                    || username.contains(':')
                    || password.expose_secret().is_empty()
                {
                    return Err(
                        "basic needs a username without `:` and a non-empty password".into(),
                    );
                }
                Ok(HookAuth::Basic {
                    username: digest(username.as_bytes()),
                    password: digest(password.expose_secret().as_bytes()),
                })
            }
            Some(HookAuthSettings::Hmac(h)) => {
                HmacScheme::compile(h).map(|s| HookAuth::Hmac(Arc::new(s)))
            }
            Some(HookAuthSettings::StandardWebhooks { secrets }) => {
                if secrets.is_empty() {
                    return Err("standard_webhooks needs at least one secret".into());
                }
                let hooks = secrets
                    .iter()
                    .map(|s| {
                        let text = s.expose_secret();
                        if !text.starts_with("whsec_") {
                            return Err("standard_webhooks secrets start with `whsec_`".to_string());
                        }
                        standardwebhooks::Webhook::new(text).map_err(|_| {
                            "a standard_webhooks secret is not valid base64 after `whsec_`"
                                .to_string()
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let tolerance = Duration::from_secs(super::settings::DEFAULT_TOLERANCE_S);
                Ok(HookAuth::StandardWebhooks(
                    Arc::new(hooks),
                    ReplayGuard::new(tolerance),
                ))
            }
        }
    }

    /// The scheme's name, as `[hooks.<name>.auth] scheme` spells it.
    pub fn scheme_name(&self) -> &'static str {
        match self {
            HookAuth::ApiKey(_) => "api_key",
            HookAuth::Basic { .. } => "basic",
            HookAuth::Hmac(_) => "hmac",
            HookAuth::StandardWebhooks(..) => "standard_webhooks",
        }
    }

    /// What a 401 from this route asks the caller for.
    pub fn challenge(&self) -> Challenge {
        match self {
            HookAuth::ApiKey(_) => Challenge::Bearer,
            HookAuth::Basic { .. } => Challenge::Basic,
            HookAuth::Hmac(_) | HookAuth::StandardWebhooks(..) => Challenge::Signature,
        }
    }

    /// `Ok` when the request carries a valid credential for this route, with a ticket for a
    /// signature that must not be used twice.
    pub fn verify(&self, request: &Inbound<'_>) -> Result<Option<ReplayTicket>, AuthFailure> {
        match self {
            HookAuth::ApiKey(keys) => keys
                .check(request.headers)
                .map(|()| None)
                .map_err(AuthFailure),
            HookAuth::Basic { username, password } => {
                verify_basic(request.headers, username, password).map(|()| None)
            }
            HookAuth::Hmac(scheme) => scheme.verify(request, now_unix()),
            HookAuth::StandardWebhooks(hooks, replays) => verify_standard(hooks, replays, request),
        }
    }
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn verify_basic(
    headers: &HeaderMap,
    username: &[u8; 32],
    password: &[u8; 32],
) -> Result<(), AuthFailure> {
    let Some(value) = header_str(headers, header::AUTHORIZATION.as_str()) else {
        return fail("no Authorization header");
    };
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return fail("malformed Authorization header");
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return fail("Authorization is not Basic");
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return fail("Basic credential is not base64");
    };
    let Some(colon) = decoded.iter().position(|b| *b == b':') else {
        return fail("Basic credential has no `:`");
    };
    let user_ok = digest(&decoded[..colon]).ct_eq(username);
    let pass_ok = digest(&decoded[colon + 1..]).ct_eq(password);
    if bool::from(user_ok & pass_ok) {
        Ok(())
    } else {
        fail("wrong Basic username or password")
    }
}

fn verify_standard(
    hooks: &[standardwebhooks::Webhook],
    replays: &ReplayGuard,
    request: &Inbound<'_>,
) -> Result<Option<ReplayTicket>, AuthFailure> {
    use standardwebhooks::WebhookError as E;
    let mut reason = String::from("no secret verified the signature");
    for hook in hooks {
        match hook.verify(request.body, request.headers) {
            Ok(()) => {
                let key = format!(
                    "{}|{}",
                    header_str(request.headers, standardwebhooks::HEADER_WEBHOOK_ID)
                        .unwrap_or_default(),
                    header_str(request.headers, standardwebhooks::HEADER_WEBHOOK_TIMESTAMP)
                        .unwrap_or_default()
                );
                return match replays.reserve(key) {
                    Some(ticket) => Ok(Some(ticket)),
                    None => fail("replayed: this webhook-id and timestamp were already accepted"),
                };
            }
            // Header and time problems do not depend on the secret: no other secret can help.
            Err(e @ (E::MissingHeader(_) | E::InvalidHeader(_) | E::InvalidTimestamp)) => {
                return fail(format!("standard webhooks: {e}"))
            }
            Err(E::TimestampTooOldError) => {
                return fail("expired: webhook-timestamp is older than the tolerance")
            }
            Err(E::FutureTimestampError) => {
                return fail("webhook-timestamp is too far in the future")
            }
            Err(e) => reason = format!("standard webhooks: {e}"),
        }
    }
    fail(reason)
}

impl HmacScheme {
    fn compile(h: &HmacSettings) -> Result<Self, String> {
        if h.header.trim().is_empty() {
            return Err("hmac needs a header".into());
        }
        if h.secrets.is_empty() || h.secrets.iter().any(|s| s.expose_secret().is_empty()) {
            return Err("hmac needs at least one non-empty secret".into());
        }
        let signed = h.signed.clone().unwrap_or_else(|| {
            if h.timestamp_header.is_some() {
                vec![SignedPart::Timestamp, SignedPart::Body]
            } else {
                vec![SignedPart::Body]
            }
        });
        if !signed.contains(&SignedPart::Body) {
            return Err("hmac `signed` must include body".into());
        }
        if signed.contains(&SignedPart::Timestamp) && h.timestamp_header.is_none() {
            return Err("hmac `signed` includes timestamp but no timestamp_header is set".into());
        }
        if h.timestamp_header.is_some() && !signed.contains(&SignedPart::Timestamp) {
            return Err("a timestamp_header must be signed: add timestamp to `signed`".into());
        }
        if signed.contains(&SignedPart::Uri) {
            match h.public_url.as_deref().map(url::Url::parse) {
                Some(Ok(u)) if matches!(u.scheme(), "http" | "https") => {}
                _ => return Err("hmac `signed` includes uri, so public_url must be the http(s) base URL senders call".into()),
            }
        }
        if h.tolerance_s == 0 {
            return Err("hmac tolerance_s must be greater than 0".into());
        }
        let tolerance = Duration::from_secs(h.tolerance_s);
        Ok(Self {
            header: h.header.to_ascii_lowercase(),
            secrets: h.secrets.clone(),
            prefix: h.prefix.clone().filter(|p| !p.is_empty()),
            encoding: h.encoding,
            timestamp_header: h.timestamp_header.as_ref().map(|t| t.to_ascii_lowercase()),
            tolerance,
            signed,
            separator: h.separator.clone(),
            public_url: h
                .public_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_string()),
            replays: ReplayGuard::new(tolerance),
        })
    }

    /// The message the sender signed.
    fn message(&self, request: &Inbound<'_>, timestamp: &str) -> Vec<u8> {
        let mut message = Vec::with_capacity(request.body.len() + 128);
        for (i, part) in self.signed.iter().enumerate() {
            if i > 0 {
                message.extend_from_slice(self.separator.as_bytes());
            }
            match part {
                SignedPart::Body => message.extend_from_slice(request.body),
                SignedPart::Timestamp => message.extend_from_slice(timestamp.as_bytes()),
                SignedPart::Method => message.extend_from_slice(request.method.as_str().as_bytes()),
                SignedPart::Uri => {
                    message.extend_from_slice(
                        self.public_url.as_deref().unwrap_or_default().as_bytes(),
                    );
                    message.extend_from_slice(request.path_and_query.as_bytes());
                }
            }
        }
        message
    }

    fn verify(&self, request: &Inbound<'_>, now: i64) -> Result<Option<ReplayTicket>, AuthFailure> {
        let Some(sent) = header_str(request.headers, &self.header) else {
            return fail(format!("no {} header", self.header));
        };
        let encoded = match &self.prefix {
            Some(prefix) => match sent.strip_prefix(prefix.as_str()) {
                Some(rest) => rest,
                None => return fail(format!("{} lacks the `{prefix}` prefix", self.header)),
            },
            None => sent,
        };
        let signature = match self.encoding {
            SignatureEncoding::Hex => hex::decode(encoded.to_ascii_lowercase()).ok(),
            SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok(),
        };
        let Some(signature) = signature else {
            return fail(format!(
                "{} is not {:?}-encoded",
                self.header, self.encoding
            ));
        };
        let timestamp = match &self.timestamp_header {
            None => "",
            Some(name) => {
                let Some(ts) = header_str(request.headers, name) else {
                    return fail(format!("no {name} header"));
                };
                let Some(at) = parse_timestamp(ts) else {
                    return fail(format!("{name} is not a Unix time or an RFC 3339 date"));
                };
                let age = now - at;
                if age > self.tolerance.as_secs() as i64 {
                    return fail(format!("expired: {name} is {age} s old"));
                }
                if -age > self.tolerance.as_secs() as i64 {
                    return fail(format!("{name} is {} s in the future", -age));
                }
                ts
            }
        };
        let message = self.message(request, timestamp);
        let matched = self.secrets.iter().any(|secret| {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
                .expect("HMAC takes any key length");
            mac.update(&message);
            // `verify_slice` compares in constant time.
            mac.verify_slice(&signature).is_ok()
        });
        if !matched {
            return fail("no secret verified the signature");
        }
        match self.replays.reserve(sent.to_string()) {
            Some(ticket) => Ok(Some(ticket)),
            None => fail("replayed: this signature was already accepted"),
        }
    }
}

/// Seconds since the epoch, milliseconds since the epoch (HubSpot), or an RFC 3339 date (Zendesk).
pub fn parse_timestamp(text: &str) -> Option<i64> {
    if let Ok(n) = text.parse::<i64>() {
        // No sender signs in seconds past the year 5138, so larger numbers are milliseconds.
        return Some(if n > 99_999_999_999 { n / 1000 } else { n });
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_as_seconds_milliseconds_or_rfc3339() {
        assert_eq!(parse_timestamp("1700000000"), Some(1_700_000_000));
        assert_eq!(parse_timestamp("1700000000123"), Some(1_700_000_000));
        assert_eq!(parse_timestamp("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(parse_timestamp("yesterday"), None);
    }
}
