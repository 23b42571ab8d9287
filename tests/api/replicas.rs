//! Three gateway processes on one Redis and one simulator take 2,000 updates; one is killed with
//! SIGKILL midway. Every accepted update lands, in order, with one token grant for the deployment,
//! and no window of time sees more Genesys calls than the rate budget allows.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use patchbay::sim::{Op, Simulator};
use serde_json::json;
use tokio::net::TcpListener;

use crate::crash::seed;
use crate::helpers::*;

const UPDATES_PER_PARTICIPANT: usize = 40;
const KILL_AFTER_ACCEPTED: usize = 700;
const RATE_PER_MINUTE: usize = 12_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_act_as_one_service_through_a_sigkill() {
    // Declared first, so the gateways are killed before its keys are swept.
    let redis = RedisPrefix::new().await;
    let (redis_url, prefix) = (redis.url.clone(), redis.name.clone());
    let server = Simulator::new();
    let sim = server.control();
    let targets = seed(&sim);
    sim.fail_every(Op::PatchAttributes, 9, 503, None);
    let sim_url = server.spawn(TcpListener::bind("127.0.0.1:0").await.unwrap());

    let mut gateways: Vec<Gateway> = (0..3)
        .map(|n| {
            let env: Vec<(String, String)> = [
                ("PATCHBAY__GENESYS__LOGIN_URL", sim_url.clone()),
                ("PATCHBAY__GENESYS__API_URL", sim_url.clone()),
                (
                    "PATCHBAY__GENESYS__CLIENT_ID",
                    patchbay::sim::DEFAULT_CLIENT_ID.into(),
                ),
                (
                    "PATCHBAY__GENESYS__CLIENT_SECRET",
                    patchbay::sim::DEFAULT_CLIENT_SECRET.into(),
                ),
                ("PATCHBAY__GENESYS__RETRY__BASE_DELAY_MS", "10".into()),
                (
                    "PATCHBAY__GENESYS__RATE_PER_MINUTE",
                    RATE_PER_MINUTE.to_string(),
                ),
                ("PATCHBAY__AUTH__API_KEYS", API_KEY.into()),
                ("PATCHBAY__QUEUE__BACKEND", "redis".into()),
                ("PATCHBAY__REDIS__URL", redis_url.clone()),
                ("PATCHBAY__REDIS__KEY_PREFIX", prefix.clone()),
                // Three gateways, the test and the simulator share two cores: give Redis answers
                // time, so no replica takes a slow answer for an outage and falls back.
                ("PATCHBAY__REDIS__TIMEOUT_MS", "3000".into()),
                ("PATCHBAY__QUEUE__WORKERS", "8".into()),
                ("PATCHBAY__QUEUE__LEASE_S", "4".into()),
                ("PATCHBAY__QUEUE__BACKOFF_BASE_MS", "50".into()),
                ("PATCHBAY__QUEUE__BACKOFF_MAX_MS", "500".into()),
                ("PATCHBAY__QUEUE__POLL_INTERVAL_MS", "50".into()),
                ("PATCHBAY__VERIFY__TIMEOUT_MS", "1000".into()),
                ("PATCHBAY__QUEUE__PATH", format!("/nonexistent/replica-{n}")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            let mut g = Gateway::new(env);
            g.start();
            g
        })
        .collect();
    let addresses: Vec<String> = gateways.iter().map(|g| g.address.clone()).collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for address in &addresses {
        let started = Instant::now();
        while http
            .get(format!("{address}/healthz"))
            .send()
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{address} never came up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let accepted = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // One sender per participant, each spreading its updates over the replicas; a failed send goes
    // to the next replica with the same Idempotency-Key.
    let senders = targets
        .iter()
        .enumerate()
        .map(|(p, (conversation, participant))| {
            let (http, accepted, addresses, down) = (
                http.clone(),
                accepted.clone(),
                addresses.clone(),
                down.clone(),
            );
            let (conversation, participant) = (conversation.clone(), participant.clone());
            async move {
                let mut jobs = Vec::new();
                let mut replica = p;
                for n in 0..UPDATES_PER_PARTICIPANT {
                    let body = json!({"conversationId": conversation, "participantId": participant,
                                  "attributes": {"n": n, format!("k{}", n % 3): n}});
                    let key = format!("replicas-{p}-{n}");
                    loop {
                        replica += 1;
                        if down.load(Ordering::SeqCst) && replica % 3 == 0 {
                            continue;
                        }
                        let sent = http
                            .post(format!("{}/v1/attributes", addresses[replica % 3]))
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
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                jobs
            }
        });
    let killer = async {
        while accepted.load(Ordering::SeqCst) < KILL_AFTER_ACCEPTED {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        down.store(true, Ordering::SeqCst);
        gateways[0].kill();
        sim.count("patch_attributes")
    };
    let (jobs, writes_at_kill) = tokio::join!(futures::future::join_all(senders), killer);
    assert!(writes_at_kill > 0, "the kill came before any processing");
    let total = targets.len() * UPDATES_PER_PARTICIPANT;
    assert_eq!(accepted.load(Ordering::SeqCst), total);

    let all: Vec<String> = jobs.iter().flatten().cloned().collect();
    wait_all_succeeded(&http, &addresses[1..], &all, Duration::from_secs(120)).await;

    // One job per accepted update: the deployment-wide sequence counted exactly that many.
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let created: usize = redis::cmd("GET")
        .arg(format!("{{{prefix}}}:seq"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(created, total);

    // Every participant ends with the last accepted value of each key, written in order.
    let writes = sim.writes();
    let last_of = |r: usize| {
        (0..UPDATES_PER_PARTICIPANT)
            .filter(|n| n % 3 == r)
            .max()
            .unwrap()
    };
    for (conversation, participant) in &targets {
        let stored: BTreeMap<String, String> = sim
            .stored_attributes(conversation, participant)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(
            stored["n"],
            (UPDATES_PER_PARTICIPANT - 1).to_string(),
            "{participant}: {stored:?}"
        );
        for r in 0..3 {
            assert_eq!(stored[&format!("k{r}")], last_of(r).to_string());
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
        assert!(
            ns.windows(2).all(|w| w[0] <= w[1]),
            "{participant} went back: {ns:?}"
        );
    }

    // One token for the deployment.
    assert_eq!(sim.grants(), 1);

    // The budget: no minute over rate_per_minute, whichever replica made the calls.
    let mut times: Vec<tokio::time::Instant> = ["get_conversation", "patch_attributes"]
        .iter()
        .flat_map(|op| sim.call_times(op))
        .collect();
    times.sort();
    let window = Duration::from_secs(60);
    let worst = times
        .iter()
        .enumerate()
        .map(|(i, t)| {
            times[i..]
                .iter()
                .take_while(|u| u.duration_since(*t) < window)
                .count()
        })
        .max()
        .unwrap_or(0);
    println!(
        "replicas: {} Genesys calls; at most {worst} in any minute (budget {RATE_PER_MINUTE})",
        times.len()
    );
    assert!(worst <= RATE_PER_MINUTE, "{worst} calls within a minute");
    for g in &mut gateways {
        g.kill();
    }
}
