//! The conversation's secure attributes: written with PATCH and verified by reading them back. The
//! values travel as [`SecureValues`] and are compared in memory; what this module reports (its
//! outcome, its errors, its log lines and spans) names keys, never values.

use std::time::Duration;

use tokio::time::Instant;

use crate::domain::{ConversationId, SecureValues};
use crate::genesys::{CallContext, GenesysError};
use crate::service::{UpdateError, Updater};

/// What became of a write to the secure attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureOutcome {
    /// The keys written, in order.
    pub keys: Vec<String>,
    /// Whether a read showed every key with the value written.
    pub verified: bool,
    /// The keys the last read did not show as written (all of them when no read was made).
    pub unconfirmed: Vec<String>,
    /// The Genesys calls the write and its reads cost.
    pub calls: u32,
}

/// Writes `values` to conversation `cid`'s secure attributes by `deadline`, and, when `verify`,
/// reads them back until every key shows its value or the verification time is spent. Admission
/// first: a write the budget cannot serve in time is refused before anything is sent.
pub async fn apply(
    updater: &Updater,
    cid: ConversationId,
    values: &SecureValues,
    verify: bool,
    deadline: Instant,
) -> Result<SecureOutcome, UpdateError> {
    let result = write_and_read(updater, cid, values, verify, deadline).await;
    let outcome = match &result {
        Ok(o) if o.verified => "verified",
        Ok(_) => "unverified",
        Err(_) => "failed",
    };
    metrics::counter!(crate::metrics::SECURE_WRITES, "outcome" => outcome).increment(1);
    result
}

async fn write_and_read(
    updater: &Updater,
    cid: ConversationId,
    values: &SecureValues,
    verify: bool,
    deadline: Instant,
) -> Result<SecureOutcome, UpdateError> {
    updater.admit_calls(1 + u32::from(verify), deadline).await?;
    let keys: Vec<String> = values.keys().map(str::to_string).collect();
    let genesys = updater.genesys();
    let mut cx = CallContext::until(deadline);
    if let Err(e) = genesys.patch_secure_attributes(&mut cx, &cid, values).await {
        return Err(refused(updater, &mut cx, cid, e).await);
    }
    if !verify {
        return Ok(SecureOutcome {
            unconfirmed: keys.clone(),
            keys,
            verified: false,
            calls: cx.calls(),
        });
    }
    let settings = updater.verify_settings();
    let give_up = (Instant::now() + Duration::from_millis(settings.timeout_ms)).min(deadline);
    let mut wait = Duration::from_millis(settings.poll_initial_ms);
    let poll_max = Duration::from_millis(settings.poll_max_ms.max(settings.poll_initial_ms));
    let mut unconfirmed = keys.clone();
    // Genesys answers the PATCH 202 and applies it asynchronously: each read waits its turn, and
    // the last starts no later than the verification allows.
    while Instant::now() + wait < give_up {
        tokio::time::sleep(wait).await;
        match genesys.get_secure_attributes(&mut cx, &cid).await {
            Ok(read) => {
                unconfirmed = values.differing(&read.attributes);
                if unconfirmed.is_empty() {
                    break;
                }
            }
            // A read that fails leaves the write unverified, never refused: it was accepted.
            Err(e) => {
                tracing::warn!(conversation_id = %cid, error = %e, "could not read the secure attributes back");
                break;
            }
        }
        wait = (wait * 2).min(poll_max);
    }
    Ok(SecureOutcome {
        verified: unconfirmed.is_empty(),
        keys,
        unconfirmed,
        calls: cx.calls(),
    })
}

/// A refused PATCH in the caller's terms: a conversation that is gone or has ended, from a fresh
/// read, or Genesys's refusal as it was.
async fn refused(
    updater: &Updater,
    cx: &mut CallContext,
    cid: ConversationId,
    error: GenesysError,
) -> UpdateError {
    match error.status() {
        Some(404) => UpdateError::ConversationNotFound(cid),
        Some(400 | 409) => match updater.read(cx, &cid).await {
            Ok(conversation) if conversation.is_ended() => UpdateError::ConversationEnded(cid),
            Err(e @ UpdateError::ConversationNotFound(_)) => e,
            _ => error.into(),
        },
        _ => error.into(),
    }
}
