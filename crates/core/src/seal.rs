//! Secure values at rest: sealed with AES-256-GCM under the newest key of `secure.keys`, opened
//! with whichever configured key sealed them, and fingerprinted with a keyed HMAC.
//!
//! A job, a dead letter or an idempotency record that carries a conversation's secure attributes
//! keeps them only as a [`Sealed`] value: the store (SQLite's file, Redis's keys) never holds a
//! value in clear. The keys' names stay readable, so operators and the journal can still say what
//! a job writes. Each sealed value is bound to its conversation (AES-GCM's associated data), so a
//! ciphertext copied onto another job does not open.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::domain::SecureValues;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Secure values as the store keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The id of the key that sealed them.
    pub key: String,
    /// The 96-bit nonce, base64.
    pub nonce: String,
    /// The ciphertext and its tag, base64.
    pub data: String,
}

/// Why sealed values did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The key that sealed them is no longer configured.
    #[error("the key `{0}` that sealed these secure values is not among secure.keys")]
    KeyGone(String),
    /// They do not open under their key: altered, or sealed for another conversation.
    #[error("the secure values sealed under key `{0}` do not open (altered, or sealed elsewhere)")]
    Unreadable(String),
}

/// One key of the ring.
struct RingKey {
    id: String,
    cipher: Aes256Gcm,
    /// The fingerprint key, derived from the encryption key so one secret serves both, and never
    /// the encryption key itself.
    mac: Hmac<Sha256>,
}

/// The configured keys, newest first. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Keyring {
    keys: std::sync::Arc<Vec<RingKey>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| &k.id))
            .finish()
    }
}

/// The shape of `secure.keys`, for error messages.
pub const KEYS_SHAPE: &str =
    "a comma-separated list of `id:key`, newest first, each key 32 random bytes in base64";

impl Keyring {
    /// Reads `secure.keys`: `id:base64key[,id:base64key…]`, newest first. Every problem is reported,
    /// naming the entry by its id or position, never by its key.
    pub fn parse(keys: &SecretString) -> Result<Self, Vec<String>> {
        let mut ring = Vec::new();
        let mut problems = Vec::new();
        let text = keys.expose_secret();
        for (n, entry) in text.split(',').map(str::trim).enumerate() {
            if entry.is_empty() {
                if text.trim().is_empty() {
                    break;
                }
                problems.push(format!("entry {} is empty; expected {KEYS_SHAPE}", n + 1));
                continue;
            }
            let Some((id, key)) = entry.split_once(':') else {
                problems.push(format!(
                    "entry {} has no `id:` before its key; expected {KEYS_SHAPE}",
                    n + 1
                ));
                continue;
            };
            let id = id.trim();
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                problems.push(format!(
                    "entry {}: a key id is letters, digits, `.`, `_` or `-`",
                    n + 1
                ));
                continue;
            }
            if ring.iter().any(|k: &RingKey| k.id == id) {
                problems.push(format!("the key id `{id}` appears twice"));
                continue;
            }
            match B64.decode(key.trim()) {
                Ok(bytes) if bytes.len() == 32 => ring.push(RingKey {
                    id: id.to_string(),
                    cipher: Aes256Gcm::new_from_slice(&bytes).expect("32 bytes"),
                    mac: labelled_mac(&bytes, b"patchbay idempotency fingerprint v1"),
                }),
                _ => problems.push(format!(
                    "the key `{id}` is not 32 bytes in base64 (make one with `openssl rand -base64 32`)"
                )),
            }
        }
        if problems.is_empty() {
            Ok(Self {
                keys: std::sync::Arc::new(ring),
            })
        } else {
            Err(problems)
        }
    }

    /// Whether any key is configured: without one, nothing secure may be stored.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The id of the key that seals, if any.
    pub fn newest(&self) -> Option<&str> {
        self.keys.first().map(|k| k.id.as_str())
    }

    /// Seals `values` for conversation `context` under the newest key; `None` with no key.
    pub fn seal(&self, values: &SecureValues, context: &str) -> Option<Sealed> {
        let key = self.keys.first()?;
        let plain: BTreeMap<&str, &str> = values.expose().collect();
        let plain =
            Zeroizing::new(serde_json::to_vec(&plain).expect("a map of strings serializes"));
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let data = key
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM seals any message below 64 GiB");
        Some(Sealed {
            key: key.id.clone(),
            nonce: B64.encode(nonce),
            data: B64.encode(data),
        })
    }

    /// Opens values sealed for conversation `context`, with the key that sealed them.
    pub fn open(&self, sealed: &Sealed, context: &str) -> Result<SecureValues, SealError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == sealed.key)
            .ok_or_else(|| SealError::KeyGone(sealed.key.clone()))?;
        let unreadable = || SealError::Unreadable(sealed.key.clone());
        let nonce = B64.decode(&sealed.nonce).map_err(|_| unreadable())?;
        let data = B64.decode(&sealed.data).map_err(|_| unreadable())?;
        if nonce.len() != 12 {
            return Err(unreadable());
        }
        let plain = Zeroizing::new(
            key.cipher
                .decrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: &data,
                        aad: context.as_bytes(),
                    },
                )
                .map_err(|_| unreadable())?,
        );
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&plain).map_err(|_| unreadable())?;
        SecureValues::from_json(&map).map_err(|_| unreadable())
    }

    /// Keyed fingerprints of `bytes` (an idempotency key's body): the newest key's first, then one
    /// per older key, so a retry fingerprinted before a rotation still matches. Empty with no key.
    pub fn fingerprints(&self, bytes: &[u8]) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| {
                let mut mac = k.mac.clone();
                mac.update(bytes);
                format!("hmac:{}:{}", k.id, hex::encode(mac.finalize().into_bytes()))
            })
            .collect()
    }
}

/// A key of one use derived from a secret: HMAC-SHA-256 keyed by HMAC(secret, `label`), so a secret
/// (an encryption key, the OAuth client's) is never used for two purposes.
pub fn labelled_mac(secret: &[u8], label: &[u8]) -> Hmac<Sha256> {
    let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    derive.update(label);
    <Hmac<Sha256> as Mac>::new_from_slice(&derive.finalize().into_bytes()).expect("any key length")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ring(spec: &str) -> Keyring {
        Keyring::parse(&SecretString::from(spec.to_string())).unwrap()
    }

    fn key(byte: u8) -> String {
        B64.encode([byte; 32])
    }

    fn values() -> SecureValues {
        SecureValues::from_json(json!({"dob": "1970-07-04"}).as_object().unwrap()).unwrap()
    }

    #[test]
    fn sealed_values_open_under_the_key_that_sealed_them_after_a_rotation() {
        let old = ring(&format!("a:{}", key(1)));
        let sealed = old.seal(&values(), "conv").unwrap();
        assert_eq!(sealed.key, "a");
        assert!(!sealed.data.contains("1970"));
        let rotated = ring(&format!("b:{},a:{}", key(2), key(1)));
        assert_eq!(rotated.newest(), Some("b"));
        let opened = rotated.open(&sealed, "conv").unwrap();
        assert_eq!(opened.expose().collect::<Vec<_>>(), [("dob", "1970-07-04")]);
        assert_eq!(rotated.seal(&values(), "conv").unwrap().key, "b");
    }

    #[test]
    fn a_retired_key_or_another_conversation_is_reported_never_opened() {
        let sealed = ring(&format!("a:{}", key(1)))
            .seal(&values(), "conv")
            .unwrap();
        let retired = ring(&format!("b:{}", key(2)));
        assert_eq!(
            retired.open(&sealed, "conv").unwrap_err(),
            SealError::KeyGone("a".into())
        );
        let same = ring(&format!("a:{}", key(1)));
        assert_eq!(
            same.open(&sealed, "other").unwrap_err(),
            SealError::Unreadable("a".into())
        );
    }

    #[test]
    fn no_key_seals_nothing_and_fingerprints_nothing() {
        let none = ring("");
        assert!(none.is_empty());
        assert!(none.seal(&values(), "conv").is_none());
        assert!(none.fingerprints(b"body").is_empty());
    }

    #[test]
    fn fingerprints_are_keyed_and_older_keys_still_match() {
        let a = ring(&format!("a:{}", key(1)));
        let b = ring(&format!("b:{},a:{}", key(2), key(1)));
        let plain = hex::encode(<Sha256 as sha2::Digest>::digest(b"body"));
        assert!(!a.fingerprints(b"body")[0].contains(&plain));
        assert_eq!(b.fingerprints(b"body")[1], a.fingerprints(b"body")[0]);
        assert_ne!(b.fingerprints(b"body")[0], a.fingerprints(b"body")[0]);
    }

    #[test]
    fn every_malformed_entry_is_reported_without_its_key() {
        let secret = "not-a-key";
        let problems = Keyring::parse(&SecretString::from(format!(
            "a:{secret},nocolon,a:{},b c:{}",
            key(1),
            key(1)
        )))
        .unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().all(|p| !p.contains(secret)));
    }
}
