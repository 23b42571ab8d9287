//! The live mirror: the newest snapshot of each conversation the notifications feed has shown,
//! indexed by what lookups search (the caller's number, the agent's user id, the external
//! contact), bounded in memory, and honest about what it cannot vouch for.
//!
//! Genesys promises no delivery over the WebSocket: events sent while no socket was open are lost.
//! So every snapshot carries the feed's epoch, the count of unbroken feeds so far. A snapshot seen
//! in the current epoch is trusted; after a gap (a new epoch), each earlier one is only a hint until
//! its conversation's next event, and a call that started in the gap is not in the mirror at all. A
//! caller treats a hint, or a miss, as a reason to ask the REST API.

pub mod feed;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::domain::lookup::{LookupKey, PhoneNumber};
use crate::genesys::model::{Conversation, Participant};
pub use crate::service::Confirmation;

/// What an event showed of a conversation, for a write waiting to be seen.
#[derive(Debug, Clone)]
pub enum Evidence {
    /// A queue event: the whole conversation.
    Snapshot(Arc<Conversation>),
    /// An attributes detail event: one participant's attributes as it names them.
    Attributes {
        participant: String,
        attributes: BTreeMap<String, String>,
    },
}

/// An event about one conversation, and when it was received.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub received: Instant,
    pub evidence: Evidence,
}

/// Events of one conversation, from the moment [`Mirror::watch`] was called until this is dropped.
pub struct Watch {
    mirror: Mirror,
    conversation: String,
    id: u64,
    events: mpsc::UnboundedReceiver<Pushed>,
}

impl Watch {
    pub async fn recv(&mut self) -> Option<Pushed> {
        self.events.recv().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut inner = self.mirror.lock();
        if let Some(list) = inner.watchers.get_mut(&self.conversation) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                inner.watchers.remove(&self.conversation);
            }
        }
    }
}

/// The feed's standing, for metrics and operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Whether a socket is open and subscribed now, with no gap since it connected.
    pub live: bool,
    pub channels: usize,
    pub topics: usize,
    pub conversations: usize,
    pub gaps: u64,
    /// Whether queue events have lately shown writes (when not, detail topics are subscribed).
    pub queue_events_confirm: bool,
}

/// How far the mirror vouches for a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Seen on the current unbroken feed: what Genesys holds now, as far as any event told.
    Trusted,
    /// From before the last gap: the conversation may have changed or ended since.
    Hint,
}

/// A snapshot and where it stands.
#[derive(Debug, Clone)]
pub struct Seen {
    pub conversation: Arc<Conversation>,
    pub trust: Trust,
}

/// The keys one conversation is indexed under.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Keys {
    anis: Vec<PhoneNumber>,
    users: Vec<String>,
    contacts: Vec<String>,
}

/// A number or an external contact names the caller's side, never the agent's (as lookups do).
fn callers_side(p: &Participant) -> bool {
    matches!(p.purpose.as_deref(), Some("customer" | "external"))
}

impl Keys {
    fn of(c: &Conversation) -> Self {
        let mut keys = Keys::default();
        for p in &c.participants {
            if let Some(user) = p.field("userId") {
                keys.users.push(user.to_ascii_lowercase());
            }
            if callers_side(p) {
                // A queue event names a call's ANI `address`; a conversation read names it `ani`.
                if let Some(n) = p
                    .field("ani")
                    .or_else(|| p.field("address"))
                    .and_then(|a| a.parse::<PhoneNumber>().ok())
                {
                    keys.anis.push(n);
                }
                if let Some(contact) = p.field("externalContactId") {
                    keys.contacts.push(contact.to_ascii_lowercase());
                }
            }
        }
        keys
    }
}

#[derive(Debug)]
struct Entry {
    conversation: Arc<Conversation>,
    epoch: u64,
    keys: Keys,
    /// Its place in `Inner::order`.
    updated: u64,
}

#[derive(Debug, Default)]
struct Inner {
    epoch: u64,
    /// Whether the current epoch's socket is open: during a gap nothing is trusted.
    live: bool,
    gaps: u64,
    watchers: HashMap<String, Vec<(u64, mpsc::UnboundedSender<Pushed>)>>,
    next_watch: u64,
    entries: HashMap<String, Entry>,
    /// Conversation ids by when they were last updated, oldest first, for the memory bound.
    order: BTreeMap<u64, String>,
    updates: u64,
    by_ani: HashMap<PhoneNumber, HashSet<String>>,
    by_user: HashMap<String, HashSet<String>>,
    by_contact: HashMap<String, HashSet<String>>,
}

impl Inner {
    fn remove(&mut self, id: &str) {
        let Some(entry) = self.entries.remove(id) else {
            return;
        };
        for n in &entry.keys.anis {
            drop_id(&mut self.by_ani, n, id);
        }
        for u in &entry.keys.users {
            drop_id(&mut self.by_user, u, id);
        }
        for c in &entry.keys.contacts {
            drop_id(&mut self.by_contact, c, id);
        }
        self.order.remove(&entry.updated);
    }
}

fn add_id<K: std::hash::Hash + Eq + Clone>(
    index: &mut HashMap<K, HashSet<String>>,
    key: &K,
    id: &str,
) {
    index.entry(key.clone()).or_default().insert(id.to_string());
}

fn drop_id<K: std::hash::Hash + Eq>(index: &mut HashMap<K, HashSet<String>>, key: &K, id: &str) {
    if let Some(ids) = index.get_mut(key) {
        ids.remove(id);
        if ids.is_empty() {
            index.remove(key);
        }
    }
}

impl Inner {
    fn notify(&mut self, id: &str, pushed: Pushed) {
        if let Some(list) = self.watchers.get_mut(id) {
            list.retain(|(_, tx)| tx.send(pushed.clone()).is_ok());
        }
    }
}

/// The feed's counters the engine and the feed share without the lock.
#[derive(Debug)]
struct Shared {
    /// Topics subscribed on each channel the feed holds, by the channel task's index.
    channels: Mutex<BTreeMap<usize, usize>>,
    /// Milliseconds since `started` of the last frame; 0 before any.
    last_frame_ms: AtomicU64,
    started: Instant,
    /// Writes in a row to held conversations that no queue event showed.
    misses: AtomicU64,
}

/// Writes in a row a queue event did not show before the feed subscribes detail topics.
const MISSES_BEFORE_DETAIL: u64 = 2;

/// The mirror. Cheap to clone: clones share the snapshots.
#[derive(Debug, Clone)]
pub struct Mirror {
    inner: Arc<Mutex<Inner>>,
    shared: Arc<Shared>,
    capacity: usize,
}

impl Mirror {
    /// A mirror holding at most `capacity` conversations; past it, the least recently updated goes.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::default(),
            shared: Arc::new(Shared {
                channels: Mutex::default(),
                last_frame_ms: AtomicU64::new(0),
                started: Instant::now(),
                misses: AtomicU64::new(0),
            }),
            capacity: capacity.max(1),
        }
    }

    /// A gap begins: a socket was lost, went silent, or its channel went. Nothing is trusted until
    /// a new socket is open and subscribed ([`Mirror::begin_epoch`]).
    pub fn gap(&self) {
        let mut inner = self.lock();
        if inner.live {
            inner.live = false;
            inner.gaps += 1;
            metrics::counter!(crate::metrics::MIRROR_GAPS).increment(1);
        }
    }

    /// Whether the feed is live now.
    pub fn is_live(&self) -> bool {
        self.lock().live
    }

    /// A frame came: the socket is alive.
    pub fn frame_seen(&self) {
        let ms = self.shared.started.elapsed().as_millis() as u64;
        self.shared
            .last_frame_ms
            .store(ms.max(1), Ordering::Relaxed);
    }

    /// How long since the last frame, if any came.
    pub fn since_last_frame(&self) -> Option<std::time::Duration> {
        let ms = self.shared.last_frame_ms.load(Ordering::Relaxed);
        (ms > 0).then(|| {
            self.shared
                .started
                .elapsed()
                .saturating_sub(std::time::Duration::from_millis(ms))
        })
    }

    /// Channel task `index` holds a channel with `topics` permitted, or (`None`) none.
    pub fn set_subscribed(&self, index: usize, topics: Option<usize>) {
        let mut channels = self
            .shared
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match topics {
            Some(n) => channels.insert(index, n),
            None => channels.remove(&index),
        };
    }

    /// What showed a write to a conversation the mirror held. Queue events that stop showing
    /// writes turn detail topics on; one that shows a write again turns them off.
    pub fn confirmed_by(&self, how: Confirmation) {
        metrics::counter!(crate::metrics::MIRROR_CONFIRMATIONS, "source" => how.name())
            .increment(1);
        if how == Confirmation::QueueEvent {
            self.shared.misses.store(0, Ordering::Relaxed);
        } else {
            self.shared.misses.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the feed should subscribe the held conversations' attributes detail topics.
    pub fn wants_detail_topics(&self) -> bool {
        self.shared.misses.load(Ordering::Relaxed) >= MISSES_BEFORE_DETAIL
    }

    /// The ids of the conversations held and trusted now, for detail topics.
    pub fn trusted_ids(&self) -> Vec<String> {
        let inner = self.lock();
        if !inner.live {
            return Vec::new();
        }
        inner
            .entries
            .iter()
            .filter(|(_, e)| e.epoch == inner.epoch)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn status(&self) -> Status {
        let channels = self
            .shared
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let inner = self.lock();
        Status {
            live: inner.live,
            channels: channels.len(),
            topics: channels.values().sum(),
            conversations: inner.entries.len(),
            gaps: inner.gaps,
            queue_events_confirm: !self.wants_detail_topics(),
        }
    }

    /// Events of conversation `id` from now on, until the watch is dropped.
    pub fn watch(&self, id: &str) -> Watch {
        let (tx, events) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        inner.next_watch += 1;
        let watch_id = inner.next_watch;
        let conversation = id.to_ascii_lowercase();
        inner
            .watchers
            .entry(conversation.clone())
            .or_default()
            .push((watch_id, tx));
        Watch {
            mirror: self.clone(),
            conversation,
            id: watch_id,
            events,
        }
    }

    /// A conversation the mirror held proved stale (Genesys refused a write to it): it leaves.
    pub fn forget(&self, id: &str) {
        self.lock().remove(&id.to_ascii_lowercase());
    }

    /// An attributes detail event: shown to the conversation's watchers, and merged into its
    /// snapshot, which it makes no newer in any other way.
    pub fn apply_attributes(
        &self,
        conversation: &str,
        participant: &str,
        attributes: BTreeMap<String, String>,
        epoch: u64,
    ) {
        let mut inner = self.lock();
        if epoch != inner.epoch {
            return;
        }
        let id = conversation.to_ascii_lowercase();
        if let Some(entry) = inner.entries.get_mut(&id) {
            let mut c = (*entry.conversation).clone();
            if let Some(p) = c
                .participants
                .iter_mut()
                .find(|p| p.id.eq_ignore_ascii_case(participant))
            {
                p.attributes
                    .extend(attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
                entry.conversation = Arc::new(c);
            }
        }
        inner.notify(
            &id,
            Pushed {
                received: Instant::now(),
                evidence: Evidence::Attributes {
                    participant: participant.to_string(),
                    attributes,
                },
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new unbroken feed begins (a socket connected after a gap): everything held so far becomes a
    /// hint. Returns the new epoch, which the feed passes with every snapshot it applies.
    pub fn begin_epoch(&self) -> u64 {
        let mut inner = self.lock();
        if inner.live {
            // A new epoch without a gap reported first is still a gap.
            inner.gaps += 1;
            metrics::counter!(crate::metrics::MIRROR_GAPS).increment(1);
        }
        inner.epoch += 1;
        inner.live = true;
        inner.epoch
    }

    /// Applies a snapshot received in `epoch`, the newest winning. An ended conversation leaves. A
    /// snapshot from an epoch that already ended is ignored: its socket was replaced.
    pub fn apply(&self, conversation: Conversation, epoch: u64) {
        let mut inner = self.lock();
        if epoch != inner.epoch {
            return;
        }
        let id = conversation.id.to_ascii_lowercase();
        inner.remove(&id);
        if conversation.is_ended() {
            return;
        }
        let conversation = Arc::new(conversation);
        inner.notify(
            &id,
            Pushed {
                received: Instant::now(),
                evidence: Evidence::Snapshot(conversation.clone()),
            },
        );
        let keys = Keys::of(&conversation);
        for n in &keys.anis {
            add_id(&mut inner.by_ani, n, &id);
        }
        for u in &keys.users {
            add_id(&mut inner.by_user, u, &id);
        }
        for c in &keys.contacts {
            add_id(&mut inner.by_contact, c, &id);
        }
        inner.updates += 1;
        let updated = inner.updates;
        inner.entries.insert(
            id.clone(),
            Entry {
                conversation,
                epoch,
                keys,
                updated,
            },
        );
        inner.order.insert(updated, id);
        while inner.entries.len() > self.capacity {
            let Some(oldest) = inner.order.values().next().cloned() else {
                break;
            };
            inner.remove(&oldest);
        }
    }

    fn seen(inner: &Inner, entry: &Entry) -> Seen {
        Seen {
            conversation: entry.conversation.clone(),
            trust: if inner.live && entry.epoch == inner.epoch {
                Trust::Trusted
            } else {
                Trust::Hint
            },
        }
    }

    /// The snapshot of conversation `id`, if the mirror holds one.
    pub fn get(&self, id: &str) -> Option<Seen> {
        let inner = self.lock();
        inner
            .entries
            .get(&id.to_ascii_lowercase())
            .map(|e| Self::seen(&inner, e))
    }

    /// Every conversation held under `key`, in no particular order. A caller still checks each
    /// for the match it needs (media, a connected participant).
    pub fn find(&self, key: &LookupKey) -> Vec<Seen> {
        let inner = self.lock();
        let ids = match key {
            LookupKey::Ani(n) => inner.by_ani.get(n),
            LookupKey::UserId(u) => inner.by_user.get(&u.to_string()),
            LookupKey::ExternalContactId(c) => inner.by_contact.get(&c.to_string()),
        };
        ids.into_iter()
            .flatten()
            .filter_map(|id| inner.entries.get(id))
            .map(|e| Self::seen(&inner, e))
            .collect()
    }

    /// Conversations held now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const USER: &str = "5b1f7c2e-9d4a-4b8e-a1c3-7e2f0d9b6a41";

    /// A queue event's conversation: the customer's number as `address`, an agent user.
    fn call(n: u32, number: &str, ended: bool) -> Conversation {
        let state = if ended { "disconnected" } else { "connected" };
        serde_json::from_value(json!({
            "id": format!("11111111-0000-4000-8000-{n:012}"),
            "participants": [
                {"id": format!("c-{n}"), "purpose": "customer", "address": number, "attributes": {},
                 "calls": [{"state": state}]},
                {"id": format!("a-{n}"), "purpose": "agent", "userId": USER, "address": "+13175550000",
                 "attributes": {}, "calls": [{"state": state}]}
            ]
        }))
        .unwrap()
    }

    fn ani(n: &str) -> LookupKey {
        LookupKey::Ani(n.parse().unwrap())
    }

    #[test]
    fn a_snapshot_is_found_by_its_callers_number_in_any_form_and_by_its_agent() {
        let mirror = Mirror::new(10);
        let epoch = mirror.begin_epoch();
        mirror.apply(call(1, "tel:+13175550123", false), epoch);
        let found = mirror.find(&ani("+1 317 555 0123"));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].trust, Trust::Trusted);
        assert_eq!(
            mirror.find(&LookupKey::UserId(USER.parse().unwrap())).len(),
            1
        );
        // The agent's own address is not the caller's number.
        assert!(mirror.find(&ani("+13175550000")).is_empty());
    }

    #[test]
    fn the_newest_snapshot_wins_and_an_ended_call_leaves() {
        let mirror = Mirror::new(10);
        let epoch = mirror.begin_epoch();
        mirror.apply(call(1, "+13175550123", false), epoch);
        // The caller's number changed on the newer snapshot: the old index entry goes with it.
        mirror.apply(call(1, "+13175550999", false), epoch);
        assert!(mirror.find(&ani("+13175550123")).is_empty());
        assert_eq!(mirror.find(&ani("+13175550999")).len(), 1);
        mirror.apply(call(1, "+13175550999", true), epoch);
        assert!(mirror.is_empty());
        assert!(mirror.find(&ani("+13175550999")).is_empty());
    }

    #[test]
    fn after_a_gap_what_was_held_is_a_hint_until_its_next_event() {
        let mirror = Mirror::new(10);
        let first = mirror.begin_epoch();
        mirror.apply(call(1, "+13175550123", false), first);
        mirror.apply(call(2, "+13175550124", false), first);
        let second = mirror.begin_epoch();
        assert_eq!(mirror.find(&ani("+13175550123"))[0].trust, Trust::Hint);
        mirror.apply(call(1, "+13175550123", false), second);
        assert_eq!(mirror.find(&ani("+13175550123"))[0].trust, Trust::Trusted);
        assert_eq!(mirror.find(&ani("+13175550124"))[0].trust, Trust::Hint);
        // A late frame from the replaced socket changes nothing.
        mirror.apply(call(2, "+13175550124", true), first);
        assert_eq!(mirror.len(), 2);
    }

    #[test]
    fn during_a_gap_nothing_is_trusted_and_a_watcher_sees_each_event_after_it_began() {
        let mirror = Mirror::new(10);
        let epoch = mirror.begin_epoch();
        mirror.apply(call(1, "+13175550123", false), epoch);
        mirror.gap();
        assert_eq!(mirror.find(&ani("+13175550123"))[0].trust, Trust::Hint);
        assert_eq!(mirror.status().gaps, 1);
        let epoch = mirror.begin_epoch();
        let id = call(1, "+13175550123", false).id;
        let mut watch = mirror.watch(&id);
        mirror.apply(call(1, "+13175550123", false), epoch);
        mirror.apply_attributes(&id, "c-1", [("vip".into(), "true".into())].into(), epoch);
        assert!(matches!(
            watch.events.try_recv().unwrap().evidence,
            Evidence::Snapshot(_)
        ));
        assert!(matches!(
            watch.events.try_recv().unwrap().evidence,
            Evidence::Attributes { participant, .. } if participant == "c-1"
        ));
        // The detail event was merged into the snapshot.
        let held = mirror.get(&id).unwrap();
        assert_eq!(
            held.conversation.participant("c-1").unwrap().attributes["vip"],
            "true"
        );
        drop(watch);
        assert!(mirror.lock().watchers.is_empty());
    }

    #[test]
    fn queue_events_that_stop_showing_writes_turn_detail_topics_on_and_back_off() {
        let mirror = Mirror::new(10);
        assert!(!mirror.wants_detail_topics());
        mirror.confirmed_by(Confirmation::Read);
        assert!(!mirror.wants_detail_topics(), "one miss is not a pattern");
        mirror.confirmed_by(Confirmation::Read);
        assert!(mirror.wants_detail_topics());
        mirror.confirmed_by(Confirmation::QueueEvent);
        assert!(!mirror.wants_detail_topics());
    }

    proptest! {
        #[test]
        fn memory_stays_bounded_and_every_index_entry_points_at_a_held_snapshot(
            events in proptest::collection::vec((0u32..40, 0u32..5, any::<bool>()), 0..300),
            capacity in 1usize..20,
        ) {
            let mirror = Mirror::new(capacity);
            let epoch = mirror.begin_epoch();
            for (n, number, ended) in events {
                mirror.apply(call(n, &format!("+1317555{:04}", number), ended), epoch);
                prop_assert!(mirror.len() <= capacity);
            }
            let inner = mirror.lock();
            prop_assert_eq!(inner.order.len(), inner.entries.len());
            for ids in inner.by_ani.values().chain(inner.by_user.values()) {
                for id in ids {
                    prop_assert!(inner.entries.contains_key(id));
                }
            }
        }
    }
}
