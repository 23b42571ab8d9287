//! One contract per store, two versions: every store's tests run against this process's version and
//! the Redis one, so a single replica and a deployment of several behave alike. (The queue's
//! contract is `queue_contract`.)

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use patchbay::config::RedisSettings;
use patchbay::domain::lookup::{Lookup, LookupKey, MediaType, Pick};
use patchbay::domain::ConversationId;
use patchbay::journal::Journal;
use patchbay::store::budget::{local::LocalBudget, redis::RedisBudget, Budget, CallBudget};
use patchbay::store::channels::{local::LocalSlots, redis::RedisSlots, ChannelSlots};
use patchbay::store::finds::{local::LocalFinds, redis::RedisFinds, Finds};
use patchbay::store::journal::{redis::RedisJournal, ring::Ring, JournalStore};
use patchbay::store::records::{local::LocalRecords, redis::RedisRecords, KnownRecord, Records};
use patchbay::store::token::{local::LocalToken, redis::RedisToken, TokenStore};
use patchbay::store::Redis;
use secrecy::{ExposeSecret, SecretString};

use crate::helpers::*;

/// A Redis connection under a prefix of its own, deleted when the prefix is dropped.
async fn redis() -> (Redis, RedisPrefix) {
    let prefix = RedisPrefix::new().await;
    let settings = RedisSettings {
        url: prefix.url.clone().into(),
        key_prefix: prefix.name.clone(),
        timeout_ms: 1000,
    };
    (Redis::connect(&settings).unwrap(), prefix)
}

/// Each version of a store, named, with the Redis prefix that must outlive it.
async fn both<T: ?Sized>(
    local: Arc<T>,
    on_redis: impl FnOnce(Redis) -> Arc<T>,
) -> Vec<(&'static str, Arc<T>, Option<RedisPrefix>)> {
    let (redis, prefix) = redis().await;
    vec![
        ("this process", local, None),
        ("redis", on_redis(redis), Some(prefix)),
    ]
}

#[tokio::test]
async fn a_budget_lets_a_full_minute_go_at_once_and_refuses_the_next_call_with_the_wait() {
    let budget = Budget { per_minute: 3 };
    for (name, store, _prefix) in both::<dyn CallBudget>(Arc::new(LocalBudget::new(budget)), |r| {
        Arc::new(RedisBudget::new(budget, r))
    })
    .await
    {
        let slots = store.reserve(3, Duration::ZERO).await.unwrap();
        assert_eq!(slots.len(), 3, "{name}");
        let refused = store.reserve(1, Duration::from_secs(1)).await.unwrap_err();
        assert!(
            refused.0 > Duration::from_secs(55) && refused.0 <= Duration::from_secs(60),
            "{name}: the 4th call waits for the 1st to leave the minute, not {:?}",
            refused.0
        );
        // A refusal reserves nothing, and a check never does.
        assert!(
            store.check(1, Duration::from_secs(61)).await.is_ok(),
            "{name}"
        );
        assert_eq!(store.standing().await.used, 3, "{name}");
    }
}

#[tokio::test]
async fn a_budget_paused_by_a_429_holds_every_call_back_and_an_operations_pause_only_that_one() {
    let budget = Budget { per_minute: 300 };
    for (name, store, _prefix) in both::<dyn CallBudget>(Arc::new(LocalBudget::new(budget)), |r| {
        Arc::new(RedisBudget::new(budget, r))
    })
    .await
    {
        store
            .pause_operation("analytics", Duration::from_secs(20))
            .await;
        let left = store.operation_paused("analytics").await.expect(name);
        assert!(left > Duration::from_secs(18), "{name}: {left:?}");
        assert_eq!(store.operation_paused("conversation").await, None, "{name}");
        store.reserve(1, Duration::ZERO).await.expect(name);

        store.pause(Duration::from_secs(30)).await;
        let refused = store.reserve(1, Duration::from_secs(1)).await.unwrap_err();
        assert!(refused.0 > Duration::from_secs(28), "{name}: {refused:?}");
        assert!(store.standing().await.paused_for.is_some(), "{name}");
    }
}

#[tokio::test]
async fn a_budget_takes_genesys_at_its_word_a_lower_limit_and_calls_it_counted_elsewhere() {
    let budget = Budget { per_minute: 300 };
    for (name, store, _prefix) in both::<dyn CallBudget>(Arc::new(LocalBudget::new(budget)), |r| {
        Arc::new(RedisBudget::new(budget, r))
    })
    .await
    {
        store
            .observe(patchbay::store::budget::Reported {
                count: 4,
                allowed: 5,
                reset: Duration::from_secs(40),
            })
            .await;
        let standing = store.standing().await;
        assert_eq!((standing.used, standing.limit), (4, 5), "{name}");
        store.reserve(1, Duration::ZERO).await.expect(name);
        assert!(store.reserve(1, Duration::ZERO).await.is_err(), "{name}");
    }
}

#[tokio::test]
async fn channel_slots_never_pass_the_limit_and_a_released_one_is_free_again() {
    for (name, store, _prefix) in both::<dyn ChannelSlots>(Arc::new(LocalSlots::new(2)), |r| {
        Arc::new(RedisSlots::new(2, r))
    })
    .await
    {
        let a = store.acquire().await.expect(name);
        let b = store.acquire().await.expect(name);
        assert_ne!(a, b, "{name}");
        assert!(store.acquire().await.is_none(), "{name}");
        assert!(store.renew(&b).await, "{name}");
        store.release(a).await;
        assert!(store.acquire().await.is_some(), "{name}");
    }
}

#[tokio::test]
async fn on_redis_channel_slots_are_the_deployments_not_each_replicas() {
    let (redis, _prefix) = redis().await;
    let (one, two) = (RedisSlots::new(1, redis.clone()), RedisSlots::new(1, redis));
    let held = one.acquire().await.unwrap();
    assert!(two.acquire().await.is_none(), "one slot for the deployment");
    assert!(
        !two.renew(&held).await,
        "a replica cannot keep another's slot"
    );
    one.release(held).await;
    assert!(two.acquire().await.is_some());
}

fn lookup(number: &str) -> Lookup {
    Lookup {
        key: LookupKey::Ani(FromStr::from_str(number).unwrap()),
        media_type: MediaType::voice(),
        pick: Pick::Only,
    }
}

fn cid(n: u8) -> ConversationId {
    format!("6f1d8c62-3b3e-4f0a-9a57-2d4c8e1b7a{n:02}")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn finds_are_kept_and_a_stale_one_is_forgotten_but_never_a_newer_one() {
    let ttl = Duration::from_secs(60);
    for (name, store, _prefix) in both::<dyn Finds>(Arc::new(LocalFinds::new(ttl)), |r| {
        Arc::new(RedisFinds::new(LocalFinds::new(ttl), r, SECRET))
    })
    .await
    {
        let (caller, other) = (lookup("+13175550123"), lookup("+13175550999"));
        assert_eq!(store.get(&caller).await, None, "{name}");
        store.insert(&caller, cid(1)).await;
        assert_eq!(store.get(&caller).await, Some(cid(1)), "{name}");
        assert_eq!(store.get(&other).await, None, "{name}");
        // Forgetting an older find keeps the newer one.
        store.forget(&caller, cid(2)).await;
        assert_eq!(store.get(&caller).await, Some(cid(1)), "{name}");
        store.forget(&caller, cid(1)).await;
        assert_eq!(store.get(&caller).await, None, "{name}");
    }
}

#[tokio::test]
async fn finds_with_no_time_to_live_keep_nothing() {
    for (name, store, _prefix) in
        both::<dyn Finds>(Arc::new(LocalFinds::new(Duration::ZERO)), |r| {
            Arc::new(RedisFinds::new(LocalFinds::new(Duration::ZERO), r, SECRET))
        })
        .await
    {
        store.insert(&lookup("+13175550123"), cid(1)).await;
        assert_eq!(store.get(&lookup("+13175550123")).await, None, "{name}");
    }
}

#[tokio::test]
async fn on_redis_one_replicas_find_serves_another_and_its_forgetting_reaches_every_replica() {
    let (redis, _prefix) = redis().await;
    let ttl = Duration::from_secs(60);
    let one = RedisFinds::new(LocalFinds::new(ttl), redis.clone(), SECRET);
    let two = RedisFinds::new(LocalFinds::new(ttl), redis.clone(), SECRET);
    let caller = lookup("+13175550123");
    one.insert(&caller, cid(1)).await;
    assert_eq!(two.get(&caller).await, Some(cid(1)));
    two.forget(&caller, cid(1)).await;
    // A replica that has not seen the find yet asks Redis, which forgot it.
    let three = RedisFinds::new(LocalFinds::new(ttl), redis.clone(), SECRET);
    assert_eq!(three.get(&caller).await, None);
    // The keys are the deployment's: one with another OAuth client's secret finds nothing of them.
    one.insert(&caller, cid(2)).await;
    let other = RedisFinds::new(LocalFinds::new(ttl), redis, b"another client's secret");
    assert_eq!(other.get(&caller).await, None);
    assert_eq!(three.get(&caller).await, Some(cid(2)));
}

/// What a read of a record at `version` showed.
fn known(version: i64) -> KnownRecord {
    KnownRecord {
        version,
        divisions: vec!["a1b2c3d4-0000-4000-8000-000000000001".into()],
        timestamps: [(
            "caseNumber".to_string(),
            format!("2026-12-07T12:00:0{version}.000Z"),
        )]
        .into(),
    }
}

#[tokio::test]
async fn what_is_known_of_a_record_is_kept_never_replaced_by_an_older_read_and_forgotten() {
    for (name, store, _prefix) in both::<dyn Records>(Arc::new(LocalRecords::default()), |r| {
        Arc::new(RedisRecords::new(r))
    })
    .await
    {
        let (record, other) = ((cid(1), "r-1".to_string()), (cid(1), "r-2".to_string()));
        assert_eq!(store.get(&record).await, None, "{name}");
        store.insert(&record, &known(2)).await;
        assert_eq!(store.get(&record).await, Some(known(2)), "{name}");
        assert_eq!(store.get(&other).await, None, "{name}");
        // A slower read of an older version does not put it back.
        store.insert(&record, &known(1)).await;
        assert_eq!(store.get(&record).await, Some(known(2)), "{name}");
        store.insert(&record, &known(3)).await;
        assert_eq!(store.get(&record).await, Some(known(3)), "{name}");
        store.forget(&record).await;
        assert_eq!(store.get(&record).await, None, "{name}");
    }
}

#[tokio::test]
async fn on_redis_what_one_replica_read_of_a_record_serves_another() {
    let (redis, _prefix) = redis().await;
    let (one, two) = (RedisRecords::new(redis.clone()), RedisRecords::new(redis));
    let record = (cid(1), "r-1".to_string());
    one.insert(&record, &known(1)).await;
    assert_eq!(two.get(&record).await, Some(known(1)));
    two.forget(&record).await;
    assert_eq!(one.get(&record).await, None);
}

#[tokio::test]
async fn on_redis_one_replica_at_a_time_claims_an_unknown_records_creation() {
    let (redis, _prefix) = redis().await;
    let (one, two) = (RedisRecords::new(redis.clone()), RedisRecords::new(redis));
    let record = (cid(1), "r-1".to_string());
    let hold = Duration::from_secs(10);
    assert!(one.claim_create(&record, "one", hold).await);
    assert!(
        !two.claim_create(&record, "two", hold).await,
        "held by the first"
    );
    assert!(
        two.claim_create(&(cid(1), "r-2".to_string()), "two", hold)
            .await,
        "another record is another claim"
    );
    // Only the holder ends its claim.
    two.end_claim(&record, "two").await;
    assert!(!two.claim_create(&record, "two", hold).await);
    one.end_claim(&record, "one").await;
    assert!(two.claim_create(&record, "two", hold).await);
    // A claim lapses on its own when its holder died before ending it.
    let lapsing = (cid(2), "r-1".to_string());
    assert!(
        one.claim_create(&lapsing, "one", Duration::from_millis(50))
            .await
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(two.claim_create(&lapsing, "two", hold).await);
}

#[tokio::test]
async fn in_one_process_a_records_creation_is_always_its_own_lanes() {
    let store = LocalRecords::default();
    let record = (cid(1), "r-1".to_string());
    let hold = Duration::from_secs(10);
    assert!(store.claim_create(&record, "one", hold).await);
    assert!(store.claim_create(&record, "two", hold).await);
}

/// The OAuth client's secret every replica of the test deployment holds, which keys its finds.
const SECRET: &[u8] = b"the deployment's client secret";

#[tokio::test]
async fn a_journal_answers_the_newest_entries_first_and_no_more_than_asked() {
    for (name, store, _prefix) in both::<dyn JournalStore>(Arc::new(Ring::new(50)), |r| {
        Arc::new(RedisJournal::new(r, 50))
    })
    .await
    {
        let journal = Journal::new(store.clone(), "replica-a", false, 50);
        for n in 0..5 {
            let mut entry = journal.begin("api", &format!("request-{n}"));
            entry.writes(&BTreeMap::from([("vip".into(), "true".into())]));
            store.push(&entry).await.expect(name);
        }
        let recent = store.recent(3).await.expect(name);
        let ids: Vec<_> = recent.iter().map(|e| e.request_id.as_str()).collect();
        assert_eq!(ids, ["request-4", "request-3", "request-2"], "{name}");
        assert_eq!(recent[0].replica, "replica-a", "{name}");
    }
}

#[tokio::test]
async fn a_token_store_answers_with_the_grants_token_less_the_margin_and_grants_nothing_more() {
    let margin = Duration::from_secs(60);
    for (name, store, _prefix) in
        both::<dyn TokenStore>(Arc::new(LocalToken), |r| Arc::new(RedisToken::new(r))).await
    {
        let grants = AtomicU32::new(0);
        let grant = || {
            grants.fetch_add(1, Ordering::SeqCst);
            async { Ok((SecretString::from("token-1"), Duration::from_secs(3600))) }
        };
        let (token, usable) = store.get(margin, Box::pin(grant())).await.expect(name);
        assert_eq!(token.expose_secret(), "token-1", "{name}");
        assert!(
            usable <= Duration::from_secs(3540) && usable > Duration::from_secs(3530),
            "{name}: {usable:?}"
        );
        assert_eq!(grants.load(Ordering::SeqCst), 1, "{name}");
        store.invalidate("token-1").await.expect(name);
    }
}

#[tokio::test]
async fn on_redis_the_token_is_granted_once_for_every_replica_and_dropped_only_while_still_refused()
{
    let (redis, _prefix) = redis().await;
    let (one, two) = (RedisToken::new(redis.clone()), RedisToken::new(redis));
    let margin = Duration::from_secs(60);
    let granted = |token: &'static str| {
        Box::pin(async move { Ok((SecretString::from(token), Duration::from_secs(3600))) })
    };
    let (first, _) = one.get(margin, granted("token-1")).await.unwrap();
    let (seen, _) = two.get(margin, granted("token-2")).await.unwrap();
    assert_eq!(
        seen.expose_secret(),
        first.expose_secret(),
        "no second grant"
    );
    // A refusal of a token already replaced drops nothing.
    two.invalidate("some-older-token").await.unwrap();
    let (still, _) = two.get(margin, granted("token-3")).await.unwrap();
    assert_eq!(still.expose_secret(), "token-1");
    two.invalidate("token-1").await.unwrap();
    let (renewed, _) = one.get(margin, granted("token-4")).await.unwrap();
    assert_eq!(renewed.expose_secret(), "token-4");
}
