//! The mirror's feed: notification channels subscribed to the queues' conversation topics, their
//! WebSockets kept alive, and every frame applied to the mirror.
//!
//! One task per channel (1,000 topics each), under a supervisor that lists the queues and lists them
//! again now and then. A channel's task:
//! - holds a deployment slot for as long as it holds the channel ([`ChannelSlots`]), so the
//!   deployment never connects more channels than Genesys allows and never evicts a live one;
//! - connects, subscribes, and only then tells the mirror a new unbroken feed began;
//! - sends `{"message":"ping"}` after half of `mirror.liveness_ms` in silence, and treats a socket
//!   silent for all of it as dead: a gap, then a new socket;
//! - on `socket_closing`, opens the new socket before dropping the old one, with no gap;
//! - subscribes again before the channel's `expires`;
//! - on `no_longer_subscribed`, `token_revoked`, a 404, or a socket that will not reopen, makes a
//!   new channel, backing off with jitter up to `mirror.reconnect_max_ms`.
//!
//! Every REST call goes through the client, so through the budget. The channel id is a secret and
//! is never logged.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Mirror;
use crate::config::{MirrorQueues, MirrorSettings, MAX_CHANNEL_TOPICS};
use crate::genesys::notifications::{Channel, Rejections, TopicState};
use crate::genesys::retry::Backoff;
use crate::genesys::stream::{self, Frame, Received, Socket};
use crate::genesys::{CallContext, GenesysClient, GenesysError};
use crate::store::channels::{ChannelSlots, Slot, SLOT_TTL};

/// How long one of the feed's REST calls may wait for the rate budget. The feed is background
/// work: it waits its turn behind updates whose callers are waiting, and a call that cannot be had
/// in this time fails and is tried again under the feed's backoff.
const FEED_CALL_WAIT: Duration = Duration::from_secs(30);

/// The context of one of the feed's calls.
fn feed_call() -> CallContext {
    CallContext::until(Instant::now() + FEED_CALL_WAIT)
}

/// The first backoff step.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Subscribing again this long before a channel's `expires`, or after this long when Genesys
/// gave no `expires`.
const RESUBSCRIBE_MARGIN: Duration = Duration::from_secs(3600);
const RESUBSCRIBE_DEFAULT: Duration = Duration::from_secs(12 * 3600);
/// New detail topics are gathered this long, then subscribed in one call.
const DETAIL_BATCH: Duration = Duration::from_millis(500);
/// Room each channel keeps for detail topics beside its queue topics.
const DETAIL_ROOM: usize = 200;
/// Socket reconnections to one channel before it is given up for a new one.
const RECONNECTS_PER_CHANNEL: u32 = 3;
/// How often a replica without a free slot looks again.
const SLOT_RETRY: Duration = Duration::from_secs(10);

/// Which channel tasks are live now, and the mirror epoch they apply frames in.
#[derive(Debug)]
struct Liveness {
    live: Mutex<Vec<bool>>,
    epoch: AtomicU64,
}

impl Liveness {
    fn new(channels: usize) -> Self {
        Self {
            live: Mutex::new(vec![false; channels]),
            epoch: AtomicU64::new(0),
        }
    }

    /// Channel `i` is live (or not). The mirror is live only while every channel is: a gap on
    /// one is a gap for the whole mirror, since a conversation may move between queues.
    fn report(&self, mirror: &Mirror, i: usize, live: bool) {
        let mut flags = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let was = flags.iter().all(|l| *l);
        flags[i] = live;
        let now = flags.iter().all(|l| *l);
        if !live {
            mirror.gap();
        } else if now && !was {
            self.epoch.store(mirror.begin_epoch(), Ordering::SeqCst);
        }
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }
}

/// The feed: what it follows and what it feeds.
#[derive(Clone)]
pub struct Feed {
    genesys: Arc<GenesysClient>,
    mirror: Mirror,
    settings: MirrorSettings,
    slots: Arc<dyn ChannelSlots>,
}

impl Feed {
    pub fn new(
        genesys: Arc<GenesysClient>,
        mirror: Mirror,
        settings: MirrorSettings,
        slots: Arc<dyn ChannelSlots>,
    ) -> Self {
        Self {
            genesys,
            mirror,
            settings,
            slots,
        }
    }

    /// Runs until `stop`, in the background.
    pub fn spawn(self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move { self.supervise(stop).await })
    }

    /// The queue topics to follow, grouped per channel.
    async fn topic_groups(&self) -> Result<Vec<Vec<String>>, GenesysError> {
        let ids: Vec<String> = match &self.settings.queues {
            MirrorQueues::Listed(ids) => ids.clone(),
            MirrorQueues::All => self
                .genesys
                .routing_queues(&mut feed_call())
                .await?
                .into_iter()
                .map(|q| q.id)
                .collect(),
        };
        let topics: Vec<String> = ids.iter().map(|id| stream::queue_topic(id)).collect();
        Ok(topics
            .chunks(MAX_CHANNEL_TOPICS - DETAIL_ROOM)
            .map(<[String]>::to_vec)
            .collect())
    }

    /// Lists the queues, runs one task per channel, and lists again every `queue_refresh_ms`:
    /// changed topics go to the running channels, which subscribe again.
    async fn supervise(self, stop: CancellationToken) {
        let mut failures = 0;
        let groups = loop {
            match self.topic_groups().await {
                Ok(groups) if !groups.is_empty() => break groups,
                Ok(_) => {
                    tracing::warn!("no routing queue to follow: the mirror stays empty, and lookups use the REST API");
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(error = %e, "could not list the routing queues for the mirror; lookups use the REST API meanwhile");
                    }
                }
            }
            let wait = if failures == 0 {
                Duration::from_millis(self.settings.queue_refresh_ms)
            } else {
                self.backoff(failures)
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        };
        let mut groups = groups;
        let rejections = Arc::new(Mutex::new(Rejections::default()));
        let refresh = Duration::from_millis(self.settings.queue_refresh_ms);
        // Each pass runs one task per group; a listing that needs another number of channels ends
        // the pass (a gap) and starts the next with the new groups.
        loop {
            let pass = stop.child_token();
            let liveness = Arc::new(Liveness::new(groups.len()));
            let mut senders = Vec::new();
            let mut tasks = Vec::new();
            for (i, topics) in groups.iter().enumerate() {
                let (tx, rx) = watch::channel(topics.clone());
                senders.push(tx);
                let runner = Runner {
                    feed: self.clone(),
                    index: i,
                    liveness: liveness.clone(),
                    rejections: rejections.clone(),
                    topics: rx,
                    stop: pass.clone(),
                };
                tasks.push(tokio::spawn(runner.run()));
            }
            let regrouped = loop {
                tokio::select! {
                    _ = stop.cancelled() => break None,
                    _ = tokio::time::sleep(refresh), if self.settings.queues == MirrorQueues::All => {
                        match self.topic_groups().await {
                            Ok(listed) if listed.is_empty() => {}
                            Ok(listed) if listed.len() != senders.len() => break Some(listed),
                            Ok(listed) => {
                                for (tx, topics) in senders.iter().zip(listed) {
                                    tx.send_if_modified(|held| {
                                        let changed = *held != topics;
                                        *held = topics;
                                        changed
                                    });
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "could not list the routing queues again; the mirror keeps its topics"),
                        }
                    }
                }
            };
            pass.cancel();
            for task in tasks {
                let _ = task.await;
            }
            match regrouped {
                Some(listed) => {
                    tracing::info!(
                        channels = listed.len(),
                        were = groups.len(),
                        "the queues need another number of channels; the feed starts over with them"
                    );
                    groups = listed;
                }
                None => return,
            }
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        Backoff {
            base: BACKOFF_BASE,
            max: Duration::from_millis(self.settings.reconnect_max_ms),
        }
        .delay(failures)
    }
}

/// Why a channel's socket loop ended.
enum Ended {
    Stopped,
    /// The channel is gone or will not reopen: make a new one.
    ChannelGone,
    /// The slot went to another replica: give the channel up.
    SlotLost,
    /// Genesys refused every topic: try again after `mirror.queue_refresh_ms`, as permissions may
    /// be granted meanwhile, rather than churn through channels.
    Refused,
}

/// One channel's task.
struct Runner {
    feed: Feed,
    index: usize,
    liveness: Arc<Liveness>,
    rejections: Arc<Mutex<Rejections>>,
    topics: watch::Receiver<Vec<String>>,
    stop: CancellationToken,
}

impl Runner {
    async fn run(mut self) {
        let mut warned = false;
        let mut failures = 0;
        while !self.stop.is_cancelled() {
            let Some(slot) = self.feed.slots.acquire().await else {
                if !warned {
                    tracing::warn!(
                        max_channels = self.feed.settings.max_channels,
                        "no notification channel is free for this replica (mirror.max_channels are held); it serves every update by REST"
                    );
                    warned = true;
                }
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    _ = tokio::time::sleep(SLOT_RETRY) => continue,
                }
            };
            warned = false;
            let ended = self.hold(&slot, &mut failures).await;
            self.feed.slots.release(slot).await;
            self.feed.mirror.set_subscribed(self.index, None);
            match ended {
                Ended::Stopped => return,
                Ended::SlotLost | Ended::ChannelGone | Ended::Refused => {
                    let wait = if matches!(ended, Ended::Refused) {
                        Duration::from_millis(self.feed.settings.queue_refresh_ms)
                    } else {
                        self.feed.backoff(failures.max(1))
                    };
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Holds channels while `slot` is this replica's: a new channel each time one is gone.
    async fn hold(&mut self, slot: &Slot, failures: &mut u32) -> Ended {
        loop {
            let mut channel = match self.feed.genesys.create_channel(&mut feed_call()).await {
                Ok(channel) => channel,
                Err(e) => {
                    *failures += 1;
                    tracing::warn!(error = %e, "could not create a notification channel; the mirror waits");
                    let wait = self.feed.backoff(*failures);
                    if !self.wait_keeping(slot, wait).await {
                        return self.stopped_or_lost();
                    }
                    continue;
                }
            };
            match self.serve(&mut channel, slot, failures).await {
                Ended::ChannelGone => {
                    tracing::info!("the notification channel is gone; making a new one");
                    let wait = self.feed.backoff(*failures);
                    if !self.wait_keeping(slot, wait).await {
                        return self.stopped_or_lost();
                    }
                }
                other => return other,
            }
        }
    }

    fn stopped_or_lost(&self) -> Ended {
        if self.stop.is_cancelled() {
            Ended::Stopped
        } else {
            Ended::SlotLost
        }
    }

    /// Sleeps `wait`, renewing the slot; `false` when stopped or the slot was lost.
    async fn wait_keeping(&self, slot: &Slot, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        loop {
            let step = until
                .saturating_duration_since(Instant::now())
                .min(SLOT_TTL / 3);
            if step.is_zero() {
                return true;
            }
            tokio::select! {
                _ = self.stop.cancelled() => return false,
                _ = tokio::time::sleep(step) => {}
            }
            if !self.feed.slots.renew(slot).await {
                return false;
            }
        }
    }

    /// Subscribes `channel` to the queue topics (and the detail topics held), reporting refusals.
    /// Returns how many topics were permitted and when to subscribe again.
    async fn subscribe(
        &self,
        channel: &mut Channel,
        detail: &HashSet<String>,
        again: bool,
    ) -> Result<(usize, Instant), GenesysError> {
        let mut topics = self.topics.borrow().clone();
        topics.extend(detail.iter().cloned());
        let states = self
            .feed
            .genesys
            .subscribe(&mut feed_call(), channel, &topics)
            .await?;
        let permitted = self.report(&states);
        if again {
            // The subscription extended the channel's life; the listing says until when.
            match self
                .feed
                .genesys
                .channel_expires(&mut feed_call(), channel)
                .await
            {
                Ok(expires) => channel.expires = expires.or(channel.expires.take()),
                Err(e) => tracing::warn!(error = %e, "could not read the channel's new expiry"),
            }
        }
        let again = resubscribe_in(channel.expires.as_deref());
        self.feed.mirror.set_subscribed(self.index, Some(permitted));
        Ok((permitted, Instant::now() + again))
    }

    fn report(&self, states: &[TopicState]) -> usize {
        self.rejections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .report(states);
        states.iter().filter(|t| !t.is_rejected()).count()
    }

    /// One channel: connect, subscribe, read frames until it is gone or the task stops.
    async fn serve(&mut self, channel: &mut Channel, slot: &Slot, failures: &mut u32) -> Ended {
        let max_frame = self.feed.settings.max_frame_bytes;
        let mut socket = match Socket::connect(channel, max_frame).await {
            Ok(socket) => socket,
            Err(e) => {
                *failures += 1;
                tracing::warn!(error = %e, "could not open the notification channel's socket");
                return Ended::ChannelGone;
            }
        };
        let mut detail: HashSet<String> = HashSet::new();
        let (mut permitted, mut resubscribe_at) =
            match self.subscribe(channel, &detail, false).await {
                Ok(subscribed) => subscribed,
                Err(e) => {
                    *failures += 1;
                    tracing::warn!(error = %e, "could not subscribe the notification channel");
                    socket.close().await;
                    return Ended::ChannelGone;
                }
            };
        if permitted == 0 {
            // Every topic refused: the socket would stay silent. The refusals were logged.
            socket.close().await;
            return Ended::Refused;
        }
        *failures = 0;
        self.liveness.report(&self.feed.mirror, self.index, true);
        let liveness = self.feed.settings.liveness();
        let mut last_frame = Instant::now();
        let mut pinged = false;
        let mut reconnects = 0;
        let mut renew = tokio::time::interval_at(Instant::now() + SLOT_TTL / 3, SLOT_TTL / 3);
        let mut detail_tick = tokio::time::interval(DETAIL_BATCH);
        loop {
            let silence_check = last_frame + if pinged { liveness } else { liveness / 2 };
            let received = tokio::select! {
                _ = self.stop.cancelled() => {
                    self.liveness.report(&self.feed.mirror, self.index, false);
                    socket.close().await;
                    return Ended::Stopped;
                }
                received = socket.recv() => received,
                _ = tokio::time::sleep_until(silence_check) => {
                    if !pinged {
                        pinged = true;
                        if socket.ping().await {
                            continue;
                        }
                    }
                    tracing::warn!(silent_ms = last_frame.elapsed().as_millis() as u64, "the notification socket went silent; replacing it");
                    Received::Closed
                }
                _ = tokio::time::sleep_until(resubscribe_at) => {
                    match self.subscribe(channel, &detail, true).await {
                        Ok((p, at)) => { permitted = p; resubscribe_at = at; }
                        Err(GenesysError::Rejected { status: 404, .. }) => {
                            self.liveness.report(&self.feed.mirror, self.index, false);
                            socket.close().await;
                            return Ended::ChannelGone;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not subscribe the notification channel again; trying again shortly");
                            resubscribe_at = Instant::now() + self.feed.backoff(3);
                        }
                    }
                    continue;
                }
                changed = self.topics.changed() => {
                    if changed.is_ok() {
                        resubscribe_at = Instant::now();
                    }
                    continue;
                }
                _ = renew.tick() => {
                    if !self.feed.slots.renew(slot).await {
                        tracing::warn!("this replica lost its notification channel slot; closing the channel's socket");
                        self.liveness.report(&self.feed.mirror, self.index, false);
                        socket.close().await;
                        return Ended::SlotLost;
                    }
                    continue;
                }
                _ = detail_tick.tick(), if self.index == 0 && self.feed.mirror.wants_detail_topics() => {
                    self.add_detail_topics(channel, &mut detail, permitted).await;
                    continue;
                }
            };
            match received {
                Received::Text(text) => {
                    last_frame = Instant::now();
                    pinged = false;
                    // A socket that carries frames again has recovered: its reconnections start over.
                    reconnects = 0;
                    self.feed.mirror.frame_seen();
                    match Frame::parse(&text) {
                        Some(Frame::SocketClosing) => {
                            // Make before break: Genesys drops the old socket once the new one is open.
                            match Socket::connect(channel, max_frame).await {
                                Ok(new) => {
                                    let old = std::mem::replace(&mut socket, new);
                                    old.close().await;
                                    tracing::info!("the notification socket closes for maintenance; moved to a new one with no gap");
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "could not open a new socket before the old one closes")
                                }
                            }
                        }
                        Some(Frame::ChannelGone { reason }) => {
                            tracing::warn!(reason, "Genesys ended the notification channel");
                            self.liveness.report(&self.feed.mirror, self.index, false);
                            socket.close().await;
                            return Ended::ChannelGone;
                        }
                        Some(Frame::Conversation(c)) => {
                            self.feed.mirror.apply(c, self.liveness.epoch());
                        }
                        Some(Frame::Attributes {
                            conversation_id,
                            participant_id,
                            attributes,
                        }) => self.feed.mirror.apply_attributes(
                            &conversation_id,
                            &participant_id,
                            attributes,
                            self.liveness.epoch(),
                        ),
                        Some(Frame::Alive) | Some(Frame::Other(_)) | None => {}
                    }
                }
                Received::Control => {
                    last_frame = Instant::now();
                    pinged = false;
                }
                Received::Closed => {
                    // A gap: whatever happened until the new socket is open is lost.
                    self.liveness.report(&self.feed.mirror, self.index, false);
                    loop {
                        reconnects += 1;
                        if reconnects > RECONNECTS_PER_CHANNEL {
                            return Ended::ChannelGone;
                        }
                        if !matches!(
                            self.feed
                                .genesys
                                .channel_exists(&mut feed_call(), channel)
                                .await,
                            Ok(true) | Err(GenesysError::RateLimited { .. })
                        ) {
                            return Ended::ChannelGone;
                        }
                        match Socket::connect(channel, max_frame).await {
                            Ok(new) => {
                                socket = new;
                                break;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "could not reopen the notification socket");
                                if !self.wait_keeping(slot, self.feed.backoff(reconnects)).await {
                                    return self.stopped_or_lost();
                                }
                            }
                        }
                    }
                    last_frame = Instant::now();
                    pinged = false;
                    self.liveness.report(&self.feed.mirror, self.index, true);
                }
            }
        }
    }

    /// Subscribes, in one call, the detail topics of conversations held that have none yet; when
    /// ended conversations' topics would crowd the channel, replaces the whole list instead.
    async fn add_detail_topics(
        &self,
        channel: &mut Channel,
        detail: &mut HashSet<String>,
        permitted: usize,
    ) {
        let held: HashSet<String> = self
            .feed
            .mirror
            .trusted_ids()
            .iter()
            .map(|id| stream::attributes_topic(id))
            .collect();
        let new: Vec<String> = held.difference(detail).cloned().collect();
        if new.is_empty() {
            return;
        }
        let queue_topics = self.topics.borrow().len();
        if queue_topics + detail.len() + new.len() > MAX_CHANNEL_TOPICS {
            // Keep only the held conversations' topics, as many as the channel has room for.
            let mut keep: HashSet<String> = held
                .into_iter()
                .take(MAX_CHANNEL_TOPICS.saturating_sub(queue_topics))
                .collect();
            std::mem::swap(detail, &mut keep);
            if let Err(e) = self.subscribe(channel, detail, true).await {
                tracing::warn!(error = %e, "could not subscribe the detail topics");
            }
            return;
        }
        match self
            .feed
            .genesys
            .add_subscriptions(&mut feed_call(), channel, &new)
            .await
        {
            Ok(states) => {
                let added = self.report(&states);
                detail.extend(new);
                self.feed
                    .mirror
                    .set_subscribed(self.index, Some(permitted + added));
            }
            Err(e) => tracing::warn!(error = %e, "could not subscribe the detail topics"),
        }
    }
}

/// How long until a channel that `expires` (RFC 3339) should be subscribed again.
fn resubscribe_in(expires: Option<&str>) -> Duration {
    let Some(at) = expires.and_then(|e| {
        time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339).ok()
    }) else {
        return RESUBSCRIBE_DEFAULT;
    };
    let left = at - time::OffsetDateTime::now_utc();
    let left = Duration::try_from(left).unwrap_or_default();
    // An hour early, or at half the time left when less than two hours are.
    if left > RESUBSCRIBE_MARGIN * 2 {
        left - RESUBSCRIBE_MARGIN
    } else {
        (left / 2).max(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_(d: time::Duration) -> String {
        (time::OffsetDateTime::now_utc() + d)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    }

    #[test]
    fn a_channel_is_subscribed_again_well_before_it_expires() {
        let day = resubscribe_in(Some(&in_(time::Duration::hours(24))));
        assert!(day > Duration::from_secs(22 * 3600) && day < Duration::from_secs(23 * 3600));
        let soon = resubscribe_in(Some(&in_(time::Duration::minutes(10))));
        assert!(soon <= Duration::from_secs(300) && soon > Duration::from_secs(200));
        assert_eq!(resubscribe_in(Some("not a time")), RESUBSCRIBE_DEFAULT);
        assert_eq!(resubscribe_in(None), RESUBSCRIBE_DEFAULT);
        assert_eq!(
            resubscribe_in(Some(&in_(time::Duration::hours(-1)))),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn the_mirror_is_live_only_while_every_channel_is() {
        let mirror = Mirror::new(10);
        let liveness = Liveness::new(2);
        liveness.report(&mirror, 0, true);
        assert!(!mirror.is_live());
        liveness.report(&mirror, 1, true);
        assert!(mirror.is_live());
        let epoch = liveness.epoch();
        liveness.report(&mirror, 1, false);
        assert!(!mirror.is_live());
        liveness.report(&mirror, 1, true);
        assert!(mirror.is_live());
        assert!(liveness.epoch() > epoch, "a new epoch after the gap");
    }
}
