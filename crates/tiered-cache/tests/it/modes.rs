//! The knobs a server needs beyond plain cache-aside: L1 turned off (an "L2 only" mode to
//! compare against), labels kept in L1 only (a local copy of something already in Redis), and
//! the bus barrier that lets a request on one instance see another instance's invalidation at
//! once.

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

    // An invalidation on a reaches b: after its barrier, b refills.
    a.invalidate(&ns).await;
    b.sync().await;
    assert_eq!(
        b.get_or_fill(&key, fills.value("gone")).await.unwrap(),
        "gone"
    );
}

/// The read-your-writes rule across instances: after `a.invalidate` returns, a request that
/// reaches `b` calls `b.sync()` and must not see what was cached before. Repeated, because
/// without the barrier `b`'s bus often has not applied the message yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sync_an_invalidation_made_elsewhere_is_always_seen() {
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
        b.sync().await;
        let next = Bytes::from(format!("{round}+"));
        let fill = move |_: FillContext| async move { Ok::<_, Boom>(next) };
        assert_eq!(
            b.get_or_fill(&key, fill).await.unwrap(),
            format!("{round}+"),
            "round {round}: b served a value cached before a's invalidation"
        );
    }
    assert_eq!(b.snapshot().sync_timeouts, 0);
}

#[tokio::test]
async fn sync_without_redis_returns_at_once() {
    let cache = tiered_cache::TieredCache::builder()
        .build()
        .await
        .expect("build");
    tokio::time::timeout(Duration::from_millis(100), cache.sync())
        .await
        .expect("sync without Redis must not wait");
}
