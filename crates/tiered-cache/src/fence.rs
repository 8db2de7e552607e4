//! Fences: the keys deleted or overwritten lately, on this instance or (through the bus) on
//! another, with when this instance learned of it. A fill that started before such an event may
//! have read what the event replaced, so its value must not stay in L1 after it.
//! Never removes anything itself: `lib.rs` checks a fence right after a fill's L1 store.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) struct Fences {
    /// By `<namespace length>:<namespace><params>` (unambiguous), the latest event's time.
    map: Mutex<HashMap<String, Instant>>,
    /// No fill runs longer than this (the fill timeout), so older events fence nothing.
    horizon: Duration,
}

/// Past this many recorded events, those older than the horizon are dropped.
const PRUNE_AT: usize = 4096;

fn name(ns: &str, params: &str) -> String {
    format!("{}:{ns}{params}", ns.len())
}

impl Fences {
    pub(crate) fn new(horizon: Duration) -> Self {
        Self {
            map: Mutex::default(),
            horizon,
        }
    }

    /// `ns`/`params` was deleted or overwritten now. Call before removing it from L1.
    pub(crate) fn record(&self, ns: &str, params: &str) {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= PRUNE_AT {
            map.retain(|_, at| now.saturating_duration_since(*at) <= self.horizon);
        }
        map.insert(name(ns, params), now);
    }

    /// Whether `ns`/`params` was deleted or overwritten at or after `started`.
    pub(crate) fn since(&self, ns: &str, params: &str, started: Instant) -> bool {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&name(ns, params)).is_some_and(|at| *at >= started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_fences_only_its_key_and_only_fills_that_started_before_it() {
        let fences = Fences::new(Duration::from_secs(5));
        let before = Instant::now();
        fences.record("ns", "a");
        let after = Instant::now() + Duration::from_millis(1);
        assert!(fences.since("ns", "a", before));
        assert!(!fences.since("ns", "a", after));
        assert!(!fences.since("ns", "b", before));
        // `ns`+`a` and `n`+`sa` are different keys.
        assert!(!fences.since("n", "sa", before));
    }
}
