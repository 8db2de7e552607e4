//! The knobs a server needs beyond plain cache-aside: L1 turned off (an "L2 only" mode to
//! compare against), labels kept in L1 only (a local copy of something already in Redis), and
//! the bus barrier with which a writer makes sure every instance has applied its invalidations
//! before it answers.

use std::time::Duration;

use tiered_cache::{Bytes, FillContext, Namespace, Policy};

use crate::support::{builder, cache, Boom, Fills, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_l1_off_every_read_is_served_by_l2() {
    let redis = RedisServer::start();
    let cache = builder(&redis)
        .l1_max_bytes(0)
        .build()
        .await
        .expect("build");
    let key = Namespace::with_hash_tag("acme", "contacts", "contacts").key("page=1");
    let fills = Fills::default();
    for _ in 0..3 {
        assert_eq!(
            cache.get_or_fill(&key, fills.value("v1")).await.unwrap(),
            "v1"
        );
    }
    assert_eq!(fills.count(), 1);
    let s = cache.snapshot();
    let contacts = &s.labels["contacts"];
    assert_eq!((contacts.l1.hits, contacts.l2.hits), (0, 2));
    assert_eq!((s.l1_entries, s.l1_bytes), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_only_label_stays_out_of_redis_but_is_invalidated_everywhere() {
    let redis = RedisServer::start();
    let local = || {
        builder(&redis)
            .policy(
                "sessions",
                Policy::new(Duration::from_secs(60)).local_only(),
            )
            .build()
    };
    let (a, b) = (local().await.expect("a"), local().await.expect("b"));
    let ns = Namespace::new("sessions/7", "sessions");
    let key = ns.key("token-hash");
    let fills = Fills::default();

    assert_eq!(
        a.get_or_fill(&key, fills.value("alice")).await.unwrap(),
        "alice"
    );
    assert_eq!(
        a.get_or_fill(&key, fills.value("xx")).await.unwrap(),
        "alice"
    );
    // Not in L2: b fills its own copy.
    assert_eq!(
        b.get_or_fill(&key, fills.value("alice")).await.unwrap(),
        "alice"
    );
    assert_eq!(fills.count(), 2);
    let keys = redis.command(&["KEYS", "*"]);
    assert!(
        !keys.contains("token-hash"),
        "a local-only value reached Redis: {keys}"
    );
    assert!(
        keys.contains("sessions/7"),
        "its generation is in Redis: {keys}"
    );

    // An invalidation on a reaches b: after a's barrier, b refills.
    a.invalidate(&ns).await;
    a.sync_peers().await;
    assert_eq!(
        b.get_or_fill(&key, fills.value("gone")).await.unwrap(),
        "gone"
    );
}

/// The read-your-writes rule across instances: after `a.invalidate` and `a.sync_peers()`
/// return (the writer answers), a request that reaches `b` must not see what was cached
/// before. Repeated, because without the barrier `b`'s bus often has not applied the message
/// yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_writers_barrier_an_invalidation_is_seen_everywhere() {
    let redis = RedisServer::start();
    let (a, b) = (cache(&redis).await, cache(&redis).await);
    let ns = Namespace::with_hash_tag("acme", "deals", "deals");
    let key = ns.key("open=true");
    for round in 0..300u32 {
        let value = Bytes::from(round.to_string());
        let fill = move |_: FillContext| async move { Ok::<_, Boom>(value) };
        // b holds a value in L1 (this round's, or the previous round's refill).
        let before = b.get_or_fill(&key, fill).await.unwrap();
        assert_eq!(b.get(&key).await, Some(before));
        a.invalidate(&ns).await;
        a.sync_peers().await;
        let next = Bytes::from(format!("{round}+"));
        let fill = move |_: FillContext| async move { Ok::<_, Boom>(next) };
        assert_eq!(
            b.get_or_fill(&key, fill).await.unwrap(),
            format!("{round}+"),
            "round {round}: b served a value cached before a's invalidation"
        );
    }
    assert_eq!(a.snapshot().sync_timeouts, 0);
}

#[tokio::test]
async fn the_barrier_without_redis_returns_at_once() {
    let cache = tiered_cache::TieredCache::builder()
        .build()
        .await
        .expect("build");
    tokio::time::timeout(Duration::from_millis(100), cache.sync_peers())
        .await
        .expect("sync without Redis must not wait");
}

/// A subscriber that never acknowledges (here a plain pub/sub client; in production an
/// overloaded instance, or someone watching the channel with `redis-cli`) costs a write the L2
/// timeout, is counted, and changes nothing for the instances that do acknowledge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_subscriber_delays_the_barrier_by_the_timeout_only() {
    let redis = RedisServer::start();
    let quick = || {
        builder(&redis)
            .l2_timeout(Duration::from_millis(300))
            .build()
    };
    let (a, b) = (quick().await.expect("a"), quick().await.expect("b"));
    let ns = Namespace::with_hash_tag("acme", "deals", "deals");
    let key = ns.key("open=true");
    let fills = Fills::default();

    a.sync_peers().await;
    assert_eq!(a.snapshot().sync_timeouts, 0, "a and b both acknowledge");

    let client = redis::Client::open(redis.url()).expect("url");
    let mut watcher = client.get_async_pubsub().await.expect("connect");
    watcher
        .subscribe("tc:invalidations")
        .await
        .expect("subscribe");

    assert_eq!(
        b.get_or_fill(&key, fills.value("old")).await.unwrap(),
        "old"
    );
    a.invalidate(&ns).await;
    tokio::time::timeout(Duration::from_secs(10), a.sync_peers())
        .await
        .expect("the barrier gives up after its timeout");
    assert_eq!(a.snapshot().sync_timeouts, 1);
    // b acknowledged, so it has applied the invalidation.
    assert_eq!(
        b.get_or_fill(&key, fills.value("new")).await.unwrap(),
        "new"
    );

    drop(watcher);
    crate::support::eventually("barriers pass again once the watcher is gone", || async {
        let before = a.snapshot().sync_timeouts;
        a.sync_peers().await;
        a.snapshot().sync_timeouts == before
    })
    .await;
}
