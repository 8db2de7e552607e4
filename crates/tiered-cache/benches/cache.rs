//! Criterion benchmarks: the L1 candidates (moka vs quick_cache), the cache's L1 hit with two
//! threads reading, and its L2 hit against a bare Redis GET of the same bytes.
//! Never a correctness test; figures go to bench/RESULTS.md under `## tiered-cache`.
//!
//! Redis: `TC_BENCH_REDIS_URL` (default `redis://127.0.0.1:6379/`); the Redis benches are
//! skipped with a message if it does not answer. Keys use a per-process prefix and are
//! deleted afterwards.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use tiered_cache::{Key, Namespace, Policy, TieredCache};

/// Working sets: `hot` stays in the CPU caches (a few hot keys), `large` (10 MB of values) does
/// not, so each lookup pays its cache misses. Both are real; they differ by several times.
const SETS: [(&str, usize); 2] = [("hot_100", 100), ("large_10k", 10_000)];
const VALUE_BYTES: usize = 1024;
const READERS: usize = 2;

/// CPU time this thread has run (excludes time it waited for a core, unlike wall time).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Thread CPU time and operations over every iteration criterion ran of the current benchmark.
static CPU_NANOS: AtomicU64 = AtomicU64::new(0);
static OPS: AtomicU64 = AtomicU64::new(0);

fn cpu_reset() {
    CPU_NANOS.store(0, Ordering::SeqCst);
    OPS.store(0, Ordering::SeqCst);
}

fn cpu_record(cpu: Duration, ops: u64) {
    CPU_NANOS.fetch_add(cpu.as_nanos() as u64, Ordering::SeqCst);
    OPS.fetch_add(ops, Ordering::SeqCst);
}

fn cpu_report(name: &str) {
    let ops = OPS.load(Ordering::SeqCst).max(1);
    eprintln!(
        "{name}: thread CPU time {:.0} ns/op over {ops} ops",
        CPU_NANOS.load(Ordering::SeqCst) as f64 / ops as f64
    );
}

/// Nothing expires while a benchmark runs.
fn long_lived() -> Policy {
    Policy::new(Duration::from_secs(3600)).l1_ttl(Duration::from_secs(3600))
}

/// Prints the hit counts, so a benchmark that silently measured misses shows it.
fn report(name: &str, cache: &TieredCache) {
    for (label, s) in cache.snapshot().labels {
        eprintln!(
            "{name} [{label}]: l1 {} hits / {} misses, l2 {} hits / {} misses, {} fills",
            s.l1.hits, s.l1.misses, s.l2.hits, s.l2.misses, s.fills
        );
    }
}

/// One buffer per entry, as real cached bodies are: sharing one would make every hit on every
/// key bump the same reference count, a contention real data does not have.
fn values(entries: usize) -> Vec<Bytes> {
    (0..entries)
        .map(|i| Bytes::from(vec![i as u8; VALUE_BYTES]))
        .collect()
}

fn redis_url() -> String {
    std::env::var("TC_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

fn rendered_keys(entries: usize) -> Vec<String> {
    (0..entries)
        .map(|i| format!("tc:{{acme:contacts}}:1700000000000000:{i:016x}"))
        .collect()
}

/// The index thread `t` reads at step `i`: spread over the keys, different per thread.
fn pick(i: usize, t: usize, entries: usize) -> usize {
    i.wrapping_mul(7919).wrapping_add(t * 13) % entries
}

/// Runs `op` `iters` times on each of `readers` threads at once and returns the mean per-thread
/// wall time, so the per-iteration figure is the latency of one read while the other threads
/// read too (not the combined throughput). Thread CPU time is accumulated for [`cpu_report`].
fn on_readers<F: Fn(usize) + Sync>(readers: usize, entries: usize, iters: u64, op: F) -> Duration {
    let barrier = Barrier::new(readers);
    let total: Duration = std::thread::scope(|s| {
        let handles: Vec<_> = (0..readers)
            .map(|t| {
                let (barrier, op) = (&barrier, &op);
                s.spawn(move || {
                    barrier.wait();
                    let (start, cpu) = (Instant::now(), thread_cpu());
                    for i in 0..iters as usize {
                        op(pick(i, t, entries));
                    }
                    cpu_record(thread_cpu() - cpu, iters);
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("reader thread"))
            .sum()
    });
    total / readers as u32
}

fn l1_candidates(c: &mut Criterion) {
    for (set, entries) in SETS {
        let keys = rendered_keys(entries);
        let values = values(entries);
        let mut g = c.benchmark_group(format!("l1_candidates_get_hit_2_threads/{set}"));

        let moka: moka::sync::Cache<String, Bytes> = moka::sync::Cache::builder()
            .max_capacity(64 << 20)
            .weigher(|k: &String, v: &Bytes| (k.len() + v.len()) as u32)
            .build();
        for (k, v) in keys.iter().zip(&values) {
            moka.insert(k.clone(), v.clone());
        }
        moka.run_pending_tasks();
        cpu_reset();
        g.bench_function("moka", |b| {
            b.iter_custom(|iters| {
                on_readers(READERS, entries, iters, |i| {
                    black_box(moka.get(keys[i].as_str()));
                })
            })
        });
        cpu_report(&format!("l1_candidates_get_hit_2_threads/{set}/moka"));

        #[derive(Clone)]
        struct W;
        impl quick_cache::Weighter<String, Bytes> for W {
            fn weight(&self, k: &String, v: &Bytes) -> u64 {
                (k.len() + v.len()) as u64
            }
        }
        let qc: quick_cache::sync::Cache<String, Bytes, W> =
            quick_cache::sync::Cache::with_weighter(entries * 2, 64 << 20, W);
        for (k, v) in keys.iter().zip(&values) {
            qc.insert(k.clone(), v.clone());
        }
        cpu_reset();
        g.bench_function("quick_cache", |b| {
            b.iter_custom(|iters| {
                on_readers(READERS, entries, iters, |i| {
                    black_box(qc.get(keys[i].as_str()));
                })
            })
        });
        cpu_report(&format!(
            "l1_candidates_get_hit_2_threads/{set}/quick_cache"
        ));
        g.finish();
    }
}

/// The benchmarks only measure hits; a fill would show up in [`report`].
async fn never_called(_: tiered_cache::FillContext) -> Result<Bytes, Infallible> {
    Ok(Bytes::new())
}

/// `get_or_fill` hits, `readers` threads each driving its own current-thread runtime (as a
/// server's workers would), all keys in L1.
fn bench_cache_hits(
    c: &mut Criterion,
    name: &str,
    readers: usize,
    cache: &TieredCache,
    keys: &[Key],
) {
    cache.reset_stats();
    cpu_reset();
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let barrier = Barrier::new(readers);
            let total: Duration = std::thread::scope(|s| {
                let handles: Vec<_> = (0..readers)
                    .map(|t| {
                        let barrier = &barrier;
                        s.spawn(move || {
                            let rt = tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                                .expect("runtime");
                            barrier.wait();
                            rt.block_on(async {
                                let (start, cpu) = (Instant::now(), thread_cpu());
                                for i in 0..iters as usize {
                                    let key = &keys[pick(i, t, keys.len())];
                                    black_box(cache.get_or_fill(key, never_called).await.ok());
                                }
                                cpu_record(thread_cpu() - cpu, iters);
                                start.elapsed()
                            })
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("reader thread"))
                    .sum()
            });
            total / readers as u32
        })
    });
    cpu_report(name);
    report(name, cache);
}

fn l1_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ns = Namespace::new("acme:contacts", "contacts");
    let prefix = format!("tcbench{}:", std::process::id());
    let with_redis = rt.block_on(async {
        let cache = TieredCache::builder()
            .redis_url(redis_url())
            .key_prefix(prefix.clone())
            .default_policy(long_lived())
            .build()
            .await
            .expect("cache");
        (cache.health().await.l2 == tiered_cache::L2Status::Up).then_some(cache)
    });
    if with_redis.is_none() {
        eprintln!(
            "redis at {} not reachable: skipping l1_hit with_redis",
            redis_url()
        );
    }
    for (set, entries) in SETS {
        let keys: Vec<Key> = (0..entries).map(|i| ns.key(format!("{i:016x}"))).collect();
        let values = values(entries);
        let l1_only = rt.block_on(async {
            let cache = TieredCache::builder()
                .default_policy(long_lived())
                .build()
                .await
                .expect("cache");
            for (k, v) in keys.iter().zip(&values) {
                cache.set(k, v.clone()).await;
            }
            cache
        });
        bench_cache_hits(
            c,
            &format!("l1_hit_1_thread/{set}/l1_only"),
            1,
            &l1_only,
            &keys,
        );
        bench_cache_hits(
            c,
            &format!("l1_hit_2_threads/{set}/l1_only"),
            READERS,
            &l1_only,
            &keys,
        );
        drop(l1_only);

        // With Redis configured the hit path also checks that the generation is trusted (bus
        // subscribed, confirmed recently); it must not touch Redis.
        if let Some(cache) = &with_redis {
            rt.block_on(async {
                for (k, v) in keys.iter().zip(&values) {
                    cache.set(k, v.clone()).await;
                }
            });
            let name = format!("l1_hit_2_threads/{set}/with_redis");
            bench_cache_hits(c, &name, READERS, cache, &keys);
        }
    }
    rt.block_on(cleanup(&prefix));
}

/// Deletes every key the benchmark wrote (SCAN is fine here: a benchmark, not the cache).
async fn cleanup(prefix: &str) {
    let Ok(client) = redis::Client::open(redis_url()) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    for chunk in keys.chunks(500) {
        let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
    }
}

/// An L2 hit (L1 disabled, so every call goes to Redis) against a bare GET of the same bytes
/// through a redis-rs `ConnectionManager`, the client the cache uses.
fn l2_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let prefix = format!("tcbench{}:", std::process::id());
    let value = Bytes::from(vec![7u8; VALUE_BYTES]);
    let key = Namespace::new("bench:l2", "bench").key("k");
    let setup = rt.block_on(async {
        let cache = TieredCache::builder()
            .redis_url(redis_url())
            .key_prefix(prefix.clone())
            .default_policy(long_lived())
            .l1_max_bytes(0)
            .build()
            .await
            .ok()?;
        if cache.health().await.l2 != tiered_cache::L2Status::Up {
            return None;
        }
        cache.set(&key, value.clone()).await;
        let client = redis::Client::open(redis_url()).ok()?;
        // The same client and settings the cache's L2 uses (see `L2::new`, default timeouts).
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(250)))
            .set_response_timeout(Some(Duration::from_millis(100)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(100));
        let mut bare = redis::aio::ConnectionManager::new_with_config(client, config)
            .await
            .ok()?;
        let bare_key = format!("{prefix}bare");
        let _: () = redis::cmd("SET")
            .arg(&bare_key)
            .arg(value.as_ref())
            .query_async(&mut bare)
            .await
            .ok()?;
        Some((cache, bare, bare_key))
    });
    let Some((cache, bare, bare_key)) = setup else {
        eprintln!("redis at {} not reachable: skipping l2_hit", redis_url());
        return;
    };
    // Both must really return the value (and the cache must answer from L2, not a fill).
    let check = rt.block_on(cache.get_or_fill(&key, never_called));
    assert_eq!(check.ok().as_ref(), Some(&value));
    cache.reset_stats();

    let mut g = c.benchmark_group("l2_hit_1KiB");
    g.bench_function("bare_get", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = bare.clone();
            let bare_key = &bare_key;
            async move {
                let v: Option<Bytes> = redis::cmd("GET")
                    .arg(bare_key)
                    .query_async(&mut conn)
                    .await
                    .ok()
                    .flatten();
                black_box(v)
            }
        })
    });
    g.bench_function("tiered_cache", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(cache.get_or_fill(&key, never_called).await.ok()) })
    });
    // Load on a shared machine drifts between two benchmarks run one after the other; here
    // both run alternately in one loop, so they see the same conditions. Criterion times the
    // cache's half; the bare half is reported beside it.
    let bare_nanos = AtomicU64::new(0);
    let cache_nanos = AtomicU64::new(0);
    g.bench_function("tiered_cache_interleaved", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (mut conn, bare_key, key, cache) = (bare.clone(), &bare_key, &key, &cache);
            let (bare_nanos, cache_nanos) = (&bare_nanos, &cache_nanos);
            async move {
                let (mut in_bare, mut in_cache) = (Duration::ZERO, Duration::ZERO);
                for _ in 0..iters {
                    let t = Instant::now();
                    let v: Option<Bytes> = redis::cmd("GET")
                        .arg(bare_key)
                        .query_async(&mut conn)
                        .await
                        .ok()
                        .flatten();
                    black_box(v);
                    in_bare += t.elapsed();
                    let t = Instant::now();
                    black_box(cache.get_or_fill(key, never_called).await.ok());
                    in_cache += t.elapsed();
                }
                bare_nanos.fetch_add(in_bare.as_nanos() as u64, Ordering::SeqCst);
                cache_nanos.fetch_add(in_cache.as_nanos() as u64, Ordering::SeqCst);
                in_cache
            }
        })
    });
    g.finish();
    let (bare_ns, cache_ns) = (
        bare_nanos.load(Ordering::SeqCst) as f64,
        cache_nanos.load(Ordering::SeqCst) as f64,
    );
    eprintln!(
        "l2_hit_1KiB interleaved: tiered_cache / bare_get = {:.3} (total {:.1} ms vs {:.1} ms)",
        cache_ns / bare_ns.max(1.0),
        cache_ns / 1e6,
        bare_ns / 1e6
    );
    report("l2_hit_1KiB/tiered_cache", &cache);
    rt.block_on(cleanup(&prefix));
}

criterion_group! {
    name = benches;
    // Shorter than criterion's defaults so the whole suite fits in a few minutes; the
    // confidence intervals in the output show whether that was enough.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = l1_candidates, l1_hit, l2_hit
}
criterion_main!(benches);
