//! Criterion benchmarks: L1 candidates (moka vs quick_cache), L1 hit and L2 hit of the cache.
//! Never a correctness test; numbers go to bench/RESULTS.md under `## tiered-cache`.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};

const ENTRIES: usize = 10_000;
const VALUE_BYTES: usize = 1024;
const READERS: usize = 2;

fn keys() -> Vec<String> {
    (0..ENTRIES)
        .map(|i| format!("tc:{{acme:contacts}}:1700000000000000:{i:016x}"))
        .collect()
}

/// Runs `op` `iters` times on each of `READERS` threads at once and returns the mean per-thread
/// wall time, so the per-iteration figure is the latency of one read while another core reads too.
fn on_readers<F: Fn(usize) + Sync>(iters: u64, op: F) -> Duration {
    let barrier = Barrier::new(READERS);
    let total: Duration = std::thread::scope(|s| {
        let handles: Vec<_> = (0..READERS)
            .map(|t| {
                let (barrier, op) = (&barrier, &op);
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters as usize {
                        op(i.wrapping_mul(7919).wrapping_add(t * 13) % ENTRIES);
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("reader")).sum()
    });
    total / READERS as u32
}

fn l1_candidates(c: &mut Criterion) {
    let keys = keys();
    let value = Bytes::from(vec![7u8; VALUE_BYTES]);
    let mut g = c.benchmark_group("l1_candidates_get_hit_2_threads");

    let moka: moka::sync::Cache<String, Bytes> = moka::sync::Cache::builder()
        .max_capacity(64 << 20)
        .weigher(|k: &String, v: &Bytes| (k.len() + v.len()) as u32)
        .build();
    for k in &keys {
        moka.insert(k.clone(), value.clone());
    }
    moka.run_pending_tasks();
    g.bench_function("moka", |b| {
        b.iter_custom(|iters| {
            on_readers(iters, |i| {
                black_box(moka.get(keys[i].as_str()));
            })
        })
    });

    #[derive(Clone)]
    struct W;
    impl quick_cache::Weighter<String, Bytes> for W {
        fn weight(&self, k: &String, v: &Bytes) -> u64 {
            (k.len() + v.len()) as u64
        }
    }
    let qc: quick_cache::sync::Cache<String, Bytes, W> =
        quick_cache::sync::Cache::with_weighter(ENTRIES * 2, 64 << 20, W);
    for k in &keys {
        qc.insert(k.clone(), value.clone());
    }
    g.bench_function("quick_cache", |b| {
        b.iter_custom(|iters| {
            on_readers(iters, |i| {
                black_box(qc.get(keys[i].as_str()));
            })
        })
    });
    g.finish();
}

criterion_group!(benches, l1_candidates);
criterion_main!(benches);
