//! Change records on the bus, for views kept up to date in place beside the cache (a
//! [`Feed`]): who published what in which order, and whether this instance can have missed any.
//! Never interprets a record; it delivers payloads, and says when the delivery cannot be trusted.
//!
//! Each instance numbers its records (`c <instance> <seq> <nonce> <payload>`) and says, in a
//! heartbeat (`h <instance> <seq>`) every bus ping interval, how far it has numbered. A
//! listener tracks each publisher: a hole in its numbers not filled within a second (two
//! publishes may overtake each other on the way to Redis, so a hole is not at once a loss), a
//! heartbeat claiming a number that then never arrived, or a publisher silent for five seconds
//! all mean a record may have been lost, and the feed is told to start again ([`Feed::gap`]).
//! An instance that stops says so (`l <instance> <seq>`) and is forgotten without a gap.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Views kept beside the cache, up to date from the records every instance publishes
/// ([`TieredCache::publish`](crate::TieredCache::publish)).
///
/// Every method is called from the bus task: keep them quick and never block on I/O.
pub trait Feed: Send + Sync + 'static {
    /// A record another instance published (this instance's own never come back here).
    fn record(&self, payload: &str);
    /// Whether this instance now hears every record published: `true` once the bus is
    /// subscribed, `false` when it is lost, and whatever holds when the feed is attached.
    /// Each call means records may have been missed before it: start again from nothing.
    fn trust(&self, trusted: bool);
    /// Records may have been missed while the bus stayed subscribed (a publisher's hole, or a
    /// publisher gone silent): start again from nothing.
    fn gap(&self);
}

/// How long a hole in a publisher's numbers may stay open before it counts as a loss.
const HOLE_TIMEOUT: Duration = Duration::from_secs(1);
/// A publisher not heard from for this long (no record, no heartbeat) may have published
/// records that never arrived.
const SILENCE: Duration = Duration::from_secs(5);

/// What one listener knows of one publisher.
#[derive(Debug)]
struct Publisher {
    /// Every record up to this number has arrived (or came before we first heard of it).
    contiguous: u64,
    /// Records that arrived past a hole.
    ahead: BTreeSet<u64>,
    hole_since: Option<Instant>,
    /// The highest number its heartbeats claimed, now and at the previous check.
    claimed: u64,
    claimed_before: u64,
    heard: Instant,
}

impl Publisher {
    fn new(seq: u64, now: Instant) -> Publisher {
        Publisher {
            contiguous: seq,
            ahead: BTreeSet::new(),
            hole_since: None,
            claimed: seq,
            claimed_before: seq,
            heard: now,
        }
    }

    fn arrived(&mut self, seq: u64, now: Instant) {
        self.heard = now;
        if seq <= self.contiguous {
            return; // Late, or delivered twice: nothing is missing because of it.
        }
        self.ahead.insert(seq);
        while self.ahead.remove(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
        if self.ahead.is_empty() {
            self.hole_since = None;
        } else {
            self.hole_since.get_or_insert(now);
        }
    }

    /// Forgets what was missing (after a gap was reported, everything starts again).
    fn settle(&mut self) {
        let top = self.ahead.last().copied().unwrap_or(0);
        self.contiguous = self.contiguous.max(top).max(self.claimed);
        self.ahead.clear();
        self.hole_since = None;
        self.claimed_before = self.claimed;
    }
}

/// Every publisher this instance hears, with the numbering of its own records.
#[derive(Default)]
pub(crate) struct Publishers {
    next: std::sync::atomic::AtomicU64,
    heard: Mutex<HashMap<u64, Publisher>>,
}

impl Publishers {
    /// The number of this instance's next record.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    /// How far this instance has numbered its records (its heartbeat's claim).
    pub(crate) fn last_seq(&self) -> u64 {
        self.next.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts again: nothing is known of anyone (a new subscription).
    pub(crate) fn reset(&self) {
        self.lock().clear();
    }

    /// Record `seq` of `instance` arrived.
    pub(crate) fn record(&self, instance: u64, seq: u64, now: Instant) {
        let mut heard = self.lock();
        match heard.get_mut(&instance) {
            Some(p) => p.arrived(seq, now),
            None => {
                heard.insert(instance, Publisher::new(seq, now));
            }
        }
    }

    /// `instance` says it has numbered up to `seq`.
    pub(crate) fn heartbeat(&self, instance: u64, seq: u64, now: Instant) {
        let mut heard = self.lock();
        match heard.get_mut(&instance) {
            Some(p) => {
                p.heard = now;
                p.claimed = p.claimed.max(seq);
            }
            None => {
                heard.insert(instance, Publisher::new(seq, now));
            }
        }
    }

    /// `instance` stopped after numbering up to `seq`: whether all of it arrived.
    pub(crate) fn left(&self, instance: u64, seq: u64) -> bool {
        match self.lock().remove(&instance) {
            Some(p) => p.contiguous >= seq,
            None => true,
        }
    }

    /// Checks every publisher (once per heartbeat interval): whether a record may have been
    /// lost since the last check.
    pub(crate) fn check(&self, now: Instant) -> bool {
        let mut lost = false;
        self.lock().retain(|_, p| {
            if now.duration_since(p.heard) > SILENCE {
                lost = true;
                return false;
            }
            let hole = p
                .hole_since
                .is_some_and(|since| now.duration_since(since) > HOLE_TIMEOUT);
            // A claim from the previous check has had a whole interval to arrive.
            if hole || p.claimed_before > p.contiguous {
                lost = true;
                p.settle();
            }
            p.claimed_before = p.claimed;
            true
        });
        lost
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Publisher>> {
        self.heard.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_overtaking_each_other_are_not_a_loss() {
        let p = Publishers::default();
        let t = Instant::now();
        p.record(1, 5, t);
        p.record(1, 7, t);
        p.record(1, 6, t + Duration::from_millis(10));
        p.heartbeat(1, 7, t + Duration::from_millis(20));
        assert!(!p.check(t + Duration::from_millis(30)));
        assert!(!p.check(t + Duration::from_millis(600)));
    }

    #[test]
    fn a_hole_that_stays_open_is_a_loss_reported_once() {
        let p = Publishers::default();
        let t = Instant::now();
        p.record(1, 5, t);
        p.record(1, 7, t);
        assert!(!p.check(t + Duration::from_millis(500)));
        assert!(p.check(t + Duration::from_millis(1500)));
        assert!(!p.check(t + Duration::from_millis(1600)));
        p.record(1, 8, t + Duration::from_millis(1700));
        assert!(!p.check(t + Duration::from_millis(1800)));
    }

    #[test]
    fn a_claimed_record_that_never_arrives_is_a_loss() {
        let p = Publishers::default();
        let t = Instant::now();
        p.record(1, 3, t);
        p.heartbeat(1, 4, t);
        // The claim may still be on its way at the first check...
        assert!(!p.check(t + Duration::from_millis(10)));
        // ... not at the next one.
        p.heartbeat(1, 4, t + Duration::from_millis(500));
        assert!(p.check(t + Duration::from_millis(510)));
        assert!(!p.check(t + Duration::from_millis(1010)));
    }

    #[test]
    fn silence_is_a_loss_and_leaving_is_not() {
        let p = Publishers::default();
        let t = Instant::now();
        p.record(1, 1, t);
        p.record(2, 1, t);
        p.heartbeat(2, 1, t + Duration::from_secs(4));
        assert!(p.left(2, 1));
        assert!(p.check(t + Duration::from_secs(6)));
        // Forgotten: no second report.
        assert!(!p.check(t + Duration::from_secs(7)));
        p.record(3, 1, t);
        assert!(!p.left(3, 2));
    }
}
