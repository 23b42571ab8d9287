//! Lanes for the conversation's own targets (its secure attributes, each custom-attributes record):
//! one write at a time per key. Writes that come while a lane lingers or writes merge into its
//! next write, and each caller is answered for its own keys, so a burst costs one write and one
//! read. A caller may also be told as soon as its write was accepted, before it is read back: a
//! request's participant write waits for that, not for the verification ([`Gate`]). (Participant
//! attributes have the engine's lanes, which also resolve the participant.)

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Values that merge: later ones win.
pub trait Merge {
    fn merge(&mut self, later: Self);
}

/// The writes one round of a lane makes as one.
pub struct Batch<V, R> {
    pub values: V,
    /// Whether any caller asked for verification.
    pub verify: bool,
    /// The earliest of the callers' deadlines: the merged write answers them all by it.
    pub deadline: Instant,
    callers: Vec<Caller<R>>,
}

/// One write of a batch: its keys, where its answer goes, and who waits for it to be accepted.
struct Caller<R> {
    keys: Vec<String>,
    reply: oneshot::Sender<R>,
    written: Option<oneshot::Sender<()>>,
}

impl<V: Merge, R> Batch<V, R> {
    /// Takes `later`'s values (which win), callers and needs into this batch.
    pub fn absorb(&mut self, later: Self) {
        self.values.merge(later.values);
        self.verify |= later.verify;
        self.deadline = self.deadline.min(later.deadline);
        self.callers.extend(later.callers);
    }

    /// How many writes this batch carries.
    pub fn callers(&self) -> usize {
        self.callers.len()
    }

    /// Tells every caller that waits for it that Genesys accepted the write; the answer follows
    /// once it is read back.
    pub fn written(&mut self) {
        for caller in &mut self.callers {
            if let Some(written) = caller.written.take() {
                // A caller that stopped waiting needs no word.
                let _ = written.send(());
            }
        }
    }

    /// Answers each caller with what `answer` makes of its own keys.
    pub fn answer(self, mut answer: impl FnMut(&[String]) -> R) {
        for caller in self.callers {
            // A caller that stopped waiting (its request ended) needs no answer.
            let _ = caller.reply.send(answer(&caller.keys));
        }
    }
}

/// What a write asks of its lane besides its values: whether it is read back, by when it is
/// answered, and who hears once Genesys accepted it.
pub struct Asked {
    pub verify: bool,
    pub deadline: Instant,
    pub written: Option<oneshot::Sender<()>>,
}

impl Asked {
    /// Read back (when `verify`) and answered by `deadline`, with no one waiting for the write alone.
    pub fn by(verify: bool, deadline: Instant) -> Self {
        Self {
            verify,
            deadline,
            written: None,
        }
    }
}

/// Each open lane by its key, with what came for its next write.
type Open<K, V, R> = HashMap<K, Option<Batch<V, R>>>;

/// Each key's lane: present while a write is lingering or under way, holding what came for the
/// next one.
pub struct Lanes<K, V, R> {
    lanes: Arc<Mutex<Open<K, V, R>>>,
}

impl<K, V, R> Clone for Lanes<K, V, R> {
    fn clone(&self) -> Self {
        Self {
            lanes: self.lanes.clone(),
        }
    }
}

impl<K, V, R> Default for Lanes<K, V, R> {
    fn default() -> Self {
        Self {
            lanes: Arc::default(),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Merge, R> Lanes<K, V, R> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Open<K, V, R>> {
        // A panic elsewhere must not wedge every later write to the key.
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins `key`'s lane with `values` (whose keys are `keys`) as `asked`: the receiver gets this
    /// write's answer, and `true` says the lane was idle, so the caller must start its
    /// [`Lanes::drain`].
    pub fn join(
        &self,
        key: K,
        values: V,
        keys: Vec<String>,
        asked: Asked,
    ) -> (oneshot::Receiver<R>, bool) {
        let (reply, answer) = oneshot::channel();
        let batch = Batch {
            values,
            verify: asked.verify,
            deadline: asked.deadline,
            callers: vec![Caller {
                keys,
                reply,
                written: asked.written,
            }],
        };
        let mut lanes = self.lock();
        let idle = !lanes.contains_key(&key);
        match lanes.entry(key).or_default() {
            Some(waiting) => waiting.absorb(batch),
            waiting @ None => *waiting = Some(batch),
        }
        (answer, idle)
    }

    /// Moves what came for `key` since `batch` was taken into it.
    pub fn gather(&self, key: &K, batch: &mut Batch<V, R>) {
        if let Some(more) = self.take_waiting(key) {
            batch.absorb(more);
        }
    }

    /// What came for `key` since its round's batch was taken, to be written on its own before the
    /// round's read, which then verifies both ([`Batch::absorb`]).
    pub fn take_waiting(&self, key: &K) -> Option<Batch<V, R>> {
        self.lock().get_mut(key).and_then(Option::take)
    }

    /// Returns `batch`, taken by [`Lanes::take_waiting`] and not written, to the head of `key`'s
    /// lane: it goes in the next round, before whatever came since (later values win).
    pub fn put_back(&self, key: &K, mut batch: Batch<V, R>) {
        let mut lanes = self.lock();
        // The lane is open: its round is the caller.
        let waiting = lanes.entry(key.clone()).or_default();
        if let Some(later) = waiting.take() {
            batch.absorb(later);
        }
        *waiting = Some(batch);
    }

    /// Runs `key`'s lane until nothing waits in it: each round lingers (`linger`, never past the
    /// earliest deadline), takes every write that came, and hands them to `run` as one batch.
    pub async fn drain<F, Fut>(&self, key: K, linger: impl Fn() -> Duration, mut run: F)
    where
        F: FnMut(Batch<V, R>) -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            let deadline = self
                .lock()
                .get(&key)
                .and_then(|b| b.as_ref().map(|b| b.deadline));
            if let Some(deadline) = deadline {
                tokio::time::sleep_until((Instant::now() + linger()).min(deadline)).await;
            }
            let batch = {
                let mut lanes = self.lock();
                match lanes.get_mut(&key).and_then(Option::take) {
                    Some(batch) => batch,
                    None => {
                        // Closed under the lock: a write that comes next opens the lane again.
                        lanes.remove(&key);
                        return;
                    }
                }
            };
            run(batch).await;
        }
    }
}

/// What a request's participant write waits for: every write of the conversation's own targets
/// (its secure attributes, its custom records) accepted by Genesys. A refusal of them leaves the
/// participant unwritten, and their read-backs and the participant's go on side by side.
#[derive(Default)]
pub struct Gate {
    waits: Vec<oneshot::Receiver<()>>,
}

impl Gate {
    /// A write the gate waits for: the sender goes to [`Lanes::join`].
    pub fn wait_for(&mut self) -> oneshot::Sender<()> {
        let (written, heard) = oneshot::channel();
        self.waits.push(heard);
        written
    }

    /// Runs `write` (told whether the request already lingered in its other lanes, so its own
    /// lane need not linger again) once every write the gate waits for was accepted; `None`, and
    /// nothing run, as soon as one was not (its sender dropped: refused or never sent).
    pub async fn then<T, F: Future<Output = T>>(self, write: impl FnOnce(bool) -> F) -> Option<T> {
        let lingered = !self.waits.is_empty();
        for heard in self.waits {
            heard.await.ok()?;
        }
        Some(write(lingered).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    impl Merge for BTreeMap<String, u32> {
        fn merge(&mut self, later: Self) {
            self.extend(later);
        }
    }

    type Values = BTreeMap<String, u32>;

    fn values(k: &str, v: u32) -> Values {
        [(k.to_string(), v)].into()
    }

    #[tokio::test(start_paused = true)]
    async fn writes_that_come_while_a_lane_lingers_share_one_round_each_answered_for_its_keys() {
        let lanes: Lanes<&str, Values, Vec<String>> = Lanes::default();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut gate = Gate::default();
        let (first, idle) = lanes.join(
            "r",
            values("a", 1),
            vec!["a".into()],
            Asked {
                written: Some(gate.wait_for()),
                ..Asked::by(false, deadline)
            },
        );
        assert!(idle);
        let (second, idle) = lanes.join(
            "r",
            values("b", 2),
            vec!["b".into()],
            Asked {
                written: Some(gate.wait_for()),
                ..Asked::by(true, deadline)
            },
        );
        assert!(!idle, "the lane is open: the first caller drains it");
        let rounds = Arc::new(Mutex::new(Vec::new()));
        let seen = rounds.clone();
        lanes
            .drain(
                "r",
                || Duration::from_millis(150),
                move |mut batch: Batch<Values, Vec<String>>| {
                    seen.lock()
                        .unwrap()
                        .push((batch.values.clone(), batch.verify));
                    batch.written();
                    batch.answer(|keys| keys.to_vec());
                    async {}
                },
            )
            .await;
        assert_eq!(
            *rounds.lock().unwrap(),
            [([("a".to_string(), 1), ("b".to_string(), 2)].into(), true)]
        );
        assert_eq!(
            gate.then(|_| async {}).await,
            Some(()),
            "both callers heard their write accepted"
        );
        assert_eq!(first.await.unwrap(), ["a"]);
        assert_eq!(second.await.unwrap(), ["b"]);
        // Drained and closed: the next write opens the lane again.
        assert!(
            lanes
                .join("r", values("c", 3), vec![], Asked::by(false, deadline))
                .1
        );
    }

    #[tokio::test]
    async fn a_batch_put_back_goes_before_what_came_since_and_the_later_value_wins() {
        let lanes: Lanes<&str, Values, Vec<String>> = Lanes::default();
        let deadline = Instant::now() + Duration::from_secs(5);
        let asked = || Asked::by(true, deadline);
        let (_first, idle) = lanes.join("r", values("a", 1), vec!["a".into()], asked());
        assert!(idle);
        let taken = lanes.take_waiting(&"r").expect("the first write waits");
        assert!(lanes.take_waiting(&"r").is_none(), "taken once");
        let (_second, _) = lanes.join("r", values("a", 2), vec!["a".into()], asked());
        lanes.put_back(&"r", taken);
        let next = lanes.take_waiting(&"r").expect("both wait again");
        assert_eq!(next.values, values("a", 2));
        assert_eq!(next.callers(), 2);
    }

    #[tokio::test]
    async fn a_gate_opens_when_every_write_was_accepted_and_stays_shut_when_one_was_not() {
        assert_eq!(
            Gate::default()
                .then(|lingered| async move { lingered })
                .await,
            Some(false),
            "nothing to wait for, nothing lingered"
        );
        let mut gate = Gate::default();
        gate.wait_for().send(()).unwrap();
        assert_eq!(
            gate.then(|lingered| async move { lingered }).await,
            Some(true)
        );
        let mut gate = Gate::default();
        let accepted = gate.wait_for();
        let refused = gate.wait_for();
        accepted.send(()).unwrap();
        drop(refused);
        assert_eq!(gate.then(|_| async { unreachable!() }).await, None::<()>);
    }
}
