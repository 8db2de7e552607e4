//! Redis trouble is never the caller's error: killing Redis mid-test, and pausing it, the cache
//! keeps serving from L1 and fill, and recovers by itself when Redis is back.
//! Never expects a caller to see an error while Redis is away.

use std::time::Duration;

use tiered_cache::{BreakerState, L2Status, Namespace, TieredCache};

use crate::support::{builder, eventually, Fills, RedisServer};

async fn outage_cache(redis: &RedisServer) -> TieredCache {
    builder(redis)
        .l2_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(500))
        .breaker(3, Duration::from_millis(200))
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_causes_no_error_and_the_cache_recovers() {
    let mut redis = RedisServer::start();
    let a = outage_cache(&redis).await;
    let b = outage_cache(&redis).await;
    let ns = Namespace::new("acme:contacts", "contacts");
    let key = ns.key("page=1");
    let fills = Fills::default();
    assert_eq!(a.get_or_fill(&key, fills.value("v1")).await.unwrap(), "v1");
    assert_eq!(b.get_or_fill(&key, fills.value("xx")).await.unwrap(), "v1");

    redis.kill();
    // Every call still answers: from L1 or from fill.
    for i in 0..50 {
        let k = ns.key(format!("during-{}", i % 5));
        assert_eq!(
            a.get_or_fill(&k, fills.value("during")).await.unwrap(),
            "during"
        );
        assert_eq!(a.get_or_fill(&key, fills.value("v1")).await.unwrap(), "v1");
        a.set(&ns.key("set"), "s").await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eventually("the breaker opens and the bus reports the loss", || {
        let a = a.clone();
        async move {
            let s = a.snapshot();
            s.breaker != BreakerState::Closed && !s.bus_connected
        }
    })
    .await;
    assert_eq!(a.health().await.l2, L2Status::Down);
    let errors = a.snapshot();
    assert!(errors.l2_errors + errors.l2_timeouts > 0);
    assert!(errors.l2_skipped > 0);

    // An invalidation during the outage applies locally at once...
    a.invalidate(&ns).await;
    assert_eq!(a.get_or_fill(&key, fills.value("v2")).await.unwrap(), "v2");

    redis.restart();
    eventually("a recovers: breaker closed, bus subscribed", || {
        let (a, k) = (a.clone(), ns.key("probe"));
        async move {
            let _ = a
                .get_or_fill(&k, |_| async { Ok::<_, crate::support::Boom>("p") })
                .await;
            let s = a.snapshot();
            s.breaker == BreakerState::Closed && s.bus_connected
        }
    })
    .await;
    assert_eq!(a.health().await.l2, L2Status::Up);
    // ...and b, which held v1 in L1 from before the outage, does not serve it any more.
    eventually(
        "b stops serving the value invalidated during the outage",
        || {
            let (b, key, fills) = (b.clone(), key.clone(), fills.clone());
            async move { b.get_or_fill(&key, fills.value("v3")).await.unwrap() != "v1" }
        },
    )
    .await;

    // L2 works again: what a fills now, b finds in Redis.
    let fresh = ns.key("after");
    eventually("a value filled after recovery reaches L2", || {
        let (a, b, fresh) = (a.clone(), b.clone(), fresh.clone());
        async move {
            let n = Fills::default();
            a.get_or_fill(&fresh, n.value("after")).await.unwrap();
            b.get(&fresh).await.is_some_and(|v| v == "after")
        }
    })
    .await;
}

/// A paused Redis (answers nothing, keeps its data) tests the slow path: timeouts, not refused
/// connections. An invalidation made meanwhile must reach the other instance afterwards
/// (replayed), since Redis still holds the old generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_times_out_and_missed_invalidations_are_replayed() {
    let redis = RedisServer::start();
    let a = outage_cache(&redis).await;
    let b = outage_cache(&redis).await;
    let ns = Namespace::new("acme:deals", "deals");
    let key = ns.key("list");
    let fills = Fills::default();
    assert_eq!(a.get_or_fill(&key, fills.value("v1")).await.unwrap(), "v1");
    assert_eq!(b.get_or_fill(&key, fills.value("xx")).await.unwrap(), "v1");

    assert!(redis
        .command(&["CLIENT", "PAUSE", "3000", "ALL"])
        .starts_with("+OK"));
    // The invalidation times out in Redis and applies locally.
    a.invalidate(&ns).await;
    assert_eq!(a.get_or_fill(&key, fills.value("v2")).await.unwrap(), "v2");
    // Fills keep answering while Redis stalls.
    for i in 0..10 {
        let k = ns.key(format!("stall-{i}"));
        assert_eq!(a.get_or_fill(&k, fills.value("s")).await.unwrap(), "s");
    }

    // After the pause, a replays its invalidation; b hears it and drops v1.
    eventually("b learns the invalidation made while Redis stalled", || {
        let (b, key, fills) = (b.clone(), key.clone(), fills.clone());
        async move { b.get_or_fill(&key, fills.value("v3")).await.unwrap() != "v1" }
    })
    .await;
}

/// The first command after Redis comes back runs into the dead connection; it is retried once on
/// the new one, so the breaker's probe succeeds at once instead of counting another failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_call_after_a_restart_succeeds() {
    let mut redis = RedisServer::start();
    let a = outage_cache(&redis).await;
    let key = Namespace::new("t:r", "r").key("k");
    let fills = Fills::default();
    a.set(&key, "v").await;
    assert_eq!(a.get(&key).await.unwrap(), "v");

    redis.kill();
    redis.restart();
    // The cache has not noticed anything yet (no call since): its connection is dead.
    a.reset_stats();
    let other = Namespace::new("t:r", "r").key("other");
    assert_eq!(a.get_or_fill(&other, fills.value("x")).await.unwrap(), "x");
    let s = a.snapshot();
    assert_eq!(s.l2_errors + s.l2_timeouts, 0, "{s:?}");
    assert_eq!(s.breaker, BreakerState::Closed);
}

/// Redis can lose a generation without the bus noticing (eviction, FLUSHALL): the next store is
/// refused, and the namespace's generation is re-read (re-created) at once, not after
/// `generation_max_age`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_lost_in_redis_is_recreated() {
    let redis = RedisServer::start();
    let a = outage_cache(&redis).await;
    let ns = Namespace::new("t:lost", "lost");
    let fills = Fills::default();
    a.get_or_fill(&ns.key("1"), fills.value("v")).await.unwrap();
    assert!(redis.command(&["FLUSHALL"]).starts_with("+OK"));

    // This fill's store is refused (its generation is gone)...
    a.get_or_fill(&ns.key("2"), fills.value("v")).await.unwrap();
    // ...and the next one stores under a fresh generation.
    a.get_or_fill(&ns.key("3"), fills.value("v")).await.unwrap();
    assert_eq!(a.get(&ns.key("3")).await.unwrap(), "v");
    let s = &a.snapshot().labels["lost"];
    assert_eq!((s.fills_discarded, s.fills_stored), (1, 2), "{s:?}");
}
