//! Two instances sharing one Redis, as two servers would: L2 is shared, and each instance's
//! invalidations, sets and deletes reach the other's L1 over the bus, also across a lost
//! subscription.
//! Never assumes the bus is instant: anything crossing instances is polled for (up to 10 s).

use tiered_cache::{L2Status, Namespace};

use crate::support::{cache, eventually, Fills, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_l2_and_see_each_others_invalidations() {
    let redis = RedisServer::start();
    let a = cache(&redis).await;
    let b = cache(&redis).await;
    let ns = Namespace::with_hash_tag("acme", "contacts", "contacts");
    let key = ns.key("page=1");
    let fills = Fills::default();

    assert_eq!(a.get_or_fill(&key, fills.value("v1")).await.unwrap(), "v1");
    // b finds it in L2, then holds it in its own L1.
    assert_eq!(b.get_or_fill(&key, fills.value("xx")).await.unwrap(), "v1");
    assert_eq!(b.get_or_fill(&key, fills.value("xx")).await.unwrap(), "v1");
    assert_eq!(fills.count(), 1);
    let stats = b.snapshot().labels["contacts"].clone();
    assert_eq!((stats.l2.hits, stats.l1.hits), (1, 1));

    // An invalidation on a reaches b's L1 over the bus.
    a.invalidate(&ns).await;
    eventually("b drops its L1 copy after a's invalidation", || {
        let (b, key, fills) = (b.clone(), key.clone(), fills.clone());
        async move { b.get_or_fill(&key, fills.value("v2")).await.unwrap() == "v2" }
    })
    .await;
    assert_eq!(b.snapshot().labels["contacts"].invalidations, 1);
    // And the other way round.
    assert_eq!(a.get_or_fill(&key, fills.value("v2a")).await.unwrap(), "v2");
    b.invalidate(&ns).await;
    eventually("a drops its L1 copy after b's invalidation", || {
        let (a, key, fills) = (a.clone(), key.clone(), fills.clone());
        async move { a.get_or_fill(&key, fills.value("v3")).await.unwrap() == "v3" }
    })
    .await;

    // Keys carry the caller's hash tag (one Redis Cluster slot per tenant).
    let keys = redis.command(&["KEYS", "*"]);
    assert!(keys.contains("tc:{acme}/contacts:g"), "{keys}");
    assert!(keys.contains(":page=1"), "{keys}");
    assert!(
        keys.lines()
            .filter(|l| l.starts_with("tc:"))
            .all(|l| l.starts_with("tc:{acme}/contacts:")),
        "{keys}"
    );
    // No SCAN/KEYS from the cache: an invalidation is one small script, whatever the number
    // of keys (the KEYS above is the test's own, counted once).
    let stats = redis.command(&["INFO", "commandstats"]);
    assert!(stats.contains("cmdstat_keys:calls=1,"), "{stats}");
    assert!(!stats.contains("cmdstat_scan"), "{stats}");
    assert_eq!(a.health().await.l2, L2Status::Up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_and_delete_reach_the_other_instance() {
    let redis = RedisServer::start();
    let a = cache(&redis).await;
    let b = cache(&redis).await;
    let key = Namespace::with_hash_tag("acme", "contacts", "contacts").key("c1");
    let fills = Fills::default();

    a.set(&key, "one").await;
    assert_eq!(b.get_or_fill(&key, fills.value("xx")).await.unwrap(), "one");
    assert_eq!(fills.count(), 0);

    a.set(&key, "two").await;
    eventually("b drops its L1 copy after a's set", || {
        let (b, key) = (b.clone(), key.clone());
        async move { b.get(&key).await.is_some_and(|v| v == "two") }
    })
    .await;

    b.delete(&key).await;
    assert_eq!(b.get(&key).await, None);
    eventually("a drops its L1 copy after b's delete", || {
        let (a, key) = (a.clone(), key.clone());
        async move { a.get(&key).await.is_none() }
    })
    .await;
}

/// After a lost subscription an instance may have missed invalidations: once it is subscribed
/// again it must not serve what it held before without re-reading the generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscription_makes_the_instance_revalidate() {
    let redis = RedisServer::start();
    let a = cache(&redis).await;
    let b = cache(&redis).await;
    let ns = Namespace::with_hash_tag("acme", "contacts", "contacts");
    let key = ns.key("page=1");
    let fills = Fills::default();
    assert_eq!(b.get_or_fill(&key, fills.value("v1")).await.unwrap(), "v1");
    assert_eq!(b.snapshot().bus_subscribes, 1);

    // Cut every pub/sub connection, then invalidate while b is not listening.
    assert!(redis
        .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .starts_with(':'));
    a.invalidate(&ns).await;

    eventually("b resubscribes", || {
        let b = b.clone();
        async move { b.snapshot().bus_subscribes >= 2 }
    })
    .await;
    // Whether or not b heard the invalidation, it must not serve v1 now.
    assert_eq!(b.get_or_fill(&key, fills.value("v2")).await.unwrap(), "v2");
}
