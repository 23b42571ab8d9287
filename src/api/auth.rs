//! Inbound authentication: API keys as `Authorization: Bearer KEY` or `X-API-Key: KEY`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::problem::{ApiError, Challenge};

pub const API_KEY_HEADER: &str = "x-api-key";

/// The accepted keys, held as SHA-256 digests.
///
/// Comparing digests keeps the comparison constant-time even when lengths differ (`subtle` returns
/// early on a length mismatch), and every key is compared so the position of a match leaks nothing.
#[derive(Clone)]
pub struct ApiKeys {
    digests: Arc<Vec<[u8; 32]>>,
    allow_anonymous: bool,
    /// The setting the keys come from, so a refusal's log line says what to configure.
    setting: &'static str,
}

impl ApiKeys {
    pub fn new(keys: &[SecretString], allow_anonymous: bool, setting: &'static str) -> Self {
        Self {
            digests: Arc::new(keys.iter().map(|k| digest(k.expose_secret())).collect()),
            allow_anonymous,
            setting,
        }
    }

    /// Whether no key at all is configured (and none is waived): every request is refused.
    pub fn is_unset(&self) -> bool {
        self.digests.is_empty() && !self.allow_anonymous
    }

    /// Whether `candidate` is one of the keys.
    pub fn accepts(&self, candidate: &str) -> bool {
        let d = digest(candidate);
        self.digests
            .iter()
            .fold(subtle::Choice::from(0), |found, key| found | key.ct_eq(&d))
            .into()
    }

    /// Checks a request's headers; `Ok` when a configured key is presented or none is required.
    /// The error says why, for the log.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), String> {
        if self.digests.is_empty() {
            if self.allow_anonymous {
                return Ok(());
            }
            return Err(format!(
                "no key is configured for this endpoint: set {}",
                self.setting
            ));
        }
        let presented = presented_key(headers).ok_or("no API key presented")?;
        if self.accepts(presented) {
            Ok(())
        } else {
            Err(format!(
                "the presented API key matches no key in {}",
                self.setting
            ))
        }
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// The key from `Authorization: Bearer KEY`, else from `X-API-Key`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    bearer
        .or_else(|| {
            headers
                .get(API_KEY_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
        .filter(|k| !k.is_empty())
}

/// Middleware: refuses requests without a valid key with a 401 problem. The problem's one log line
/// says why; the caller doesn't learn.
pub async fn require_api_key(
    State(keys): State<ApiKeys>,
    request: Request,
    next: Next,
) -> Response {
    match keys.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(reason) => ApiError::Unauthorized {
            challenge: Challenge::Bearer,
            reason,
        }
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::new(
            &[SecretString::from("alpha"), SecretString::from("beta")],
            false,
            "auth.api_keys",
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn bearer_and_header_keys_are_accepted() {
        assert!(keys()
            .check(&headers(&[("authorization", "Bearer beta")]))
            .is_ok());
        assert!(keys().check(&headers(&[("x-api-key", "alpha")])).is_ok());
    }

    #[test]
    fn wrong_missing_and_prefix_keys_are_refused() {
        assert!(keys()
            .check(&headers(&[("authorization", "Bearer alph")]))
            .is_err());
        assert!(keys()
            .check(&headers(&[("authorization", "Basic alpha")]))
            .is_err());
        assert!(keys().check(&headers(&[])).is_err());
        assert!(keys().check(&headers(&[("x-api-key", "")])).is_err());
    }

    #[test]
    fn anonymous_only_when_allowed_and_no_key_is_configured() {
        assert!(ApiKeys::new(&[], true, "auth.api_keys")
            .check(&HeaderMap::new())
            .is_ok());
        let unset = ApiKeys::new(&[], false, "auth.admin_keys");
        assert!(unset.is_unset());
        assert_eq!(
            unset.check(&HeaderMap::new()).unwrap_err(),
            "no key is configured for this endpoint: set auth.admin_keys"
        );
    }
}
