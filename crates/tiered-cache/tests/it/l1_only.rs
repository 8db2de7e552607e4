//! Without a Redis URL the cache is L1 only (the server's embedded mode): same API, same rules.
//! Never starts a Redis: these tests must pass on a machine without one.

use std::time::Duration;

use tiered_cache::{BreakerState, L2Status, Namespace, Policy, TieredCache};

use crate::support::{l1_only, Fills};

#[tokio::test]
async fn fills_once_then_hits_and_invalidates() {
    let cache = l1_only().await;
    let ns = Namespace::new("acme:contacts", "contacts");
    let key = ns.key("page=1");
    let fills = Fills::default();

    assert_eq!(
        cache.get_or_fill(&key, fills.value("v1")).await.unwrap(),
        "v1"
    );
    assert_eq!(
        cache.get_or_fill(&key, fills.value("v2")).await.unwrap(),
        "v1"
    );
    assert_eq!(fills.count(), 1);

    cache.invalidate(&ns).await;
    assert_eq!(
        cache.get_or_fill(&key, fills.value("v2")).await.unwrap(),
        "v2"
    );
    assert_eq!(fills.count(), 2);

    // Another namespace is untouched by that invalidation.
    let other = Namespace::new("globex:contacts", "contacts").key("page=1");
    assert_eq!(
        cache.get_or_fill(&other, fills.value("g1")).await.unwrap(),
        "g1"
    );
    cache.invalidate(&ns).await;
    assert_eq!(
        cache.get_or_fill(&other, fills.value("g2")).await.unwrap(),
        "g1"
    );

    let stats = cache.snapshot();
    let contacts = &stats.labels["contacts"];
    assert_eq!(contacts.l1.hits, 2);
    assert_eq!(contacts.l1.misses, 3);
    assert_eq!(contacts.fills_stored, 3);
    assert_eq!(contacts.invalidations, 2);
    assert_eq!(stats.breaker, BreakerState::Closed);
    assert!(stats.bus_connected);
    assert_eq!(stats.l1_entries, 3);

    let health = cache.health().await;
    assert_eq!(health.l2, L2Status::Disabled);

    cache.reset_stats();
    let stats = cache.snapshot();
    assert_eq!(stats.labels["contacts"].l1.hits, 0);
    // The snapshot is what an operator route returns.
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["labels"]["contacts"]["fills"], 0);
}

#[tokio::test]
async fn set_get_delete_and_ttl() {
    let cache = TieredCache::builder()
        .policy(
            "short",
            Policy::new(Duration::from_millis(200)).l1_ttl(Duration::from_millis(200)),
        )
        .build()
        .await
        .unwrap();
    let key = Namespace::new("t:x", "short").key("k");
    assert_eq!(cache.get(&key).await, None);
    cache.set(&key, "set").await;
    assert_eq!(cache.get(&key).await.unwrap(), "set");
    cache.delete(&key).await;
    assert_eq!(cache.get(&key).await, None);

    let fills = Fills::default();
    cache.warm(&key, fills.value("warm")).await.unwrap();
    assert_eq!(cache.get(&key).await.unwrap(), "warm");
    // Entries expire with their TTL.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cache.get(&key).await, None);
}

#[tokio::test]
async fn l1_stays_within_its_byte_bound() {
    const MAX: u64 = 256 << 10;
    let cache = TieredCache::builder()
        .l1_max_bytes(MAX)
        .build()
        .await
        .unwrap();
    let ns = Namespace::new("t:big", "big");
    let value: &'static str = Box::leak("x".repeat(1000).into_boxed_str());
    let fills = Fills::default();
    for i in 0..2000 {
        cache
            .get_or_fill(&ns.key(i.to_string()), fills.value(value))
            .await
            .unwrap();
        if i % 100 == 0 {
            assert!(cache.snapshot().l1_bytes <= MAX);
        }
    }
    let stats = cache.snapshot();
    assert!(stats.l1_bytes <= MAX, "{} > {MAX}", stats.l1_bytes);
    // About 2 MB went in; far fewer entries than that fit.
    assert!(stats.l1_entries < 260, "{} entries", stats.l1_entries);
    assert!(stats.l1_entries > 100, "{} entries", stats.l1_entries);
    // A value heavier than the bound is served but not kept.
    let huge: &'static str = Box::leak("y".repeat(MAX as usize + 1).into_boxed_str());
    let key = ns.key("huge");
    assert_eq!(
        cache
            .get_or_fill(&key, fills.value(huge))
            .await
            .unwrap()
            .len(),
        huge.len()
    );
    assert_eq!(cache.get(&key).await, None);
    assert!(cache.snapshot().l1_bytes <= MAX);
}
