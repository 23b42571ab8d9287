//! Redis restarts mid-run: synchronous requests keep working, asynchronous intake answers 503 while
//! it is away, and everything accepted before, during and after lands once it is back.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

/// A Redis of the test's own, persisting every write (AOF, fsync always), so it can be restarted.
struct OwnRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    fn start(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "always", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("this test starts its own redis-server, which must be on PATH (.ci/run installs it)");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn until_redis_answers(url: &str) {
    let started = Instant::now();
    loop {
        let client = redis::Client::open(url).unwrap();
        if let Ok(mut c) = client.get_multiplexed_async_connection().await {
            if redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .is_ok()
            {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis-server never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn update(n: usize) -> serde_json::Value {
    let (conversation, participant) = [
        (SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_AGENT),
        (SEED_CHAT, SEED_CHAT_CUSTOMER),
        (SEED_TRANSFER, SEED_TRANSFER_AGENT_NEW),
    ][n % 3];
    json!({"conversationId": conversation, "participantId": participant, "attributes": {"n": n / 3}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_loses_nothing_and_everything_resumes() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir =
        std::env::temp_dir().join(format!("patchbay-redis-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut redis = OwnRedis {
        port,
        dir,
        child: None,
    };
    redis.start();
    until_redis_answers(&redis.url()).await;

    let url = redis.url();
    let app = spawn_app_with(move |s| {
        on_redis(s, &url, &unique_prefix());
        // Long enough for a loaded CI machine; the outage is still seen within a second.
        s.redis.timeout_ms = 1000;
        s.queue.lease_s = 2;
    })
    .await;
    app.sim.set_latency(Duration::from_millis(30));

    let mut jobs = Vec::new();
    let mut n = 0;
    while n < 60 {
        let answer = app.post_async(update(n), &[]).await;
        jobs.push(answer.body["jobId"].as_str().expect("accepted").to_string());
        n += 1;
    }

    redis.kill();
    // Asynchronous intake cannot store, so it does not accept.
    app.post_async(update(n), &[])
        .await
        .assert_problem(503, "queue_unavailable");
    // Synchronous requests carry on with a local token and budget.
    let sync = app.post_attributes(update(1000)).await;
    assert_eq!(sync.status, 200, "{}", sync.body);

    redis.start();
    until_redis_answers(&redis.url()).await;
    let started = Instant::now();
    while n < 120 {
        let answer = app.post_async(update(n), &[]).await;
        if answer.status == 202 {
            jobs.push(answer.body["jobId"].as_str().unwrap().to_string());
            n += 1;
        } else {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "intake never resumed: {}",
                answer.body
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for id in &jobs {
        app.wait_for_job(id, "succeeded").await;
    }
    // Each participant ends with its last accepted value.
    for (i, (conversation, participant)) in [
        (SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_AGENT),
        (SEED_CHAT, SEED_CHAT_CUSTOMER),
        (SEED_TRANSFER, SEED_TRANSFER_AGENT_NEW),
    ]
    .into_iter()
    .enumerate()
    {
        let last = (0..120).filter(|n| n % 3 == i).max().unwrap() / 3;
        let stored = app
            .sim
            .stored_attributes(conversation, participant)
            .unwrap();
        assert!(
            stored.contains(&("n".into(), last.to_string())),
            "{participant}: {stored:?}"
        );
    }
}
