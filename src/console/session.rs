//! Console sessions: a signed, expiring cookie given for an admin key, the token that guards every
//! state-changing form, and the brake on repeated wrong keys.
//!
//! The cookie carries its expiry and a random id, signed with HMAC-SHA256 under a key derived from
//! the configured admin keys. So any replica accepts a session another signed, without a shared
//! store, and rotating the admin keys ends every session. Sign-out revokes the id on the replica
//! that served it and clears the cookie in the browser.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const COOKIE: &str = "patchbay_console";

type HmacSha256 = Hmac<Sha256>;

/// A session that verified: its id, for the form token and sign-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub expires_unix: u64,
}

/// Signs and checks sessions.
#[derive(Clone)]
pub struct Sessions {
    key: Arc<[u8; 32]>,
    ttl: Duration,
    revoked: Arc<Mutex<HashMap<String, u64>>>,
    failures: Arc<Mutex<Failures>>,
}

/// Consecutive wrong keys, forgotten after a quiet [`FAILURE_MEMORY`].
#[derive(Debug, Default)]
struct Failures {
    count: u32,
    last: Option<Instant>,
}

/// Wrong keys answered at full speed before the brake starts.
const FREE_FAILURES: u32 = 3;
const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(5);
const FAILURE_MEMORY: Duration = Duration::from_secs(300);

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Sessions {
    pub fn new(admin_keys: &[SecretString], ttl: Duration) -> Self {
        let mut digests: Vec<[u8; 32]> = admin_keys
            .iter()
            .map(|k| Sha256::digest(k.expose_secret().as_bytes()).into())
            .collect();
        digests.sort_unstable();
        let mut key = Sha256::new();
        key.update(b"patchbay console session v1");
        for d in digests {
            key.update(d);
        }
        Self {
            key: Arc::new(key.finalize().into()),
            ttl,
            revoked: Arc::default(),
            failures: Arc::default(),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn mac(&self, purpose: &str, text: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(self.key.as_slice()).expect("any key length");
        mac.update(purpose.as_bytes());
        mac.update(b"\n");
        mac.update(text.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A new session's cookie value.
    pub fn issue(&self) -> String {
        let expires = unix_now() + self.ttl.as_secs();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let body = format!("{expires}.{id}");
        format!("{body}.{}", self.mac("session", &body))
    }

    /// The session a cookie value stands for, if it is signed here, unexpired and not signed out.
    pub fn verify(&self, cookie: &str) -> Option<Session> {
        let (body, mac) = cookie.rsplit_once('.')?;
        let expected = self.mac("session", body);
        if !bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
            return None;
        }
        let (expires, id) = body.split_once('.')?;
        let expires_unix: u64 = expires.parse().ok()?;
        if expires_unix <= unix_now() {
            return None;
        }
        if self.revoked().contains_key(id) {
            return None;
        }
        Some(Session {
            id: id.to_string(),
            expires_unix,
        })
    }

    /// The token every form of `session` carries.
    pub fn form_token(&self, session: &Session) -> String {
        self.mac("form", &session.id)
    }

    pub fn form_token_matches(&self, session: &Session, token: &str) -> bool {
        self.form_token(session)
            .as_bytes()
            .ct_eq(token.as_bytes())
            .into()
    }

    fn revoked(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.revoked.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn revoke(&self, session: &Session) {
        let now = unix_now();
        let mut revoked = self.revoked();
        revoked.retain(|_, expires| *expires > now);
        revoked.insert(session.id.clone(), session.expires_unix);
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long the next sign-in is held back: nothing for the first few wrong keys, then doubling,
    /// capped, until a right key or a quiet spell.
    pub fn brake(&self) -> Duration {
        let mut f = self.failures();
        if f.last.is_some_and(|at| at.elapsed() > FAILURE_MEMORY) {
            *f = Failures::default();
        }
        match f.count.checked_sub(FREE_FAILURES) {
            None => Duration::ZERO,
            Some(n) => FIRST_DELAY
                .saturating_mul(2u32.saturating_pow(n))
                .min(MAX_DELAY),
        }
    }

    pub fn failed(&self) {
        let mut f = self.failures();
        f.count = f.count.saturating_add(1);
        f.last = Some(Instant::now());
    }

    pub fn succeeded(&self) {
        *self.failures() = Failures::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sessions(key: &str) -> Sessions {
        Sessions::new(&[key.to_string().into()], Duration::from_secs(60))
    }

    #[test]
    fn a_session_verifies_where_it_was_signed_and_nowhere_else() {
        let s = sessions("admin");
        let cookie = s.issue();
        let session = s.verify(&cookie).expect("valid");
        // Another replica with the same keys accepts it; other keys do not.
        assert_eq!(sessions("admin").verify(&cookie), Some(session.clone()));
        assert_eq!(sessions("other").verify(&cookie), None);
        s.revoke(&session);
        assert_eq!(s.verify(&cookie), None);
    }

    #[test]
    fn an_expired_session_is_refused() {
        let s = sessions("admin");
        let expires = unix_now() - 1;
        let body = format!("{expires}.abc");
        let cookie = format!("{body}.{}", s.mac("session", &body));
        assert_eq!(s.verify(&cookie), None);
    }

    #[test]
    fn the_brake_holds_the_attempt_after_three_wrong_keys_doubles_and_is_capped() {
        let s = sessions("admin");
        let mut delays = Vec::new();
        for _ in 0..10 {
            delays.push(s.brake());
            s.failed();
        }
        assert_eq!(&delays[..3], &[Duration::ZERO; 3]);
        assert_eq!(delays[3], FIRST_DELAY, "the fourth wrong key waits");
        assert_eq!(delays[4], FIRST_DELAY * 2);
        assert_eq!(delays[9], MAX_DELAY);
        s.succeeded();
        assert_eq!(s.brake(), Duration::ZERO);
    }

    proptest! {
        #[test]
        fn a_tampered_cookie_never_verifies(cookie in "[0-9a-f.]{0,120}", flip in 0usize..200) {
            let s = sessions("admin");
            prop_assert!(s.verify(&cookie).is_none());
            let mut good = s.issue().into_bytes();
            let i = flip % good.len();
            good[i] = if good[i] == b'0' { b'1' } else { b'0' };
            prop_assert!(s.verify(&String::from_utf8(good).unwrap()).is_none());
        }
    }
}
