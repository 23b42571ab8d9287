//! The conversation's secure attributes: written with PATCH and verified by reading them back. The
//! values travel as [`SecureValues`] and are compared in memory; what this module reports (its
//! outcome, its errors, its log lines and spans) names keys, never values.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use crate::config::DeliverySettings;
use crate::domain::{ConversationId, SecureValues};
use crate::genesys::{CallContext, GenesysError};
use crate::lane::{Asked, Batch, Lanes, Merge};
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

impl SecureOutcome {
    /// The outcome as one caller of a shared write sees it: its own keys.
    fn for_keys(mut self, keys: &[String]) -> Self {
        self.unconfirmed.retain(|k| keys.contains(k));
        self.verified = self.verified && self.unconfirmed.is_empty();
        self.keys = keys.to_vec();
        self
    }
}

impl Merge for SecureValues {
    fn merge(&mut self, later: Self) {
        self.extend(later);
    }
}

/// Each conversation's secure lane.
type SecureLanes = Lanes<ConversationId, SecureValues, Result<SecureOutcome, UpdateError>>;

/// The org's secure attributes: each conversation's lane. Cheap to clone.
#[derive(Clone)]
pub struct SecureAttributes {
    lanes: SecureLanes,
    delivery: Arc<DeliverySettings>,
}

impl SecureAttributes {
    pub fn new(delivery: DeliverySettings) -> Self {
        Self {
            lanes: Lanes::default(),
            delivery: Arc::new(delivery),
        }
    }

    /// Writes `values` to conversation `cid`'s secure attributes by `asked.deadline`, and, when
    /// `asked.verify`, reads them back until every key shows its value or the verification time is
    /// spent.
    /// Admission first: a write the budget cannot serve in time is refused before anything is sent.
    ///
    /// A conversation's secure writes go through its lane: a burst lingers briefly
    /// (`delivery.linger_ms`) and shares one PATCH and its reads; each caller is answered for its
    /// own keys. `asked.written` hears once Genesys accepted the PATCH.
    pub async fn write(
        &self,
        updater: &Updater,
        cid: ConversationId,
        values: SecureValues,
        asked: Asked,
    ) -> Result<SecureOutcome, UpdateError> {
        let keys = values.key_names();
        let (answer, idle) = self.lanes.join(cid, values, keys, asked);
        if idle {
            // The lane's writes outlive any one caller, so they run on a task of their own, in the
            // trace of the write that opened the lane.
            let (lane, updater) = (self.clone(), updater.clone());
            tokio::spawn(
                async move { lane.drain(&updater, cid).await }.instrument(tracing::Span::current()),
            );
        }
        let result = answer.await.unwrap_or_else(|_| {
            Err(UpdateError::Upstream(GenesysError::InvalidResponse(
                "the conversation's secure lane stopped".into(),
            )))
        });
        let outcome = match &result {
            Ok(o) if o.verified => "verified",
            Ok(_) => "unverified",
            Err(_) => "failed",
        };
        metrics::counter!(crate::metrics::SECURE_WRITES, "outcome" => outcome).increment(1);
        result
    }

    /// The Genesys calls a secure write takes when all goes well: the PATCH, and one read back
    /// when verifying.
    pub fn calls_needed(verify: bool) -> u32 {
        1 + u32::from(verify)
    }

    async fn drain(&self, updater: &Updater, cid: ConversationId) {
        let linger = || self.delivery.linger(updater.genesys().budget_pressure());
        self.lanes
            .drain(cid, linger, |mut batch| async move {
                let result = write_and_read(updater, &self.lanes, cid, &mut batch).await;
                if batch.callers() > 1 {
                    metrics::counter!(crate::metrics::COALESCED)
                        .increment(batch.callers() as u64 - 1);
                }
                batch.answer(|keys| result.clone().map(|o| o.for_keys(keys)));
            })
            .await
    }
}

/// What a round of a conversation's secure lane carries.
type Pending = Batch<SecureValues, Result<SecureOutcome, UpdateError>>;

/// Makes one PATCH of `batch`, tells its callers once Genesys accepted it, and reads it back. Writes
/// that come while the round waits for its read are PATCHed before it, so the read verifies them too
/// (as a participant's lane does): a burst that outlasts the linger still shares its reads.
async fn write_and_read(
    updater: &Updater,
    lanes: &SecureLanes,
    cid: ConversationId,
    batch: &mut Pending,
) -> Result<SecureOutcome, UpdateError> {
    let (verify, deadline) = (batch.verify, batch.deadline);
    updater
        .admit_calls(SecureAttributes::calls_needed(verify), deadline)
        .await?;
    let genesys = updater.genesys();
    let mut cx = CallContext::until(deadline);
    if let Err(e) = genesys
        .patch_secure_attributes(&mut cx, &cid, &batch.values)
        .await
    {
        return Err(refused(updater, &mut cx, cid, e).await);
    }
    batch.written();
    if !verify {
        let keys = batch.values.key_names();
        return Ok(SecureOutcome {
            unconfirmed: keys.clone(),
            keys,
            verified: false,
            calls: cx.calls(),
        });
    }
    let settings = updater.verify_settings();
    let mut give_up = (Instant::now() + settings.timeout()).min(deadline);
    let mut wait = settings.next_poll(Duration::ZERO);
    let mut unconfirmed = batch.values.key_names();
    // Genesys answers the PATCH 202 and applies it asynchronously: each read waits its turn, and
    // the last starts no later than the verification allows.
    while Instant::now() + wait < give_up {
        tokio::time::sleep(wait).await;
        if let Some(mut more) = lanes.take_waiting(&cid) {
            let written = updater
                .admit_calls(1, more.deadline.min(give_up))
                .await
                .is_ok()
                && genesys
                    .patch_secure_attributes(&mut cx, &cid, &more.values)
                    .await
                    .is_ok();
            if written {
                more.written();
                batch.absorb(more);
                give_up = give_up.min(batch.deadline);
                unconfirmed = batch.values.key_names();
                // A read that still starts within the verification time.
                wait = settings
                    .next_poll(Duration::ZERO)
                    .min(give_up.saturating_duration_since(Instant::now()) / 2);
                continue;
            }
            // The next round writes them, and answers a refusal in their callers' terms.
            lanes.put_back(&cid, more);
        }
        match genesys.get_secure_attributes(&mut cx, &cid).await {
            Ok(read) => {
                unconfirmed = batch.values.differing(&read.attributes);
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
        wait = settings.next_poll(wait);
    }
    Ok(SecureOutcome {
        verified: unconfirmed.is_empty(),
        keys: batch.values.key_names(),
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
        Some(400 | 409) => updater.explain_conversation(cx, cid, error).await,
        _ => error.into(),
    }
}
