//! The crash test: accepted asynchronous updates survive a SIGKILL of the gateway process.
//!
//! A real `patchbay serve` process takes 1,000 updates for 50 participants while the simulator fails
//! and rate-limits some calls. It is killed with SIGKILL partway through and started again on the same
//! store. Every accepted update must land, in order, exactly once, and no job may be left behind.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use patchbay::sim::{Control, Op, Simulator};
use serde_json::json;
use tokio::net::TcpListener;

use crate::helpers::{wait_all_succeeded, Gateway, API_KEY};

const PARTICIPANTS: usize = 50;
const UPDATES_PER_PARTICIPANT: usize = 20;
const KILL_AFTER_ACCEPTED: usize = 400;

/// 25 live calls with a customer and an agent each: 50 participants.
pub fn seed(sim: &Control) -> Vec<(String, String)> {
    sim.add_live_calls(PARTICIPANTS / 2)
        .into_iter()
        .flat_map(|c| {
            [
                (c.conversation.clone(), c.customer),
                (c.conversation, c.agent),
            ]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_update_lands_in_order_across_a_sigkill() {
    let server = Simulator::new();
    let sim = server.control();
    let targets = seed(&sim);
    // Genesys misbehaves throughout: every 7th PATCH fails, every 89th read is rate limited. Each
    // 429 pauses every call for its Retry-After (a second), so they are rarer than the failures:
    // the test's time goes to the kill and the restart, not to waiting on the clock.
    sim.fail_every(Op::PatchAttributes, 7, 503, None);
    sim.fail_every(Op::GetConversation, 89, 429, Some(1));
    let sim_url = server.spawn(TcpListener::bind("127.0.0.1:0").await.unwrap());

    let store =
        std::env::temp_dir().join(format!("patchbay-crash-{}", uuid::Uuid::new_v4().simple()));
    let queue_path = store.join("queue.sqlite3");
    let queue = queue_path.display().to_string();
    let mut gateway = Gateway::in_front_of(
        &sim_url,
        &[
            ("PATCHBAY__GENESYS__RETRY__MAX_DELAY_MS", "50"),
            ("PATCHBAY__QUEUE__PATH", &queue),
            ("PATCHBAY__QUEUE__WORKERS", "8"),
            ("PATCHBAY__QUEUE__BACKOFF_BASE_MS", "50"),
            ("PATCHBAY__QUEUE__BACKOFF_MAX_MS", "500"),
            ("PATCHBAY__QUEUE__POLL_INTERVAL_MS", "50"),
        ],
    );
    gateway.start();

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(tokio::sync::Notify::new());

    // One sender per participant: each waits for its 202 before sending the next update, so the
    // acceptance order per participant is the order below. A failed send is retried with the same
    // Idempotency-Key, so an update committed just before the kill is not accepted twice.
    let address = gateway.address.clone();
    let senders = targets
        .iter()
        .enumerate()
        .map(|(p, (conversation, participant))| {
            let (http, accepted, address) = (http.clone(), accepted.clone(), address.clone());
            let (conversation, participant) = (conversation.clone(), participant.clone());
            async move {
                let mut jobs = Vec::new();
                for n in 0..UPDATES_PER_PARTICIPANT {
                    let body = json!({"conversationId": conversation, "participantId": participant,
                                  "attributes": {"n": n, format!("k{}", n % 3): n}});
                    let key = format!("crash-{p}-{n}");
                    loop {
                        let sent = http
                            .post(format!("{address}/v1/attributes"))
                            .header("x-api-key", API_KEY)
                            .header("prefer", "respond-async")
                            .header("idempotency-key", &key)
                            .json(&body)
                            .send()
                            .await;
                        if let Ok(r) = sent {
                            if r.status() == 202 {
                                let v: serde_json::Value = r.json().await.unwrap();
                                jobs.push(v["jobId"].as_str().unwrap().to_string());
                                accepted.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                jobs
            }
        });
    let killer = {
        let accepted = accepted.clone();
        let killed = killed.clone();
        async move {
            while accepted.load(Ordering::SeqCst) < KILL_AFTER_ACCEPTED {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        .then_signal(killed)
    };
    let restart = async {
        killed.notified().await;
        gateway.kill();
        let writes_at_kill = sim.count("patch_attributes");
        tokio::time::sleep(Duration::from_millis(300)).await;
        gateway.start();
        writes_at_kill
    };
    let (jobs, _, writes_at_kill) =
        tokio::join!(futures::future::join_all(senders), killer, restart);
    let jobs: Vec<Vec<String>> = jobs;
    assert!(writes_at_kill > 0, "the kill came before any processing");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        PARTICIPANTS * UPDATES_PER_PARTICIPANT
    );

    // Wait until every job has landed.
    let all: Vec<String> = jobs.iter().flatten().cloned().collect();
    wait_all_succeeded(
        &http,
        std::slice::from_ref(&address),
        &all,
        Duration::from_secs(90),
    )
    .await;

    // Exactly one job per accepted update, and none left behind.
    let db = rusqlite::Connection::open(&queue_path).unwrap();
    let by_status: BTreeMap<String, i64> = db
        .prepare("SELECT status, count(*) FROM jobs GROUP BY status")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        by_status,
        BTreeMap::from([(
            "succeeded".to_string(),
            (PARTICIPANTS * UPDATES_PER_PARTICIPANT) as i64
        )])
    );

    // Each participant ends with the last accepted value of each key, written in acceptance order.
    let last = UPDATES_PER_PARTICIPANT - 1;
    let last_of = |r: usize| {
        (0..UPDATES_PER_PARTICIPANT)
            .filter(|n| n % 3 == r)
            .max()
            .unwrap()
    };
    let writes = sim.writes();
    for (conversation, participant) in &targets {
        let stored: BTreeMap<String, String> = sim
            .stored_attributes(conversation, participant)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(stored["n"], last.to_string(), "{participant}: {stored:?}");
        for r in 0..3 {
            assert_eq!(
                stored[&format!("k{r}")],
                last_of(r).to_string(),
                "{participant}: {stored:?}"
            );
        }
        let ns: Vec<usize> = writes
            .iter()
            .filter(|w| &w.participant == participant)
            .filter_map(|w| {
                w.attributes
                    .iter()
                    .find(|(k, _)| k == "n")
                    .map(|(_, v)| v.parse().unwrap())
            })
            .collect();
        // A write may repeat after the kill (its success was never recorded), but never go back.
        assert!(
            ns.windows(2).all(|w| w[0] <= w[1]),
            "{participant} went back: {ns:?}"
        );
    }
    let _ = std::fs::remove_dir_all(store);
}

/// Runs a future, then wakes whoever waits on `notify`.
trait ThenSignal: std::future::Future<Output = ()> + Sized {
    async fn then_signal(self, notify: Arc<tokio::sync::Notify>) {
        self.await;
        notify.notify_one();
    }
}

impl<F: std::future::Future<Output = ()>> ThenSignal for F {}
