//! One contract, two backends: the same tests run against the SQLite store and the Redis queue.

use std::sync::Arc;
use std::time::Duration;

use patchbay::config::RedisSettings;
use patchbay::store::queue::redis::RedisQueue;
use patchbay::store::queue::sqlite::SqliteQueue;
use patchbay::store::queue::{
    now_ms, Begun, Enqueued, IdempotencyKey, Job, JobQueue, JobStatus, StoredProblem,
    StoredResponse, StoredUpdate,
};
use patchbay::store::Redis;

use crate::helpers::*;

const TTL: Duration = Duration::from_secs(60);
const LEASE: Duration = Duration::from_secs(60);

/// A queue, and what must live as long as it: the Redis prefix whose keys go with it.
type Backend = (Arc<dyn JobQueue>, Option<RedisPrefix>);

async fn sqlite() -> Backend {
    let path = std::env::temp_dir()
        .join(format!(
            "patchbay-contract-{}",
            uuid::Uuid::new_v4().simple()
        ))
        .join("q.sqlite3");
    (
        Arc::new(SqliteQueue::open(&path, TTL, LEASE).unwrap()),
        None,
    )
}

async fn redis_with_lease(lease: Duration) -> Backend {
    let prefix = RedisPrefix::new().await;
    let settings = RedisSettings {
        url: prefix.url.clone().into(),
        key_prefix: prefix.name.clone(),
        timeout_ms: 1000,
    };
    let queue = RedisQueue::new(Redis::connect(&settings).unwrap(), TTL, lease);
    (Arc::new(queue), Some(prefix))
}

async fn redis() -> Backend {
    redis_with_lease(LEASE).await
}

fn update(conversation: &str, participant: &str, attrs: &[(&str, &str)]) -> StoredUpdate {
    StoredUpdate {
        conversation_id: conversation.into(),
        participant_id: Some(participant.into()),
        purpose: None,
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        verify: None,
        ..Default::default()
    }
}

async fn created(q: &dyn JobQueue, u: StoredUpdate) -> Job {
    match q.enqueue(u, "req", None).await.unwrap() {
        Enqueued::Created(job) => job,
        other => panic!("not created: {other:?}"),
    }
}

fn problem() -> StoredProblem {
    StoredProblem {
        code: "upstream_error".into(),
        status: 502,
        title: "Upstream error".into(),
        detail: "d".into(),
    }
}

async fn a_job_goes_from_queued_to_running_to_succeeded(q: Arc<dyn JobQueue>) {
    let job = created(
        &*q,
        update(SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_AGENT, &[("a", "1")]),
    )
    .await;
    assert_eq!(job.status, JobStatus::Queued);
    let batch = q.claim(10).await.unwrap().expect("a runnable job");
    assert_eq!(batch.ids(), vec![job.id.clone()]);
    assert_eq!(
        q.get(&job.id).await.unwrap().unwrap().status,
        JobStatus::Running
    );
    assert!(
        q.claim(10).await.unwrap().is_none(),
        "nothing else is runnable"
    );
    q.succeed(&batch, serde_json::json!({"verified": true}))
        .await
        .unwrap();
    let done = q.get(&job.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.result.unwrap()["verified"], true);
    assert_eq!(done.attempts, 1);
}

async fn a_lane_runs_one_batch_at_a_time_in_acceptance_order(q: Arc<dyn JobQueue>) {
    let first = created(
        &*q,
        update(SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_AGENT, &[("n", "1")]),
    )
    .await;
    let other_target = created(
        &*q,
        update(SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_CUSTOMER, &[("n", "2")]),
    )
    .await;
    let elsewhere = created(&*q, update(SEED_CHAT, SEED_CHAT_CUSTOMER, &[("n", "3")])).await;
    let a = q.claim(10).await.unwrap().unwrap();
    assert_eq!(a.ids(), vec![first.id.clone()]);
    // The conversation is busy: only the other conversation can run.
    let b = q.claim(10).await.unwrap().unwrap();
    assert_eq!(b.ids(), vec![elsewhere.id.clone()]);
    assert!(q.claim(10).await.unwrap().is_none());
    q.succeed(&a, serde_json::json!({})).await.unwrap();
    let c = q.claim(10).await.unwrap().unwrap();
    assert_eq!(c.ids(), vec![other_target.id.clone()]);
}

async fn pending_jobs_for_one_target_merge_with_later_keys_winning(q: Arc<dyn JobQueue>) {
    let ids = [
        created(
            &*q,
            update(
                SEED_ACTIVE_CALL,
                SEED_ACTIVE_CALL_AGENT,
                &[("a", "1"), ("b", "1")],
            ),
        )
        .await
        .id,
        created(
            &*q,
            update(SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_AGENT, &[("a", "2")]),
        )
        .await
        .id,
        created(
            &*q,
            update(SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_CUSTOMER, &[("c", "1")]),
        )
        .await
        .id,
        created(
            &*q,
            update(SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_AGENT, &[("d", "1")]),
        )
        .await
        .id,
    ];
    let batch = q.claim(10).await.unwrap().unwrap();
    // Merging stops at the first job for another target: order is never traded for fewer calls.
    assert_eq!(batch.ids(), vec![ids[0].clone(), ids[1].clone()]);
    let merged: Vec<(&str, &str)> = batch
        .update
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(merged, vec![("a", "2"), ("b", "1")]);
}

async fn an_idempotency_key_makes_one_job_even_under_concurrency(q: Arc<dyn JobQueue>) {
    let key = IdempotencyKey {
        scope: "attributes".into(),
        key: "k-1".into(),
        body_hash: "h1".into(),
        earlier: vec![],
    };
    let u = update(SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_AGENT, &[("a", "1")]);
    let results =
        futures::future::join_all((0..10).map(|_| q.enqueue(u.clone(), "req", Some(key.clone()))))
            .await;
    let mut ids = std::collections::BTreeSet::new();
    let mut created = 0;
    for r in results {
        match r.unwrap() {
            Enqueued::Created(j) => {
                created += 1;
                ids.insert(j.id);
            }
            Enqueued::Existing(j) => {
                ids.insert(j.id);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((created, ids.len()), (1, 1));
    let other = IdempotencyKey {
        body_hash: "h2".into(),
        ..key
    };
    assert!(matches!(
        q.enqueue(u, "req", Some(other)).await.unwrap(),
        Enqueued::Conflict
    ));
}

async fn a_synchronous_key_keeps_its_answer_or_is_forgotten(q: Arc<dyn JobQueue>) {
    let key = IdempotencyKey {
        scope: "attributes".into(),
        key: "sync-1".into(),
        body_hash: "h".into(),
        earlier: vec![],
    };
    assert!(matches!(
        q.idempotency_begin(&key).await.unwrap(),
        Begun::New
    ));
    assert!(matches!(
        q.idempotency_begin(&key).await.unwrap(),
        Begun::InProgress
    ));
    q.idempotency_abandon(&key).await.unwrap();
    assert!(matches!(
        q.idempotency_begin(&key).await.unwrap(),
        Begun::New
    ));
    let answer = StoredResponse {
        status: 200,
        body: "{}".into(),
        content_type: "application/json".into(),
    };
    q.idempotency_finish(&key, &answer).await.unwrap();
    match q.idempotency_begin(&key).await.unwrap() {
        Begun::Answered(stored) => assert_eq!(stored, answer),
        other => panic!("{other:?}"),
    }
    let other = IdempotencyKey {
        body_hash: "other".into(),
        ..key
    };
    assert!(matches!(
        q.idempotency_begin(&other).await.unwrap(),
        Begun::Conflict
    ));
}

async fn a_job_past_its_horizon_is_dead_listed_and_replayable(q: Arc<dyn JobQueue>) {
    let mut ids = Vec::new();
    for (c, p) in [
        (SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_AGENT),
        (SEED_CHAT, SEED_CHAT_CUSTOMER),
        (SEED_TRANSFER, SEED_TRANSFER_AGENT_NEW),
    ] {
        ids.push(created(&*q, update(c, p, &[("a", "1")])).await.id);
    }
    for _ in 0..3 {
        let batch = q.claim(10).await.unwrap().unwrap();
        // Retried within the horizon: queued again, later.
        q.retry(&batch, now_ms() + 60_000, 3_600_000, "503", problem())
            .await
            .unwrap();
        assert_eq!(
            q.get(&batch.ids()[0]).await.unwrap().unwrap().status,
            JobStatus::Queued
        );
    }
    assert!(q.claim(10).await.unwrap().is_none(), "backed-off jobs wait");
    for id in &ids {
        assert!(
            q.replay(id).await.is_ok_and(|r| !r),
            "only a dead job can be replayed"
        );
    }
    assert_eq!(q.replay_all().await.unwrap(), 0);
    let stats = q.stats().await.unwrap();
    assert_eq!(stats.dead, 0);
    assert!(stats.queued >= 3, "{stats:?}");
    // A job whose next attempt would fall past its horizon dies instead.
    let mut dead = Vec::new();
    for (c, p) in [
        (SEED_ENDED, SEED_ENDED_CUSTOMER),
        (SEED_ENDED, SEED_ENDED_CUSTOMER),
    ] {
        let j = created(&*q, update(c, p, &[("a", "1")])).await;
        let batch = q.claim(10).await.unwrap().unwrap();
        assert_eq!(batch.ids(), vec![j.id.clone()]);
        q.retry(&batch, now_ms() + 1_000, 0, "503", problem())
            .await
            .unwrap();
        let job = q.get(&j.id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Dead);
        assert_eq!(job.problem.unwrap().code, "upstream_error");
        dead.push(j.id);
    }
    let listed = q.dead_letters(None, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        dead
    );
    let page = q.dead_letters(None, 1).await.unwrap();
    assert_eq!(
        page.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        vec![dead[0].clone()]
    );
    let next = q.dead_letters(Some(&dead[0]), 10).await.unwrap();
    assert_eq!(
        next.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        vec![dead[1].clone()]
    );
    assert!(q.replay(&dead[0]).await.unwrap());
    assert_eq!(
        q.get(&dead[0]).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    assert_eq!(q.stats().await.unwrap().dead, 1);
    let batch = q.claim(10).await.unwrap().unwrap();
    assert_eq!(batch.ids(), vec![dead[0].clone()]);
}

async fn a_replayed_job_never_writes_over_a_newer_value(q: Arc<dyn JobQueue>) {
    let old = created(
        &*q,
        update(
            SEED_ACTIVE_CALL,
            SEED_ACTIVE_CALL_AGENT,
            &[("tier", "silver"), ("note", "x")],
        ),
    )
    .await;
    let batch = q.claim(10).await.unwrap().unwrap();
    // A next attempt past a zero horizon kills the job. (An attempt due in the very millisecond the
    // job was accepted is still within it, so `now_ms()` alone would depend on the clock's tick.)
    q.retry(&batch, now_ms() + 1, 0, "503", problem())
        .await
        .unwrap();
    let new = created(
        &*q,
        update(
            SEED_ACTIVE_CALL,
            SEED_ACTIVE_CALL_AGENT,
            &[("tier", "gold")],
        ),
    )
    .await;
    let batch = q.claim(10).await.unwrap().unwrap();
    assert_eq!(batch.ids(), vec![new.id.clone()]);
    q.succeed(&batch, serde_json::json!({})).await.unwrap();
    assert!(q.replay(&old.id).await.unwrap());
    let batch = q.claim(10).await.unwrap().unwrap();
    assert_eq!(batch.ids(), vec![old.id.clone()]);
    let keys: Vec<&str> = batch.update.attributes.keys().map(String::as_str).collect();
    assert_eq!(keys, vec!["note"], "the newer tier must stay");
}

async fn a_released_batch_runs_again(q: Arc<dyn JobQueue>) {
    let job = created(
        &*q,
        update(SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_AGENT, &[("a", "1")]),
    )
    .await;
    let batch = q.claim(10).await.unwrap().unwrap();
    q.release(&batch).await.unwrap();
    let again = q.get(&job.id).await.unwrap().unwrap();
    assert_eq!((again.status, again.attempts), (JobStatus::Queued, 0));
    assert_eq!(q.claim(10).await.unwrap().unwrap().ids(), vec![job.id]);
}

macro_rules! contract {
    ($backend:ident: $($test:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $test() {
                    let (queue, _prefix) = super::$backend().await;
                    super::$test(queue).await;
                }
            )*
        }
    };
}

contract!(sqlite:
    a_job_goes_from_queued_to_running_to_succeeded,
    a_lane_runs_one_batch_at_a_time_in_acceptance_order,
    pending_jobs_for_one_target_merge_with_later_keys_winning,
    an_idempotency_key_makes_one_job_even_under_concurrency,
    a_synchronous_key_keeps_its_answer_or_is_forgotten,
    a_job_past_its_horizon_is_dead_listed_and_replayable,
    a_replayed_job_never_writes_over_a_newer_value,
    a_released_batch_runs_again,
);

contract!(redis:
    a_job_goes_from_queued_to_running_to_succeeded,
    a_lane_runs_one_batch_at_a_time_in_acceptance_order,
    pending_jobs_for_one_target_merge_with_later_keys_winning,
    an_idempotency_key_makes_one_job_even_under_concurrency,
    a_synchronous_key_keeps_its_answer_or_is_forgotten,
    a_job_past_its_horizon_is_dead_listed_and_replayable,
    a_replayed_job_never_writes_over_a_newer_value,
    a_released_batch_runs_again,
);

#[tokio::test]
async fn on_redis_a_lane_whose_replica_died_is_reclaimed_when_its_lease_ends() {
    let (q, _prefix) = redis_with_lease(Duration::from_millis(300)).await;
    let job = created(
        &*q,
        update(SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_AGENT, &[("a", "1")]),
    )
    .await;
    let _held_by_a_dead_replica = q.claim(10).await.unwrap().unwrap();
    assert!(q.claim(10).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let reclaimed = q.claim(10).await.unwrap().expect("the lease ended");
    assert_eq!(reclaimed.ids(), vec![job.id.clone()]);
    assert_eq!(q.get(&job.id).await.unwrap().unwrap().attempts, 2);
}
