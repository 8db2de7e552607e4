//! What happens around a fill: its timeout, its errors and panics, the fail-safe, and the rules
//! that refuse to store a value (lease, position, store condition).
//! Never asserts on timing beyond "the timeout fired": durations here are bounds, not speeds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tiered_cache::{CacheError, FillContext, Filled, Namespace, Policy, TieredCache};
use tokio::sync::oneshot;

use crate::support::{builder, cache, Boom, Fills, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_past_its_timeout_fails_every_waiter_and_frees_the_key() {
    let cache = TieredCache::builder()
        .fill_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let key = Namespace::new("t:slow", "slow").key("k");
    let hang = |_| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, Boom>("never")
    };
    let (a, b) = tokio::join!(cache.get_or_fill(&key, hang), cache.get_or_fill(&key, hang));
    for r in [a, b] {
        assert!(matches!(r, Err(CacheError::FillTimeout(d)) if d == Duration::from_millis(200)));
    }
    assert_eq!(cache.snapshot().labels["slow"].fill_timeouts, 1);
    // The key is not stuck behind the cancelled fill.
    let fills = Fills::default();
    assert_eq!(
        cache.get_or_fill(&key, fills.value("ok")).await.unwrap(),
        "ok"
    );
}

#[tokio::test]
async fn a_panicking_fill_is_an_error_not_a_hang() {
    let cache = TieredCache::builder().build().await.unwrap();
    let key = Namespace::new("t:p", "p").key("k");
    let r = cache
        .get_or_fill(&key, |_| async {
            if true {
                panic!("fill panicked on purpose");
            }
            Ok::<_, Boom>("never")
        })
        .await;
    assert!(matches!(r, Err(CacheError::FillAborted)));
    let fills = Fills::default();
    assert_eq!(
        cache.get_or_fill(&key, fills.value("ok")).await.unwrap(),
        "ok"
    );
}

#[tokio::test]
async fn fail_safe_serves_a_recently_expired_value_when_the_fill_fails() {
    let cache = TieredCache::builder()
        .policy(
            "fs",
            Policy::new(Duration::from_millis(100))
                .l1_ttl(Duration::from_millis(100))
                .fail_safe(Duration::from_secs(60)),
        )
        .policy(
            "plain",
            Policy::new(Duration::from_millis(100)).l1_ttl(Duration::from_millis(100)),
        )
        .build()
        .await
        .unwrap();
    let fills = Fills::default();
    let safe = Namespace::new("t:a", "fs").key("k");
    let plain = Namespace::new("t:a", "plain").key("k2");
    cache.get_or_fill(&safe, fills.value("old")).await.unwrap();
    cache.get_or_fill(&plain, fills.value("old")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;

    assert_eq!(
        cache.get_or_fill(&safe, fills.error()).await.unwrap(),
        "old"
    );
    assert_eq!(cache.snapshot().labels["fs"].stale_served, 1);
    assert!(cache.get_or_fill(&plain, fills.error()).await.is_err());
    // A successful fill replaces the stale value.
    assert_eq!(
        cache.get_or_fill(&safe, fills.value("new")).await.unwrap(),
        "new"
    );

    // Never across an invalidation.
    tokio::time::sleep(Duration::from_millis(150)).await;
    cache.invalidate(safe.namespace()).await;
    assert!(cache.get_or_fill(&safe, fills.error()).await.is_err());
}

/// The deterministic version of the race test: a fill that started before an invalidation
/// returns its value to its callers but never stores it, in Redis or in L1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_overtaken_by_an_invalidation_is_not_stored() {
    let redis = RedisServer::start();
    let a = cache(&redis).await;
    let b = cache(&redis).await;
    let ns = Namespace::new("acme:contacts", "contacts");
    let key = ns.key("page=1");

    let (started_tx, started_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let slow = move |_| async move {
        let _ = started_tx.send(());
        let _ = release_rx.await;
        Ok::<_, Boom>("old")
    };
    let in_flight = {
        let (a, key) = (a.clone(), key.clone());
        tokio::spawn(async move { a.get_or_fill(&key, slow).await })
    };
    started_rx.await.unwrap();
    // The write happens and is invalidated (from the other instance) while the fill runs.
    b.invalidate(&ns).await;
    release_tx.send(()).unwrap();
    assert_eq!(in_flight.await.unwrap().unwrap(), "old");
    assert_eq!(a.snapshot().labels["contacts"].fills_discarded, 1);

    // Neither instance ever sees "old" again.
    let fills = Fills::default();
    assert_eq!(
        b.get_or_fill(&key, fills.value("new")).await.unwrap(),
        "new"
    );
    assert_eq!(
        fills.count(),
        1,
        "b must not have found the old value in L2"
    );
    crate::support::eventually("a sees the new value", || {
        let (a, key, fills) = (a.clone(), key.clone(), fills.clone());
        async move { a.get_or_fill(&key, fills.value("newer")).await.unwrap() != "old" }
    })
    .await;
}

#[tokio::test]
async fn a_value_read_behind_the_last_invalidation_position_is_not_stored() {
    let cache = TieredCache::builder().build().await.unwrap();
    let ns = Namespace::new("acme:deals", "deals");
    let key = ns.key("list");
    cache.invalidate_at(&ns, 100).await;

    let seen = Arc::new(AtomicU64::new(0));
    let lagging = {
        let seen = seen.clone();
        move |ctx: FillContext| async move {
            seen.store(ctx.position(), Ordering::SeqCst);
            // A replica that has replayed only up to 50.
            Ok::<_, Boom>(Filled::new("from replica").at_position(50))
        }
    };
    assert_eq!(
        cache.get_or_fill(&key, lagging).await.unwrap(),
        "from replica"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 100);
    assert_eq!(
        cache.get(&key).await,
        None,
        "a lagging read must not be stored"
    );
    assert_eq!(cache.snapshot().labels["deals"].fills_refused, 1);

    let caught_up = |_| async { Ok::<_, Boom>(Filled::new("current").at_position(120)) };
    assert_eq!(cache.get_or_fill(&key, caught_up).await.unwrap(), "current");
    assert_eq!(cache.get(&key).await.unwrap(), "current");

    // Positions only grow: a later invalidation with a lower position keeps 100.
    cache.invalidate_at(&ns, 10).await;
    let check = |ctx: FillContext| async move {
        assert_eq!(ctx.position(), 100);
        Ok::<_, Boom>(Filled::new("x").uncacheable())
    };
    cache.get_or_fill(&key, check).await.unwrap();
    assert_eq!(
        cache.get(&key).await,
        None,
        "uncacheable values are not stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_travel_through_redis_and_the_store_condition_applies() {
    let redis = RedisServer::start();
    let refuse = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let a = {
        let refuse = refuse.clone();
        builder(&redis)
            .store_condition(move |_: &FillContext, f: &Filled| {
                !(refuse.load(Ordering::SeqCst) && f.value().as_ref() == b"refuse me")
            })
            .build()
            .await
            .unwrap()
    };
    let b = cache(&redis).await;
    let ns = Namespace::new("acme:deals", "deals");
    let key = ns.key("list");

    b.invalidate_at(&ns, 7_000_000_000_000_000_001).await;
    // a learns the position from Redis (over the bus or on its first read of the generation).
    crate::support::eventually("a sees b's position", || {
        let (a, key) = (a.clone(), key.clone());
        async move {
            let pos = Arc::new(AtomicU64::new(0));
            let p = pos.clone();
            a.get_or_fill(&key, move |ctx: FillContext| async move {
                p.store(ctx.position(), Ordering::SeqCst);
                Ok::<_, Boom>(Filled::new("refuse me"))
            })
            .await
            .unwrap();
            pos.load(Ordering::SeqCst) == 7_000_000_000_000_000_001
        }
    })
    .await;
    assert_eq!(a.get(&key).await, None, "the store condition refused it");
    refuse.store(false, Ordering::SeqCst);
    a.get_or_fill(&key, |_| async { Ok::<_, Boom>("refuse me") })
        .await
        .unwrap();
    assert_eq!(b.get(&key).await.unwrap(), "refuse me");
}

/// A fill that started before a `delete` of its key (made here or on another instance) returns
/// its value but does not keep it in L1: it may have read what the deletion announced changed.
/// (A server refreshes a session's cached copy this way after recording the session's write.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_overtaken_by_a_delete_of_its_key_is_not_kept() {
    let redis = RedisServer::start();
    let local = |b: tiered_cache::CacheBuilder| {
        b.policy(
            "sessions",
            Policy::new(Duration::from_secs(60)).local_only(),
        )
    };
    let a = local(builder(&redis)).build().await.expect("cache a");
    let b = local(builder(&redis)).build().await.expect("cache b");
    let key = Namespace::new("sessions/1", "sessions").key("s1");

    for deleter in [&a, &b] {
        let (started_tx, started_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let slow = move |_| async move {
            let _ = started_tx.send(());
            let _ = release_rx.await;
            Ok::<_, Boom>("before the change")
        };
        let in_flight = {
            let (a, key) = (a.clone(), key.clone());
            tokio::spawn(async move { a.get_or_fill(&key, slow).await })
        };
        started_rx.await.expect("the fill started");
        deleter.delete(&key).await;
        deleter.sync_peers().await;
        release_tx.send(()).expect("the fill is waiting");
        assert_eq!(
            in_flight.await.expect("task").expect("fill"),
            "before the change"
        );
        let fills = Fills::default();
        assert_eq!(
            a.get_or_fill(&key, fills.value("after the change"))
                .await
                .expect("fill"),
            "after the change"
        );
        assert_eq!(fills.count(), 1, "the overtaken value stayed in L1");
        a.delete(&key).await;
    }
    assert_eq!(a.snapshot().labels["sessions"].fills_discarded, 2);
}
