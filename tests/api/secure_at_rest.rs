//! Secure attributes at rest: queued, dead or kept for an idempotency key, they are sealed under
//! `secure.keys`, never in clear in SQLite's file or Redis's keys; a rotation that keeps the old key
//! still delivers them, and a job whose key is gone is reported, never run and never a crash.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::helpers::*;

const DOB: &str = "1931-02-29-unique";

fn key(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

fn keys(ids: &[(&str, u8)]) -> impl Fn(&mut patchbay::config::Settings) + Clone {
    let spec = ids
        .iter()
        .map(|(id, byte)| format!("{id}:{}", key(*byte)))
        .collect::<Vec<_>>()
        .join(",");
    move |s| s.secure.keys = spec.clone().into()
}

fn secure_update() -> Value {
    json!({
        "conversationId": SEED_ACTIVE_CALL,
        "participantId": SEED_ACTIVE_CALL_AGENT,
        "attributes": {"vip": true},
        "secureAttributes": {"dob": DOB}
    })
}

/// Every byte of the SQLite store: its file and, while it is open, its write-ahead log.
fn sqlite_bytes(path: &std::path::Path) -> Vec<u8> {
    ["", "-wal", "-shm"]
        .iter()
        .flat_map(|suffix| std::fs::read(format!("{}{suffix}", path.display())).unwrap_or_default())
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Every value under the prefix, whatever its type, as text.
fn redis_contents(prefix: &RedisPrefix) -> String {
    let mut conn = redis::Client::open(prefix.url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut all = String::new();
    for k in prefix.keys() {
        let kind: String = redis::cmd("TYPE").arg(&k).query(&mut conn).unwrap();
        let parts: Vec<String> = match kind.as_str() {
            "string" => vec![redis::cmd("GET").arg(&k).query(&mut conn).unwrap()],
            "hash" => redis::cmd("HGETALL").arg(&k).query(&mut conn).unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(&k)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(&mut conn)
                .unwrap(),
            "list" => redis::cmd("LRANGE")
                .arg(&k)
                .arg(0)
                .arg(-1)
                .query(&mut conn)
                .unwrap(),
            "set" => redis::cmd("SMEMBERS").arg(&k).query(&mut conn).unwrap(),
            "stream" => {
                let entries: redis::Value = redis::cmd("XRANGE")
                    .arg(&k)
                    .arg("-")
                    .arg("+")
                    .query(&mut conn)
                    .unwrap();
                vec![text(&entries)]
            }
            other => panic!("a key of type {other}: {k}"),
        };
        all.push_str(&k);
        all.push_str(&parts.join(" "));
    }
    all
}

/// A reply's strings, whatever its nesting.
fn text(value: &redis::Value) -> String {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.iter().map(text).collect::<Vec<_>>().join(" ")
        }
        redis::Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| format!("{} {}", text(k), text(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn with_no_key_an_asynchronous_secure_write_is_refused_and_a_synchronous_one_works() {
    let app = spawn_app().await;
    app.post_async(secure_update(), &[])
        .await
        .assert_problem(422, "secure_not_stored");
    assert!(app.sim.secure_attributes(SEED_ACTIVE_CALL).is_none());
    let answer = app.post_attributes(secure_update()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["secureVerified"], true);
}

#[tokio::test]
async fn a_queued_secure_job_is_sealed_in_the_sqlite_file_and_delivered_verified() {
    let app = spawn_app_with(keys(&[("k1", 1)])).await;
    let accepted = app
        .post_async(secure_update(), &[("idempotency-key", "crm-42")])
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let id = accepted.body["jobId"].as_str().unwrap().to_string();
    let job = app.wait_for_job(&id, "succeeded").await;
    assert_eq!(job["secureKeys"], json!(["dob"]));
    assert_eq!(job["result"]["secureVerified"], true, "{job}");
    assert_eq!(job["result"]["verified"], true, "{job}");
    assert!(!job.to_string().contains(DOB), "{job}");
    let held = app.sim.secure_attributes(SEED_ACTIVE_CALL).unwrap();
    assert_eq!(held.get("dob").map(String::as_str), Some(DOB));
    // The job is kept, with its values sealed under k1; the idempotency record keeps a keyed
    // fingerprint of the body, never a plain hash of it.
    let bytes = sqlite_bytes(&app.queue_path);
    assert!(
        contains(&bytes, r#""key":"k1""#),
        "the sealed job is stored"
    );
    assert!(
        !contains(&bytes, DOB),
        "a secure value is in the SQLite file"
    );
    let plain = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        secure_update().to_string().as_bytes(),
    ));
    assert!(!contains(&bytes, &plain));
    assert!(contains(&bytes, "hmac:k1:"));
    // A repeat is the same job.
    let again = app
        .post_async(secure_update(), &[("idempotency-key", "crm-42")])
        .await;
    assert_eq!(again.body["jobId"], id.as_str());
}

#[tokio::test]
async fn on_redis_a_secure_job_and_its_idempotency_record_hold_no_value_in_clear() {
    let prefix = RedisPrefix::new().await;
    let (url, name) = (prefix.url.clone(), prefix.name.clone());
    let with_key = keys(&[("k1", 1)]);
    let app = spawn_app_with(move |s| {
        on_redis(s, &url, &name);
        with_key(s);
    })
    .await;
    let accepted = app
        .post_async(secure_update(), &[("idempotency-key", "crm-redis")])
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let id = accepted.body["jobId"].as_str().unwrap();
    let job = app.wait_for_job(id, "succeeded").await;
    assert_eq!(job["result"]["secureVerified"], true, "{job}");
    // A synchronous answer kept for its key, too.
    let answer = app
        .post_raw(
            "/v1/attributes",
            secure_update().to_string(),
            &[("x-api-key", API_KEY), ("idempotency-key", "crm-sync")],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let stored = redis_contents(&prefix);
    assert!(stored.contains(r#""key":"k1""#), "the sealed job is stored");
    assert!(stored.contains("hmac:k1:"), "{stored}");
    assert!(
        !stored.contains(DOB),
        "a secure value is in Redis: {stored}"
    );
}

/// A secure job sealed under the key `old` that died (every secure PATCH answered 503), in a
/// store its gateway has let go of: the store's path and the job's id.
async fn a_dead_job_sealed_under_old() -> (std::path::PathBuf, String) {
    let first = spawn_app_with(|s| {
        keys(&[("old", 1)])(s);
        jobs_die_soon(s);
    })
    .await;
    first
        .sim
        .fail_next(patchbay::sim::Op::PatchSecureAttributes, 503, 10_000);
    let accepted = first.post_async(secure_update(), &[]).await;
    let id = accepted.body["jobId"].as_str().unwrap().to_string();
    first.wait_for_job(&id, "dead").await;
    first.begin_shutdown();
    first.stopped().await;
    (first.queue_path.clone(), id)
}

/// Replays dead job `id` with the admin key: queued again.
async fn replay(app: &TestApp, id: &str) {
    let replay = app
        .post_raw(
            &format!("/v1/dead-letters/{id}/replay"),
            String::new(),
            &[("x-api-key", ADMIN_KEY)],
        )
        .await;
    assert_eq!(replay.status, 202, "{}", replay.body);
}

#[tokio::test]
async fn a_dead_secure_job_is_replayed_after_a_rotation_that_kept_its_key() {
    let (path, id) = a_dead_job_sealed_under_old().await;

    // Rotated: a new key seals, the old one still opens what it sealed.
    let rotated = keys(&[("new", 2), ("old", 1)]);
    let second = spawn_app_with(move |s| {
        rotated(s);
        s.queue.path = path;
    })
    .await;
    replay(&second, &id).await;
    let job = second.wait_for_job(&id, "succeeded").await;
    assert_eq!(job["result"]["secureVerified"], true, "{job}");
    let held = second.sim.secure_attributes(SEED_ACTIVE_CALL).unwrap();
    assert_eq!(held.get("dob").map(String::as_str), Some(DOB));
    // What it queues now is sealed under the new key.
    let next = second.post_async(secure_update(), &[]).await;
    second
        .wait_for_job(next.body["jobId"].as_str().unwrap(), "succeeded")
        .await;
    assert!(contains(
        &sqlite_bytes(&second.queue_path),
        r#""key":"new""#
    ));
}

#[tokio::test]
async fn a_job_whose_key_is_gone_is_reported_dead_and_the_workers_go_on() {
    let (path, id) = a_dead_job_sealed_under_old().await;

    // The old key was dropped: the replayed job cannot be opened.
    let second = spawn_app_with(move |s| {
        keys(&[("new", 2)])(s);
        s.queue.path = path;
    })
    .await;
    replay(&second, &id).await;
    let job = second.wait_for_job(&id, "dead").await;
    assert_eq!(job["problem"]["code"], "secure_key_missing", "{job}");
    assert!(
        job["problem"]["detail"].as_str().unwrap().contains("`old`"),
        "{job}"
    );
    assert!(second.sim.secure_attributes(SEED_ACTIVE_CALL).is_none());
    assert_eq!(second.sim.count("patch_attributes"), 0, "nothing was sent");
    // The workers still run other jobs.
    let next = second
        .post_async(
            json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"after": "yes"}}),
            &[],
        )
        .await;
    second
        .wait_for_job(next.body["jobId"].as_str().unwrap(), "succeeded")
        .await;
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_after_a_rotation_is_still_the_same_request() {
    let first = spawn_app_with(keys(&[("old", 1)])).await;
    let headers = [("x-api-key", API_KEY), ("idempotency-key", "crm-rotation")];
    let answer = first
        .post_raw("/v1/attributes", secure_update().to_string(), &headers)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    first.begin_shutdown();
    first.stopped().await;
    let path = first.queue_path.clone();
    let rotated = keys(&[("new", 2), ("old", 1)]);
    let second = spawn_app_with(move |s| {
        rotated(s);
        s.queue.path = path;
    })
    .await;
    let repeat = second
        .post_raw("/v1/attributes", secure_update().to_string(), &headers)
        .await;
    assert_eq!(repeat.status, 200, "{}", repeat.body);
    assert_eq!(repeat.header("idempotent-replayed"), "true");
    assert!(second.api_calls().is_empty(), "{:?}", second.api_calls());
}

#[tokio::test]
async fn with_a_key_an_asynchronous_webhook_route_queues_secure_attributes_sealed() {
    let with_key = keys(&[("k1", 1)]);
    let app = spawn_app_with(move |s| {
        with_key(s);
        s.hooks = hooks_from_toml(
            r#"
            [hooks.kyc]
            conversation_id = "/call/id"
            mode = "async"
            [hooks.kyc.secure_attributes]
            dob = "/customer/birthDate"
            "#,
        );
    })
    .await;
    let event = json!({"call": {"id": SEED_ACTIVE_CALL}, "customer": {"birthDate": DOB}});
    let accepted = app
        .post_raw(
            "/v1/hooks/kyc",
            event.to_string(),
            &[("x-api-key", API_KEY)],
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let job = app
        .wait_for_job(accepted.body["jobId"].as_str().unwrap(), "succeeded")
        .await;
    assert_eq!(job["result"]["secureKeys"], json!(["dob"]), "{job}");
    assert_eq!(job["result"]["secureVerified"], true, "{job}");
    assert_eq!(
        job["result"]["participantId"], "",
        "no participant was mapped"
    );
    assert_eq!(app.sim.count("patch_attributes"), 0);
    assert!(!contains(&sqlite_bytes(&app.queue_path), DOB));
}
