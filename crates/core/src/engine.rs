//! The delivery engine: the one code path that applies updates, synchronous requests and queued jobs
//! alike, spending as few Genesys calls as it can.
//!
//! Every update joins its conversation's lane. A lane is run by one task at a time, in rounds:
//! - it lingers briefly (`delivery.linger_ms`, longer as the budget fills), so a CRM's burst for one
//!   call arrives in one round;
//! - it waits for a budget slot before taking what is pending, so updates that arrive meanwhile join;
//! - it merges the pending updates of each participant into one PATCH, in acceptance order (later keys
//!   win), never over `limits.max_attributes_bytes`;
//! - it reads the conversation back once for every update of the round, only after their PATCHes were
//!   answered and when no PATCH is pending, and repeats the read until each update's own keys show or
//!   its verification time is up.
//!
//! Each caller is answered about its own keys. A key a later update overwrote is a mismatch whose
//! `actual` is the newer value, answered without waiting for a value that will never show.
//! A read younger than `delivery.read_reuse_ms` finds a participant by purpose without another GET.
//!
//! The first read-back of a round waits for as long as Genesys has lately taken to show a write
//! ([`Visibility`]): Genesys applies a PATCH asynchronously, and a read that still sees the old value
//! is a call spent for nothing.

use std::collections::{hash_map, BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::DeliverySettings;
use crate::domain::{AttributeMap, AttributeUpdate, ConversationId, Purpose, Target};
use crate::genesys::model::Conversation;
use crate::genesys::{CallContext, GenesysError};
use crate::mirror::{Confirmation, Evidence, Mirror, Pushed, Trust, Watch};
use crate::service::{
    compare, slot_wait, CallShare, Mismatch, UpdateError, UpdateOutcome, Updater,
};

use crate::metrics::{COALESCED, READS_REUSED, UPDATES};

type Reply = oneshot::Sender<Result<UpdateOutcome, UpdateError>>;

/// One update waiting in its lane.
struct Entry {
    participant: String,
    /// The purpose it was addressed by, when it was found from a reused read: a refused PATCH then
    /// finds it again from a fresh one.
    found_in_reused: Option<Purpose>,
    /// Whether its participant was found by purpose in the mirror.
    from_mirror: bool,
    attributes: AttributeMap,
    verify: bool,
    deadline: Instant,
    /// Whether its request already lingered in its conversation's other lanes (secure attributes,
    /// a custom record): a round of such updates alone does not linger again.
    lingered: bool,
    reply: Reply,
    /// The trace of the update's request (or job attempt), which the round that applies it links.
    trace: opentelemetry::Context,
}

/// What a caller is told besides its keys: whether they showed, and what showed them.
struct Seen {
    verified: bool,
    by: Option<Confirmation>,
    attributes: BTreeMap<String, String>,
    mismatches: Vec<Mismatch>,
}

impl Entry {
    /// Answers its caller: the participant's attributes as seen (or as written, unverified), and
    /// the keys that did not read back as written.
    fn answer(self, cid: ConversationId, seen: Seen, shared: &CallShare) {
        let _ = self.reply.send(Ok(UpdateOutcome {
            conversation_id: cid,
            participant_id: self.participant,
            verified: seen.verified,
            verified_by: seen.by.filter(|_| seen.verified),
            resolved_by_mirror: self.from_mirror,
            resolving_read: false,
            attributes: seen.attributes,
            mismatches: seen.mismatches,
            shared: shared.clone(),
            // Answered inside its round: the round's span, for the update's own span to link.
            round: crate::trace::span_context(&tracing::Span::current()),
        }));
    }

    fn fail(self, err: UpdateError) {
        let _ = self.reply.send(Err(err));
    }
}

/// A written update waiting for its keys to read back.
struct Waiter {
    entry: Entry,
    /// When its PATCH was sent: only an event received after it can show the write.
    sent: Instant,
    /// When its verification gives up: `verify.timeout_ms` after its write, within its deadline.
    give_up: Instant,
}

/// How long Genesys has lately taken from a PATCH's answer to a read that shows it: the wait before
/// a round's first read-back, from none (a Genesys that shows writes at once is read at once) up to
/// `verify.poll_max_ms`.
///
/// Reads only bound the lag: one that shows the write says it took at most that long, one that does
/// not says it took longer. So a first read that already shows the write shortens the wait by a
/// tenth (following a Genesys that got faster, at the price of an occasional early read), and a
/// write first seen on a later read sets the wait to when it was seen.
struct Visibility {
    wait_ms: AtomicU64,
    ceiling_ms: u64,
}

impl Visibility {
    fn new(ceiling_ms: u64) -> Self {
        Self {
            wait_ms: AtomicU64::new(0),
            ceiling_ms,
        }
    }

    fn first_read(&self) -> Duration {
        Duration::from_millis(self.wait_ms.load(Ordering::Relaxed))
    }

    /// Every write of a round showed on a read `after` its PATCH; `first` when it was the first read.
    fn seen(&self, after: Duration, first: bool) {
        let next = if first {
            self.wait_ms.load(Ordering::Relaxed) * 9 / 10
        } else {
            after.as_millis() as u64
        };
        self.wait_ms
            .store(next.min(self.ceiling_ms), Ordering::Relaxed);
    }
}

struct Inner {
    updater: Updater,
    visibility: Visibility,
    settings: DeliverySettings,
    max_bytes: usize,
    /// Recent conversation reads, for finding participants by purpose; one GET for concurrent misses.
    /// `None` when `delivery.read_reuse_ms` is 0. Each read keeps when it was made: its age is
    /// measured on the runtime's clock (the cache's own time to live only bounds memory).
    reads: Option<moka::future::Cache<ConversationId, (Arc<Conversation>, Instant)>>,
    /// Updates pending in each lane that has a task running it. An entry exists exactly while its
    /// task runs.
    lanes: Mutex<HashMap<ConversationId, Vec<Entry>>>,
    /// The live mirror, when on, and how long a write to a conversation it holds waits for an
    /// event that shows it before a read decides.
    mirror: Option<(Mirror, Duration)>,
}

/// Cheap to clone: clones share the lanes.
#[derive(Clone)]
pub struct Engine(Arc<Inner>);

impl Engine {
    pub fn new(updater: Updater, settings: DeliverySettings, max_attributes_bytes: usize) -> Self {
        let reads = (settings.read_reuse_ms > 0).then(|| {
            moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(settings.read_reuse())
                .build()
        });
        let verify = updater.verify_settings();
        let visibility = Visibility::new(verify.poll_max_ms);
        Self(Arc::new(Inner {
            visibility,
            updater,
            settings,
            max_bytes: max_attributes_bytes,
            reads,
            lanes: Mutex::new(HashMap::new()),
            mirror: None,
        }))
    }

    /// The engine, using `mirror` to find participants and to see writes land, waiting up to
    /// `confirm` for an event before a read. Set before the engine is shared.
    pub fn with_mirror(mut self, mirror: Mirror, confirm: Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.mirror = Some((mirror, confirm));
        }
        self
    }

    pub fn mirror(&self) -> Option<&Mirror> {
        self.0.mirror.as_ref().map(|(m, _)| m)
    }

    pub fn updater(&self) -> &Updater {
        &self.0.updater
    }

    /// The Genesys calls `update` makes when all goes well, as things stand: the participant found
    /// in the mirror or from a young read needs no read of its own, and a write to a mirrored
    /// conversation is expected to show by an event, with a read only as a fallback. What a request
    /// is admitted for ([`Updater::admit_calls`]), with its other targets' calls.
    pub async fn calls_needed(&self, update: &AttributeUpdate) -> u32 {
        let mut calls = self.0.updater.calls_needed(update);
        let mirrored = self.0.mirrored(&update.conversation_id).is_some();
        if matches!(update.target, Target::Purpose(_))
            && (mirrored || self.0.young_read(&update.conversation_id).await.is_some())
        {
            calls -= 1;
        }
        if mirrored && calls > 1 && self.0.updater.verifies(update.verify) {
            calls -= 1;
        }
        calls
    }

    /// The conversation read now, by `deadline`; kept for reuse, so the update that follows finds
    /// its participant without another GET.
    pub async fn read_fresh(
        &self,
        cid: ConversationId,
        deadline: Instant,
    ) -> Result<Arc<Conversation>, UpdateError> {
        let conversation = Arc::new(
            self.0
                .updater
                .read(&mut CallContext::until(deadline), &cid)
                .await?,
        );
        self.0.remember(cid, &conversation).await;
        Ok(conversation)
    }

    /// Applies `update` and answers with what Genesys shows, by `deadline` (the lane works for it
    /// until then; the caller bounds its own wait).
    pub async fn submit(
        &self,
        update: &AttributeUpdate,
        deadline: Instant,
    ) -> Result<UpdateOutcome, UpdateError> {
        self.submit_after(update, deadline, false).await
    }

    /// [`Engine::submit`], for an update whose request already `lingered` in its conversation's
    /// other lanes: its lane's round lingers no more when every update waiting in it did, so a
    /// request with several targets lingers once.
    pub async fn submit_after(
        &self,
        update: &AttributeUpdate,
        deadline: Instant,
        lingered: bool,
    ) -> Result<UpdateOutcome, UpdateError> {
        metrics::counter!(UPDATES).increment(1);
        let cid = update.conversation_id;
        let mut resolving_read = false;
        let (participant, found_in_reused, from_mirror) = match &update.target {
            Target::Participant(pid) => (pid.to_string(), None, false),
            Target::Purpose(purpose) => {
                let held = self
                    .0
                    .mirrored(&cid)
                    .and_then(|c| Updater::resolve(&c, cid, purpose).ok());
                self.0.served("resolution", held.is_some());
                match held {
                    // A refused PATCH finds it again from a fresh read.
                    Some(participant) => (participant, Some(purpose.clone()), true),
                    None => {
                        let (conversation, reused) = self.0.read_for_resolve(cid, deadline).await?;
                        let participant = Updater::resolve(&conversation, cid, purpose)?;
                        resolving_read = !reused;
                        (participant, reused.then(|| purpose.clone()), false)
                    }
                }
            }
        };
        tracing::Span::current().record("participant_id", participant.as_str());
        let verify = self.0.updater.verifies(update.verify);
        let (reply, answer) = oneshot::channel();
        let entry = Entry {
            participant,
            found_in_reused,
            from_mirror,
            attributes: update.attributes.clone(),
            verify,
            deadline,
            lingered,
            reply,
            trace: tracing_opentelemetry::OpenTelemetrySpanExt::context(&tracing::Span::current()),
        };
        let start = match self.0.lock_lanes().entry(cid) {
            hash_map::Entry::Occupied(mut lane) => {
                lane.get_mut().push(entry);
                false
            }
            hash_map::Entry::Vacant(lane) => {
                lane.insert(vec![entry]);
                true
            }
        };
        if start {
            tokio::spawn(self.0.clone().run_lane(cid));
        }
        answer
            .await
            .unwrap_or(Err(UpdateError::Upstream(GenesysError::Timeout)))
            .map(|mut outcome| {
                outcome.resolving_read = resolving_read;
                // Both ways: the round links the updates it carried, and each update links the
                // round, so every update's trace leads to the calls it shared.
                if let Some(round) = outcome.round.take() {
                    tracing_opentelemetry::OpenTelemetrySpanExt::add_link(
                        &tracing::Span::current(),
                        round,
                    );
                }
                outcome
            })
    }
}

impl Inner {
    /// The conversation as the mirror holds it, when the mirror vouches for it now.
    fn mirrored(&self, cid: &ConversationId) -> Option<Arc<Conversation>> {
        let (mirror, _) = self.mirror.as_ref()?;
        mirror
            .get(&cid.to_string())
            .filter(|seen| seen.trust == Trust::Trusted)
            .map(|seen| seen.conversation)
    }

    /// Counts what served a lookup, a resolution or a verification: the mirror or REST. Only
    /// while a mirror is configured, so the figures compare like with like.
    fn served(&self, what: &'static str, by_mirror: bool) {
        if self.mirror.is_some() {
            crate::metrics::mirror_served(what, by_mirror);
        }
    }

    fn lock_lanes(&self) -> std::sync::MutexGuard<'_, HashMap<ConversationId, Vec<Entry>>> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `conversation`, just read, for updates that follow to find their participant in.
    async fn remember(&self, cid: ConversationId, conversation: &Arc<Conversation>) {
        if let Some(reads) = &self.reads {
            reads
                .insert(cid, (conversation.clone(), Instant::now()))
                .await;
        }
    }

    /// The kept read of `cid`, if it is younger than `delivery.read_reuse_ms`. An older one is
    /// dropped, so the next read is made afresh.
    async fn young_read(&self, cid: &ConversationId) -> Option<Arc<Conversation>> {
        let reads = self.reads.as_ref()?;
        let (conversation, read_at) = reads.get(cid).await?;
        if read_at.elapsed() < self.settings.read_reuse() {
            return Some(conversation);
        }
        reads.invalidate(cid).await;
        None
    }

    /// A read of the conversation no older than `delivery.read_reuse_ms`, and whether it was
    /// reused (made before this update came). A new read is made by `deadline`; one already in
    /// flight for another update is shared, under that update's deadline.
    async fn read_for_resolve(
        &self,
        cid: ConversationId,
        deadline: Instant,
    ) -> Result<(Arc<Conversation>, bool), UpdateError> {
        let Some(reads) = &self.reads else {
            return self
                .updater
                .read(&mut CallContext::until(deadline), &cid)
                .await
                .map(|c| (Arc::new(c), false));
        };
        if let Some(conversation) = self.young_read(&cid).await {
            metrics::counter!(READS_REUSED).increment(1);
            return Ok((conversation, true));
        }
        // On the heap: moka's single flight is kilobytes of state that the lane's and the
        // handler's futures would otherwise carry, and move, whole.
        Box::pin(reads.try_get_with(cid, async {
            self.updater
                .read(&mut CallContext::until(deadline), &cid)
                .await
                .map(|c| (Arc::new(c), Instant::now()))
        }))
        .await
        .map(|(c, _)| (c, false))
        .map_err(|e: Arc<UpdateError>| (*e).clone())
    }

    /// After a refused PATCH, finds again from a fresh read the participants of entries that were
    /// found in a reused read. Those now found elsewhere go back to the lane; the rest are answered
    /// with `err`.
    async fn refind(&self, cid: ConversationId, entries: Vec<Entry>, err: UpdateError) {
        if let Some(reads) = &self.reads {
            reads.invalidate(&cid).await;
        }
        if let Some((mirror, _)) = &self.mirror {
            if entries.iter().any(|e| e.from_mirror) {
                // Genesys refused what the mirror named: the mirror was stale about this call.
                mirror.forget(&cid.to_string());
            }
        }
        for mut entry in entries {
            let Some(purpose) = entry.found_in_reused.take() else {
                entry.fail(err.clone());
                continue;
            };
            let found = self
                .read_for_resolve(cid, entry.deadline)
                .await
                .and_then(|(conversation, _)| Updater::resolve(&conversation, cid, &purpose));
            match found {
                Ok(participant) if participant != entry.participant => {
                    tracing::info!(
                        conversation_id = %cid,
                        was = %entry.participant,
                        now = %participant,
                        "a reused read named a participant Genesys refused; writing to the one a fresh read names"
                    );
                    entry.participant = participant;
                    entry.from_mirror = false;
                    // The lane is running (this is its task), so its entry exists.
                    self.lock_lanes().entry(cid).or_default().push(entry);
                }
                Ok(_) => entry.fail(err.clone()),
                Err(fresh) => entry.fail(fresh),
            }
        }
    }

    /// Ends `cid`'s lane when nothing is pending, under the same lock as `submit` adds to it, so no
    /// entry is ever left without a task to run it.
    fn end_if_idle(&self, cid: &ConversationId) -> bool {
        let mut lanes = self.lock_lanes();
        let idle = lanes.get(cid).is_none_or(Vec::is_empty);
        if idle {
            lanes.remove(cid);
        }
        idle
    }

    /// Runs `cid`'s lane in rounds until nothing is pending.
    ///
    /// Each round's first PATCH, and its first read when an update verifies, are reserved before the
    /// linger: updates that come meanwhile see the budget as it is, and a lane the budget cannot
    /// serve is refused at once rather than after lingering. The budget so logs such a call up to one
    /// linger before it goes (at most 4 × `delivery.linger_ms`, against a 60 s window); the margin
    /// between `genesys.rate_per_minute` and Genesys's own limit absorbs that.
    async fn run_lane(self: Arc<Self>, cid: ConversationId) {
        loop {
            let Some((earliest, verifies, lingered)) = self.pending_needs(&cid) else {
                if self.end_if_idle(&cid) {
                    return;
                }
                continue;
            };
            let linger = if lingered {
                Duration::ZERO
            } else {
                self.settings
                    .linger(self.updater.genesys().budget_pressure())
            };
            // A write to a mirrored conversation is expected to show by an event, not a read.
            let calls = 1 + u32::from(verifies && self.mirrored(&cid).is_none());
            match self
                .updater
                .genesys()
                .reserve_calls(calls, slot_wait(earliest))
                .await
            {
                Ok(slots) => {
                    tokio::time::sleep_until(slots[0].max(Instant::now() + linger)).await;
                    // A round is a span of the first waiting update's trace, linked to every
                    // update it carries (those join as they are written).
                    let span = tracing::info_span!(
                        target: crate::trace::TRACE_TARGET,
                        "lane round",
                        otel.name = "lane round",
                        updates = tracing::field::Empty,
                        verified_by = tracing::field::Empty,
                    );
                    let first = self
                        .lock_lanes()
                        .get(&cid)
                        .and_then(|pending| pending.first().map(|e| e.trace.clone()));
                    crate::trace::adopt(&span, first.unwrap_or_default());
                    let round = self.round(cid, slots.into()).instrument(span);
                    if !round.await {
                        return;
                    }
                }
                Err(refused) => {
                    for entry in self.take_pending(&cid) {
                        entry.fail(UpdateError::Upstream(refused.clone()));
                    }
                }
            }
        }
    }

    /// The earliest deadline among `cid`'s pending updates, whether any of them verifies, and
    /// whether every one already lingered with its request.
    fn pending_needs(&self, cid: &ConversationId) -> Option<(Instant, bool, bool)> {
        let lanes = self.lock_lanes();
        let pending = lanes.get(cid)?;
        let earliest = pending.iter().map(|e| e.deadline).min()?;
        Some((
            earliest,
            pending.iter().any(|e| e.verify),
            pending.iter().all(|e| e.lingered),
        ))
    }

    fn take_pending(&self, cid: &ConversationId) -> Vec<Entry> {
        self.lock_lanes()
            .get_mut(cid)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// One round: PATCH what is pending, read back until every waiter is answered. `false` when the
    /// lane ended (nothing was pending).
    async fn round(&self, cid: ConversationId, mut prepaid: VecDeque<Instant>) -> bool {
        let mut share = CallShare::default();
        let mut written = Written::new();
        let mut waiters: Vec<Waiter> = Vec::new();
        let verify = self.updater.verify_settings().clone();
        let mut delay = self.visibility.first_read();
        // The last PATCH of the round, and whether a read followed it yet.
        let mut patched_at = Instant::now();
        let mut first_read = true;
        let mut last_read: Option<Arc<Conversation>> = None;
        if self.end_if_idle(&cid) {
            return false;
        }
        // Watched before any PATCH is sent, so an event that comes before the PATCH's own answer
        // is not missed.
        let mut watch = self.watch(&cid);
        let mut confirm_until = Instant::now();
        loop {
            // Every pending PATCH goes before the shared read.
            let added = self
                .patch_pending(cid, &mut share, &mut written, &mut waiters, &mut prepaid)
                .await;
            if added > 0 {
                delay = self.visibility.first_read();
                patched_at = Instant::now();
                first_read = true;
                if let (Some(_), Some((_, confirm))) = (&watch, &self.mirror) {
                    confirm_until = patched_at + *confirm;
                }
            }
            let now = Instant::now();
            let (expired, live): (Vec<_>, Vec<_>) =
                waiters.drain(..).partition(|w| w.give_up <= now);
            waiters = live;
            for w in expired {
                self.answer_unverified(cid, w, last_read.as_deref(), &share);
            }
            if waiters.is_empty() {
                // Updates that came during the reads start the next round, after the linger.
                return true;
            }
            let until = waiters.iter().map(|w| w.give_up).min().unwrap_or(now);
            if let Some(events) = watch.as_mut().filter(|_| now < confirm_until) {
                tokio::select! {
                    pushed = events.recv() => match pushed {
                        Some(pushed) => {
                            tracing::Span::current().record("verified_by", "event");
                            waiters = self.answer_pushed(cid, waiters, &pushed, &written, &share);
                            if waiters.is_empty() {
                                return true;
                            }
                        }
                        None => watch = None,
                    },
                    _ = tokio::time::sleep_until(confirm_until.min(until)) => {
                        if Instant::now() >= confirm_until {
                            // No event showed the writes in time: a read decides, at once.
                            delay = Duration::ZERO;
                        }
                    }
                }
                continue;
            }
            // Genesys answers the PATCH 202 and applies it asynchronously: a read before it shows
            // the write is a call out of the token's budget spent for nothing.
            tokio::time::sleep(delay.min(until.saturating_duration_since(now))).await;
            let read_at = Instant::now();
            if read_at >= until {
                continue;
            }
            let mut cx = CallContext::prepaid(until, std::mem::take(&mut prepaid));
            let read = tokio::time::timeout(
                until.saturating_duration_since(now),
                self.updater
                    .read(&mut cx, &cid)
                    .instrument(tracing::info_span!(
                        target: crate::trace::TRACE_TARGET,
                        "verification",
                        otel.name = "verification",
                        verification.by = "read",
                    )),
            )
            .await;
            share.spent(&cx);
            match read {
                Ok(Ok(conversation)) => {
                    tracing::Span::current().record("verified_by", "read");
                    let conversation = Arc::new(conversation);
                    self.remember(cid, &conversation).await;
                    let seen = |p: &str| Some(attributes_of(Some(&conversation), p));
                    waiters =
                        self.answer_seen(cid, waiters, &seen, Confirmation::Read, &written, &share);
                    if waiters.is_empty() {
                        self.visibility.seen(read_at - patched_at, first_read);
                    }
                    last_read = Some(conversation);
                }
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "read-back failed; the writes are unverified so far")
                }
                Err(_) => {}
            }
            if waiters.is_empty() {
                return true;
            }
            first_read = false;
            delay = verify.next_poll(delay);
        }
    }

    /// PATCHes every pending entry, merged per participant; returns how many entries now wait for
    /// a read.
    async fn patch_pending(
        &self,
        cid: ConversationId,
        share: &mut CallShare,
        written: &mut Written,
        waiters: &mut Vec<Waiter>,
        prepaid: &mut VecDeque<Instant>,
    ) -> usize {
        let Some((earliest, ..)) = self.pending_needs(&cid) else {
            return 0;
        };
        // The slot is taken before the batch, so whatever comes while it is awaited joins the batch.
        let slot = match prepaid.pop_front() {
            Some(slot) => Ok(vec![slot]),
            None => {
                self.updater
                    .genesys()
                    .reserve_calls(1, slot_wait(earliest))
                    .await
            }
        };
        if let Ok(slots) = &slot {
            tokio::time::sleep_until(slots[0]).await;
        }
        let pending = self.take_pending(&cid);
        match slot {
            Ok(slots) => {
                self.write_batch(cid, pending, Some(slots[0]), share, written, waiters)
                    .await
            }
            Err(refused) => {
                for entry in pending {
                    entry.fail(UpdateError::Upstream(refused.clone()));
                }
                0
            }
        }
    }

    /// Merges `batch` per participant and PATCHes each group; returns how many entries now wait for
    /// a read. The first PATCH spends `slot` when there is one.
    async fn write_batch(
        &self,
        cid: ConversationId,
        batch: Vec<Entry>,
        mut slot: Option<Instant>,
        share: &mut CallShare,
        written: &mut Written,
        waiters: &mut Vec<Waiter>,
    ) -> usize {
        share.updates += batch.len() as u32;
        let round = tracing::Span::current();
        crate::trace::link(&round, batch.iter().map(|e| e.trace.clone()));
        round.record("updates", share.updates);
        let groups = merge(batch, self.max_bytes);
        let mut added = 0;
        for group in groups {
            let deadline = group
                .entries
                .iter()
                .map(|e| e.deadline)
                .min()
                .unwrap_or_else(Instant::now);
            let mut cx = CallContext::prepaid(deadline, slot.take());
            let sent = Instant::now();
            let result = self
                .updater
                .write(&mut cx, &cid, &group.participant, &group.attributes)
                .await;
            share.spent(&cx);
            if group.entries.len() > 1 {
                metrics::counter!(COALESCED).increment(group.entries.len() as u64 - 1);
            }
            match result {
                Ok(()) => {
                    for (k, v) in group.attributes.iter() {
                        written.insert((group.participant.clone(), k.clone()), v.clone());
                    }
                    let give_up_after = self.updater.verify_settings().timeout();
                    for entry in group.entries {
                        if entry.verify {
                            let give_up = (Instant::now() + give_up_after).min(entry.deadline);
                            waiters.push(Waiter {
                                entry,
                                sent,
                                give_up,
                            });
                            added += 1;
                        } else {
                            let written = entry.attributes.as_map().clone();
                            let seen = Seen {
                                verified: false,
                                by: None,
                                attributes: written,
                                mismatches: Vec::new(),
                            };
                            entry.answer(cid, seen, share);
                        }
                    }
                }
                Err(err) if err.refused_target() => {
                    // What was read of the conversation may be stale now: read afresh.
                    self.refind(cid, group.entries, err).await;
                }
                Err(err) => {
                    for entry in group.entries {
                        entry.fail(err.clone());
                    }
                }
            }
        }
        added
    }

    /// The conversation's events from now on, while the mirror vouches for it.
    fn watch(&self, cid: &ConversationId) -> Option<Watch> {
        self.mirrored(cid)?;
        self.mirror
            .as_ref()
            .map(|(mirror, _)| mirror.watch(&cid.to_string()))
    }

    /// Answers every waiter whose write an event received after its PATCH shows; returns the others.
    fn answer_pushed(
        &self,
        cid: ConversationId,
        waiters: Vec<Waiter>,
        pushed: &Pushed,
        written: &Written,
        share: &CallShare,
    ) -> Vec<Waiter> {
        let (eligible, mut left): (Vec<_>, Vec<_>) =
            waiters.into_iter().partition(|w| w.sent <= pushed.received);
        let answered = match &pushed.evidence {
            Evidence::Snapshot(conversation) => {
                let seen = |p: &str| conversation.participant(p).map(|p| p.attributes.clone());
                self.answer_seen(
                    cid,
                    eligible,
                    &seen,
                    Confirmation::QueueEvent,
                    written,
                    share,
                )
            }
            Evidence::Attributes {
                participant,
                attributes,
            } => {
                // The event names the keys it changed, at least; the mirror's snapshot has the
                // rest, merged with them.
                let held = self.mirrored(&cid);
                let seen = |p: &str| {
                    (p.eq_ignore_ascii_case(participant)).then(|| {
                        let mut all = attributes_of(held.as_deref(), p);
                        all.extend(attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
                        all
                    })
                };
                self.answer_seen(
                    cid,
                    eligible,
                    &seen,
                    Confirmation::DetailEvent,
                    written,
                    share,
                )
            }
        };
        left.extend(answered);
        left
    }

    /// Answers every waiter whose own keys `seen` shows; returns the others. `seen` gives a
    /// participant's attributes, or `None` when the evidence says nothing of that participant.
    fn answer_seen(
        &self,
        cid: ConversationId,
        waiters: Vec<Waiter>,
        seen: &dyn Fn(&str) -> Option<BTreeMap<String, String>>,
        by: Confirmation,
        written: &Written,
        share: &CallShare,
    ) -> Vec<Waiter> {
        let mut left = Vec::new();
        for w in waiters {
            let Some(attributes) = seen(&w.entry.participant) else {
                left.push(w);
                continue;
            };
            let (own, overwritten) = split_own(&w.entry, written);
            if !compare(&own, &attributes).is_empty() {
                left.push(w);
                continue;
            }
            let mismatches = compare(&overwritten, &attributes);
            let verified = mismatches.is_empty();
            metrics::counter!(crate::metrics::VERIFICATIONS, "outcome" => "verified").increment(1);
            if let Some((mirror, _)) = &self.mirror {
                if by != Confirmation::Read || w.entry.from_mirror || self.mirrored(&cid).is_some()
                {
                    mirror.confirmed_by(by);
                }
                self.served("verification", by != Confirmation::Read);
            }
            let seen = Seen {
                verified,
                by: Some(by),
                attributes,
                mismatches,
            };
            w.entry.answer(cid, seen, share);
        }
        left
    }

    /// Answers a waiter whose keys did not all show in time, with the latest it saw.
    fn answer_unverified(
        &self,
        cid: ConversationId,
        w: Waiter,
        last_read: Option<&Conversation>,
        share: &CallShare,
    ) {
        metrics::counter!(crate::metrics::VERIFICATIONS, "outcome" => "unverified").increment(1);
        tracing::warn!(
            conversation_id = %cid,
            participant_id = %w.entry.participant,
            "the write did not read back within verify.timeout_ms"
        );
        let attributes = attributes_of(last_read, &w.entry.participant);
        let mismatches = compare(&w.entry.attributes, &attributes);
        let seen = Seen {
            verified: false,
            by: None,
            attributes,
            mismatches,
        };
        w.entry.answer(cid, seen, share);
    }
}

/// A participant's attributes on a read of the conversation; none when there is no read or no such
/// participant.
fn attributes_of(
    conversation: Option<&Conversation>,
    participant: &str,
) -> BTreeMap<String, String> {
    conversation
        .and_then(|c| c.participant(participant))
        .map(|p| p.attributes.clone())
        .unwrap_or_default()
}

/// The keys of `entry` that its write still stands for, and those a later update overwrote.
fn split_own(entry: &Entry, written: &Written) -> (AttributeMap, AttributeMap) {
    entry.attributes.partition(|k, v| {
        written
            .get(&(entry.participant.clone(), k.to_string()))
            .is_none_or(|latest| latest == v)
    })
}

/// The value each (participant, key) was last written with in this round.
type Written = HashMap<(String, String), String>;

/// One PATCH: a participant's merged attributes and the entries they answer.
struct Group {
    participant: String,
    attributes: AttributeMap,
    entries: Vec<Entry>,
}

/// Groups `batch` by participant in acceptance order, later keys winning; a group that would grow
/// past `max_bytes` is closed and a new one started for the same participant.
fn merge(batch: Vec<Entry>, max_bytes: usize) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut open: HashMap<String, usize> = HashMap::new();
    for entry in batch {
        let merged = open
            .get(&entry.participant)
            .map(|&i| (i, groups[i].attributes.merged(&entry.attributes)))
            .filter(|(_, merged)| merged.byte_len() <= max_bytes);
        if let Some((i, merged)) = merged {
            groups[i].attributes = merged;
            groups[i].entries.push(entry);
        } else {
            open.insert(entry.participant.clone(), groups.len());
            groups.push(Group {
                participant: entry.participant.clone(),
                attributes: entry.attributes.clone(),
                entries: vec![entry],
            });
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_read_waits_as_long_as_genesys_lately_took_up_to_the_poll_maximum() {
        let v = Visibility::new(500);
        assert_eq!(
            v.first_read(),
            Duration::ZERO,
            "at once, until a read misses"
        );
        // Seen on a later read, at 300 ms: the next round waits that long.
        v.seen(Duration::from_millis(300), false);
        assert_eq!(v.first_read(), Duration::from_millis(300));
        // Seen on the first read: a tenth shorter next time.
        v.seen(Duration::from_millis(300), true);
        assert_eq!(v.first_read(), Duration::from_millis(270));
        v.seen(Duration::from_secs(9), false);
        assert_eq!(v.first_read(), Duration::from_millis(500));
        for _ in 0..100 {
            v.seen(Duration::ZERO, true);
        }
        assert_eq!(v.first_read(), Duration::ZERO, "back to at once");
    }

    /// An entry for `participant` writing `attributes`, with nobody waiting for its answer.
    fn entry(participant: &str, attributes: &[(&str, &str)]) -> Entry {
        let object = attributes
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        Entry {
            participant: participant.into(),
            found_in_reused: None,
            from_mirror: false,
            attributes: AttributeMap::from_json(&object).unwrap(),
            verify: true,
            deadline: Instant::now(),
            lingered: false,
            reply: oneshot::channel().0,
            trace: opentelemetry::Context::new(),
        }
    }

    fn pairs(map: &AttributeMap) -> Vec<(String, String)> {
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    #[test]
    fn merging_groups_a_batch_by_participant_in_order_and_the_later_key_wins() {
        let batch = vec![
            entry("a", &[("k", "1"), ("x", "a")]),
            entry("b", &[("k", "b")]),
            entry("a", &[("k", "2")]),
        ];
        let groups = merge(batch, 2048);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].participant, "a");
        assert_eq!(
            pairs(&groups[0].attributes),
            [("k".into(), "2".into()), ("x".into(), "a".into())]
        );
        assert_eq!(groups[0].entries.len(), 2);
        assert_eq!(groups[1].participant, "b");
    }

    #[test]
    fn a_group_that_would_outgrow_the_limit_is_closed_and_a_new_one_started() {
        let big = "v".repeat(30);
        let batch = vec![
            entry("a", &[("one", &big)]),
            entry("a", &[("two", &big)]),
            entry("a", &[("one", "short")]),
        ];
        // 33 bytes each: two do not fit in 45, and the third (8 bytes) fits with the second.
        let groups = merge(batch, 45);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].entries.len(), 1);
        assert_eq!(groups[1].entries.len(), 2);
        assert!(groups.iter().all(|g| g.attributes.byte_len() <= 45));
    }

    #[test]
    fn an_entry_stands_for_its_keys_no_later_write_changed() {
        let mine = entry("a", &[("k", "1"), ("x", "a"), ("y", "same")]);
        let written: Written = [
            (("a".to_string(), "k".to_string()), "2".to_string()),
            (("a".to_string(), "y".to_string()), "same".to_string()),
            (("b".to_string(), "x".to_string()), "other".to_string()),
        ]
        .into();
        let (own, overwritten) = split_own(&mine, &written);
        assert_eq!(
            pairs(&own),
            [("x".into(), "a".into()), ("y".into(), "same".into())]
        );
        assert_eq!(pairs(&overwritten), [("k".into(), "1".into())]);
    }

    fn batch() -> impl proptest::strategy::Strategy<Value = Vec<(u8, Vec<(u8, u8)>)>> {
        proptest::collection::vec(
            (0u8..3, proptest::collection::vec((0u8..6, 0u8..4), 1..4)),
            0..12,
        )
    }

    fn entries(raw: &[(u8, Vec<(u8, u8)>)]) -> Vec<Entry> {
        raw.iter()
            .map(|(p, attrs)| {
                let attrs: Vec<(String, String)> = attrs
                    .iter()
                    .map(|(k, v)| (format!("key{k}"), "v".repeat(usize::from(*v) + 1)))
                    .collect();
                let refs: Vec<(&str, &str)> = attrs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                entry(&format!("p{p}"), &refs)
            })
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn merging_keeps_every_entry_once_in_order_within_the_limit_and_later_keys_win(
            raw in batch(),
            max_bytes in 24usize..80,
        ) {
            let batch = entries(&raw);
            let expected: Vec<(String, Vec<(String, String)>)> = batch
                .iter()
                .map(|e| (e.participant.clone(), pairs(&e.attributes)))
                .collect();
            let groups = merge(batch, max_bytes);
            // Every entry once, and each participant's entries in acceptance order.
            let mut seen: Vec<(String, Vec<(String, String)>)> = Vec::new();
            for g in &groups {
                let mut folded: Option<AttributeMap> = None;
                for e in &g.entries {
                    proptest::prop_assert_eq!(&e.participant, &g.participant);
                    folded = Some(match folded {
                        Some(f) => f.merged(&e.attributes),
                        None => e.attributes.clone(),
                    });
                    seen.push((e.participant.clone(), pairs(&e.attributes)));
                }
                proptest::prop_assert_eq!(pairs(&folded.unwrap()), pairs(&g.attributes));
                proptest::prop_assert!(g.attributes.byte_len() <= max_bytes || g.entries.len() == 1);
            }
            proptest::prop_assert_eq!(seen.len(), expected.len());
            for p in 0..3u8 {
                let name = format!("p{p}");
                let of = |list: &[(String, Vec<(String, String)>)]| -> Vec<Vec<(String, String)>> {
                    list.iter().filter(|(q, _)| *q == name).map(|(_, a)| a.clone()).collect()
                };
                proptest::prop_assert_eq!(of(&seen), of(&expected));
            }
        }

        #[test]
        fn an_entrys_keys_are_split_into_its_own_and_the_overwritten_and_nothing_else(
            raw in batch(),
        ) {
            let batch = entries(&raw);
            let mut written = Written::new();
            for e in &batch {
                for (k, v) in e.attributes.iter() {
                    written.insert((e.participant.clone(), k.clone()), v.clone());
                }
            }
            for e in &batch {
                let (own, overwritten) = split_own(e, &written);
                proptest::prop_assert_eq!(own.len() + overwritten.len(), e.attributes.len());
                proptest::prop_assert_eq!(pairs(&own.merged(&overwritten)), pairs(&e.attributes));
                for (k, v) in own.iter() {
                    proptest::prop_assert_eq!(written.get(&(e.participant.clone(), k.clone())), Some(v));
                }
                for (k, v) in overwritten.iter() {
                    proptest::prop_assert_ne!(written.get(&(e.participant.clone(), k.clone())), Some(v));
                }
            }
        }
    }
}
