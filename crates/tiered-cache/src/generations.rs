//! The local mirror of namespace generations (the authoritative copy is in Redis when configured).
//! Never talks to Redis itself: callers feed it what Redis said, and it decides what to trust.
//!
//! A generation is part of every rendered key, so moving a namespace's generation makes all of
//! its entries unreachable at once. Everything here exists to keep two promises:
//! 1. The generation this instance uses for a namespace never goes back to a value it used before
//!    an invalidation it knows of (that would resurrect the invalidated entries).
//! 2. A generation is *trusted* (used without asking Redis) only while the invalidation bus is
//!    subscribed and has been since the generation was read, so no bump can have been missed.
//!
//! Besides the generation, each namespace has positions: the highest invalidation position seen
//! (`position`), and how far those invalidations have *settled* (`floor`). A settling
//! invalidation (see [`Policy::settle`](crate::Policy::settle)) does not move the generation; it
//! records its position with the time this instance learned of it, and becomes part of the
//! floor once its window has passed. Entries read at a position below the floor are not served.
//! Whatever is learned without knowing when it happened (a read from Redis) settles at once.
//!
//! The mirror is bounded by use, not by history: a namespace not looked up for `max_age` is
//! forgotten once the map has doubled since the last sweep (never one whose local invalidation
//! Redis has not counted yet). Forgetting costs a Redis read on the next use, or without Redis
//! a new generation (its old L1 entries become unreachable) at a position no lower than any
//! forgotten one, so a fill never reads from before an invalidation it no longer remembers.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_utils::sync::ShardedLock;

/// Generations made up locally have the top bit set; Redis never hands out such values (its
/// generations start at the wall clock in microseconds, about 2^51). So a local generation can
/// never collide with one another instance uses, and L2 is never asked about it.
pub(crate) const LOCAL_BIT: u64 = 1 << 63;

/// `trusted_epoch` while the bus is not subscribed: no entry is ever stamped with it.
const NO_EPOCH: u64 = u64::MAX;

/// At most this many unsettled positions are kept per namespace; beyond it the oldest settles
/// early (which only makes entries miss sooner).
const MAX_UNSETTLED: usize = 32;

/// The map is first swept when it holds this many namespaces, then whenever it has doubled.
const FIRST_SWEEP: usize = 4096;

/// What a lookup resolved for a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub(crate) generation: u64,
    /// The highest position passed to `invalidate_at` for the namespace (0 if none).
    pub(crate) position: u64,
    /// Every invalidation at or below this position has settled: an entry read below it is
    /// not served to anyone. Equal to `position` unless settling invalidations are recent.
    pub(crate) floor: u64,
    /// The generation is known to be current (trusted mirror, fresh Redis read, or no Redis at
    /// all), so L1 entries stored under it are valid whatever their age.
    pub(crate) fresh: bool,
}

impl Resolved {
    /// Whether the generation came from Redis, so L2 entries may exist under it.
    pub(crate) fn in_redis(&self) -> bool {
        self.generation & LOCAL_BIT == 0
    }

    /// The lowest position an entry may have been read at to be served to a reader whose own
    /// changes go up to `own`: past every settled invalidation, and past the reader's own
    /// changes unless it is past every invalidation anyway.
    pub(crate) fn need(&self, own: u64) -> u64 {
        self.floor.max(self.position.min(own))
    }
}

/// What the mirror can say without Redis.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Use it.
    Trusted(Resolved),
    /// A local invalidation that Redis has not seen yet: replay it before anything else, or use
    /// the local generation if Redis is still unreachable.
    Pending(Resolved),
    /// Ask Redis; if it cannot answer, use the (non-fresh) fallback.
    Unsure(Option<Resolved>),
}

#[derive(Debug)]
enum Source {
    /// Read from Redis (or learned from the bus) in `epoch`, last at `at`.
    Redis { epoch: u64, at: Instant },
    /// Made up here. `pending`: it stands for an invalidation Redis has not counted yet.
    Local { pending: bool },
}

#[derive(Debug)]
struct Entry {
    generation: u64,
    position: u64,
    /// Every invalidation at or below it has settled.
    settled: u64,
    /// Settling invalidations above `settled`: when this instance learned of each (oldest
    /// first), and its position.
    unsettled: VecDeque<(Instant, u64)>,
    /// How long the namespace's invalidations take to settle.
    window: Duration,
    source: Source,
    /// When it was last looked up, in whole seconds of the mirror's clock ([`Generations::tick`]).
    used: AtomicU64,
}

impl Entry {
    fn new(generation: u64, position: u64, source: Source, used: u64) -> Entry {
        Entry {
            generation,
            position,
            settled: position,
            unsettled: VecDeque::new(),
            window: Duration::ZERO,
            source,
            used: AtomicU64::new(used),
        }
    }

    /// Stamps a lookup; a store only when the second changed, so a hot entry's cache line stays
    /// shared between the cores.
    fn touch(&self, tick: u64) {
        if self.used.load(Ordering::Relaxed) != tick {
            self.used.store(tick, Ordering::Relaxed);
        }
    }

    /// The settled floor at `now`.
    fn floor(&self, now: Instant) -> u64 {
        self.unsettled
            .iter()
            .take_while(|(at, _)| now.saturating_duration_since(*at) >= self.window)
            .fold(self.settled, |floor, (_, p)| floor.max(*p))
    }

    /// Records an invalidation at `position`: settling from `now` over `window` if given, else
    /// settled at once (along with everything at or below it).
    fn raise(&mut self, position: u64, settling: Option<(Instant, Duration)>) {
        // A position at or below one already recorded adds nothing: entries behind it are
        // behind that one too, which settles no later.
        let newer = position > self.position;
        self.position = self.position.max(position);
        match settling {
            Some((now, window)) if newer => {
                self.window = window;
                while self
                    .unsettled
                    .front()
                    .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= window)
                    || self.unsettled.len() >= MAX_UNSETTLED
                {
                    if let Some((_, p)) = self.unsettled.pop_front() {
                        self.settled = self.settled.max(p);
                    }
                }
                self.unsettled.push_back((now, position));
            }
            Some(_) => {}
            None => {
                self.settled = self.settled.max(position);
                let settled = self.settled;
                self.unsettled.retain(|(_, p)| *p > settled);
            }
        }
    }

    /// Everything known settles now (a generation change made older entries unreachable
    /// anyway, or the invalidation's time is unknown).
    fn settle(&mut self) {
        self.settled = self.position;
        self.unsettled.clear();
    }
}

type Map = HashMap<Box<str>, Entry, foldhash::fast::RandomState>;

pub(crate) struct Generations {
    /// Read on every lookup (every L1 hit), written only when a generation changes: a sharded
    /// lock lets two cores read without contending on one lock word.
    map: ShardedLock<Map>,
    /// Bumped whenever the bus subscription is lost or (re)established.
    epoch: AtomicU64,
    /// The epoch in which the bus has been continuously subscribed, or `NO_EPOCH`.
    trusted_epoch: AtomicU64,
    next_local: AtomicU64,
    /// False without Redis: the mirror is then the only copy and is always trusted.
    redis: bool,
    max_age: Duration,
    /// The clock of `Entry::used`.
    start: Instant,
    /// The map's size at which the next sweep runs.
    sweep_at: AtomicUsize,
    /// The highest position of any namespace forgotten by a sweep: where a namespace made up
    /// here starts, since it may be one of them.
    retired: AtomicU64,
}

impl Generations {
    pub(crate) fn new(redis: bool, max_age: Duration) -> Self {
        Self {
            map: ShardedLock::new(Map::default()),
            epoch: AtomicU64::new(0),
            trusted_epoch: AtomicU64::new(NO_EPOCH),
            next_local: AtomicU64::new(1),
            redis,
            max_age,
            start: Instant::now(),
            sweep_at: AtomicUsize::new(FIRST_SWEEP),
            retired: AtomicU64::new(0),
        }
    }

    /// Whole seconds since the mirror was made, at `now`.
    fn tick(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs()
    }

    /// Forgets the namespaces not looked up for `max_age` (except `keep`, the one just written,
    /// and any whose local invalidation Redis has not counted yet), if the map has doubled
    /// since the last sweep. Amortised O(1) per insertion.
    fn sweep_if_due(&self, map: &mut Map, now: Instant, keep: &str) {
        if map.len() < self.sweep_at.load(Ordering::Relaxed) {
            return;
        }
        let tick = self.tick(now);
        let max_age = self.max_age.as_secs();
        let mut retired = 0;
        map.retain(|ns, e| {
            let idle = tick.saturating_sub(e.used.load(Ordering::Relaxed)) >= max_age;
            let pending = matches!(e.source, Source::Local { pending: true });
            let forget = idle && !pending && &**ns != keep;
            if forget {
                retired = retired.max(e.position);
            }
            !forget
        });
        self.retired.fetch_max(retired, Ordering::AcqRel);
        self.sweep_at
            .store((map.len() * 2).max(FIRST_SWEEP), Ordering::Relaxed);
    }

    /// The position a namespace made up here starts at.
    fn start_position(&self) -> u64 {
        self.retired.load(Ordering::Acquire)
    }

    /// The epoch to stamp on a Redis read that is about to be sent.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The bus lost its subscription: nothing read from now on can be trusted beyond one request.
    pub(crate) fn bus_down(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.trusted_epoch.store(NO_EPOCH, Ordering::Release);
    }

    /// The bus is subscribed again. Every generation learned before may have missed a bump, so
    /// the epoch moves and each namespace is re-read from Redis on its next use. Must be called
    /// only after the SUBSCRIBE was confirmed: a read stamped with the new epoch then cannot
    /// miss a later bump's message.
    pub(crate) fn bus_up(&self) {
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.trusted_epoch.store(epoch, Ordering::Release);
    }

    fn new_local(&self) -> u64 {
        LOCAL_BIT | self.next_local.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn lookup(&self, ns: &str, now: Instant) -> Lookup {
        {
            let map = self.map.read().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = map.get(ns) {
                e.touch(self.tick(now));
                return self.classify(e, now);
            }
        }
        if self.redis {
            return Lookup::Unsure(None);
        }
        // L1 only: the first generation of a namespace is simply a new number.
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let generation = self.new_local();
        let (position, tick) = (self.start_position(), self.tick(now));
        let e = map.entry(ns.into()).or_insert_with(|| {
            Entry::new(generation, position, Source::Local { pending: false }, tick)
        });
        let found = self.classify(e, now);
        self.sweep_if_due(&mut map, now, ns);
        found
    }

    fn classify(&self, e: &Entry, now: Instant) -> Lookup {
        // Only a trusted mirror knows when invalidations happened; otherwise all have settled.
        let resolved = |fresh| Resolved {
            generation: e.generation,
            position: e.position,
            floor: if fresh { e.floor(now) } else { e.position },
            fresh,
        };
        if !self.redis {
            return Lookup::Trusted(resolved(true));
        }
        match e.source {
            Source::Redis { epoch, at } => {
                if epoch == self.trusted_epoch.load(Ordering::Acquire)
                    && now.saturating_duration_since(at) < self.max_age
                {
                    Lookup::Trusted(resolved(true))
                } else {
                    Lookup::Unsure(Some(resolved(false)))
                }
            }
            Source::Local { pending: true } => Lookup::Pending(resolved(false)),
            Source::Local { pending: false } => Lookup::Unsure(Some(resolved(false))),
        }
    }

    /// The current generation, trusted or not (for the lease check before storing in L1).
    pub(crate) fn current(&self, ns: &str) -> Option<u64> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(ns).map(|e| e.generation)
    }

    /// Records what Redis said: a read sent in `epoch`, a bus message, or the result of our own
    /// INCR. `replaces_local` is the local generation that was current when our own INCR was
    /// sent (it covers that local invalidation); reads and bus messages pass `None`.
    /// `settling`: the position comes from an invalidation made just now (a bus message or our
    /// own) that settles over this window if it did not move the generation; `None` for reads,
    /// whose invalidations are of unknown age and settle at once.
    ///
    /// Returns what the caller should use now; `fresh` unless a pending local invalidation
    /// still has to be replayed.
    pub(crate) fn observe(
        &self,
        ns: &str,
        generation: u64,
        position: u64,
        epoch: u64,
        replaces_local: Option<u64>,
        settling: Option<Duration>,
    ) -> Resolved {
        let now = Instant::now();
        let settling = settling.map(|window| (now, window));
        let tick = self.tick(now);
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let resolved = Self::record(
            &mut map,
            ns,
            (generation, position),
            (epoch, now, tick),
            replaces_local,
            settling,
        );
        self.sweep_if_due(&mut map, now, ns);
        resolved
    }

    /// [`observe`](Self::observe) on the locked map.
    fn record(
        map: &mut Map,
        ns: &str,
        (generation, position): (u64, u64),
        (epoch, now, tick): (u64, Instant, u64),
        replaces_local: Option<u64>,
        settling: Option<(Instant, Duration)>,
    ) -> Resolved {
        let e = map.entry(ns.into()).or_insert_with(|| {
            Entry::new(generation, position, Source::Redis { epoch, at: now }, tick)
        });
        match e.source {
            // Within Redis' history generations only grow (INCR; re-initialised from the clock
            // if the key is lost), so the larger one is the newer: a read that left before an
            // invalidation can come back after the bus message carrying the bump, and must not
            // roll the mirror back.
            Source::Redis { epoch: seen_in, .. } => {
                if generation > e.generation {
                    e.generation = generation;
                    e.raise(position, None);
                    e.settle();
                } else if generation == e.generation {
                    e.raise(position, settling);
                } else {
                    e.raise(position, None);
                }
                // Only a read sent in the current epoch (or later than the entry's) can vouch
                // for the value; an older one may predate a missed message.
                if epoch >= seen_in {
                    e.source = Source::Redis { epoch, at: now };
                }
            }
            // A local invalidation Redis has not counted: its value must win over anything Redis
            // says until our INCR that covers it has been confirmed.
            Source::Local { pending: true } if replaces_local != Some(e.generation) => {
                e.raise(position, None);
                return Resolved {
                    generation: e.generation,
                    position: e.position,
                    floor: e.position,
                    fresh: false,
                };
            }
            // A made-up generation for a namespace Redis could not tell us about, or a pending
            // one our INCR just covered: Redis' word replaces it (its entries become
            // unreachable, which is what an invalidation wants anyway).
            Source::Local { .. } => {
                e.generation = generation;
                e.raise(position, None);
                e.settle();
                e.source = Source::Redis { epoch, at: now };
            }
        }
        Resolved {
            generation: e.generation,
            position: e.position,
            floor: e.floor(now),
            fresh: true,
        }
    }

    /// Redis refused a store under the generation we hold: it has moved on (a bump whose message
    /// is still on its way) or lost it (restart, eviction). Re-read it on the next use instead of
    /// trusting it until the bus or `max_age` says otherwise.
    pub(crate) fn distrust(&self, ns: &str) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if let Some(Entry {
            source: Source::Redis { epoch, .. },
            ..
        }) = map.get_mut(ns)
        {
            // Epoch 0 is never the trusted one (that is at least 1 once the bus is up), and any
            // later read replaces it.
            *epoch = 0;
        }
    }

    /// An invalidation Redis did not confirm (no Redis, or Redis unreachable): a new local
    /// generation makes every local key of the namespace miss at once. With Redis configured
    /// the entry stays pending until the invalidation is replayed there.
    pub(crate) fn bump_local(&self, ns: &str, position: u64) -> Resolved {
        let generation = self.new_local();
        let now = Instant::now();
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let old_position = map
            .get(ns)
            .map_or_else(|| self.start_position(), |e| e.position);
        let position = position.max(old_position);
        map.insert(
            ns.into(),
            Entry::new(
                generation,
                position,
                Source::Local {
                    pending: self.redis,
                },
                self.tick(now),
            ),
        );
        self.sweep_if_due(&mut map, now, ns);
        Resolved {
            generation,
            position,
            floor: position,
            fresh: !self.redis,
        }
    }

    /// A settling invalidation without Redis (the mirror is the only copy): the generation
    /// stays, the position settles over `window`.
    pub(crate) fn settle_local(&self, ns: &str, position: u64, window: Duration) {
        debug_assert!(!self.redis, "with Redis, settling goes through Redis");
        let now = Instant::now();
        let generation = self.new_local();
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        // Read under the lock: a sweep (which holds it) may just have forgotten `ns`.
        let (start, tick) = (self.start_position(), self.tick(now));
        map.entry(ns.into())
            .or_insert_with(|| {
                Entry::new(generation, start, Source::Local { pending: false }, tick)
            })
            .raise(position, Some((now, window)));
        self.sweep_if_due(&mut map, now, ns);
    }

    /// A generation for a namespace Redis could not tell us about (never fresh): keep what we
    /// have, else make one up that any later Redis answer replaces.
    pub(crate) fn fallback(&self, ns: &str) -> Resolved {
        let now = Instant::now();
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        // Read under the lock: a sweep (which holds it) may just have forgotten `ns`.
        let (start, tick) = (self.start_position(), self.tick(now));
        let generation = self.new_local();
        let e = map.entry(ns.into()).or_insert_with(|| {
            Entry::new(generation, start, Source::Local { pending: false }, tick)
        });
        let resolved = Resolved {
            generation: e.generation,
            position: e.position,
            floor: e.position,
            fresh: false,
        };
        self.sweep_if_due(&mut map, now, ns);
        resolved
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gens() -> Generations {
        let g = Generations::new(true, Duration::from_secs(60));
        g.bus_up();
        g
    }

    /// Without Redis the mirror is the only copy: a namespace it forgets comes back with a new
    /// generation (its old entries unreachable) and no lower position, while one in use keeps
    /// its generation.
    #[test]
    fn unused_namespaces_are_forgotten_without_going_back() {
        let g = Generations::new(false, Duration::from_secs(60));
        let t0 = Instant::now();
        let generation = |lookup| match lookup {
            Lookup::Trusted(r) => r,
            other => panic!("without Redis every lookup is trusted: {other:?}"),
        };
        let old = generation(g.lookup("old", t0));
        g.bump_local("old", 99);
        let old_bumped = generation(g.lookup("old", t0));
        assert_ne!(old.generation, old_bumped.generation);
        let hot = generation(g.lookup("hot", t0));
        for i in 0..FIRST_SWEEP {
            g.lookup(&format!("a{i}"), t0);
        }
        // Nothing was idle for 60 s: the sweep that ran kept everything.
        assert_eq!(g.len(), FIRST_SWEEP + 2);

        let t1 = t0 + Duration::from_secs(120);
        assert_eq!(generation(g.lookup("hot", t1)), hot);
        for i in 0..FIRST_SWEEP * 2 {
            g.lookup(&format!("b{i}"), t1);
        }
        assert!(g.len() <= FIRST_SWEEP * 2 + 1, "{} namespaces", g.len());
        assert_eq!(generation(g.lookup("hot", t1)), hot, "in use: kept");
        let back = generation(g.lookup("old", t1));
        assert_ne!(
            back.generation, old_bumped.generation,
            "forgotten: a new generation"
        );
        assert_ne!(back.generation, old.generation);
        assert!(
            back.position >= 99,
            "position went back to {}",
            back.position
        );
    }

    /// With Redis, a forgotten namespace is simply re-read; a local invalidation Redis has not
    /// counted yet is never forgotten, since Redis could not give it back.
    #[test]
    fn a_pending_invalidation_is_never_forgotten() {
        let g = Generations::new(true, Duration::ZERO);
        g.bus_up();
        let pending = g.bump_local("pending", 7);
        for i in 0..FIRST_SWEEP * 3 {
            g.observe(&format!("n{i}"), 5, 0, g.epoch(), None, None);
        }
        assert!(g.len() < FIRST_SWEEP, "{} namespaces", g.len());
        assert_eq!(
            g.lookup("pending", Instant::now()),
            Lookup::Pending(pending)
        );
        assert_eq!(g.lookup("n0", Instant::now()), Lookup::Unsure(None));
    }

    #[test]
    fn observe_never_rolls_back() {
        let g = gens();
        let e = g.epoch();
        assert_eq!(g.observe("ns", 6, 0, e, None, None).generation, 6);
        assert_eq!(g.observe("ns", 5, 0, e, None, None).generation, 6);
        assert!(matches!(g.lookup("ns", Instant::now()), Lookup::Trusted(_)));
    }

    #[test]
    fn a_reconnect_makes_everything_untrusted() {
        let g = gens();
        g.observe("ns", 6, 0, g.epoch(), None, None);
        let before = g.epoch();
        g.bus_down();
        assert!(matches!(g.lookup("ns", Instant::now()), Lookup::Unsure(_)));
        g.bus_up();
        // A read sent before the resubscribe cannot restore trust...
        g.observe("ns", 6, 0, before, None, None);
        assert!(matches!(g.lookup("ns", Instant::now()), Lookup::Unsure(_)));
        // ...one sent after it can.
        g.observe("ns", 7, 0, g.epoch(), None, None);
        assert!(matches!(
            g.lookup("ns", Instant::now()),
            Lookup::Trusted(Resolved { generation: 7, .. })
        ));
    }

    #[test]
    fn a_pending_local_invalidation_wins_until_replayed() {
        let g = gens();
        let e = g.epoch();
        g.observe("ns", 6, 0, e, None, None);
        let local = g.bump_local("ns", 42);
        assert!(!local.in_redis());
        // Redis, not having seen the invalidation, still says 6: must be ignored.
        let r = g.observe("ns", 6, 0, e, None, None);
        assert_eq!(r.generation, local.generation);
        assert!(matches!(g.lookup("ns", Instant::now()), Lookup::Pending(_)));
        // Our INCR that covers it: Redis' value now replaces the local one.
        let r = g.observe("ns", 7, 42, e, Some(local.generation), None);
        assert_eq!((r.generation, r.position), (7, 42));
        assert!(matches!(g.lookup("ns", Instant::now()), Lookup::Trusted(_)));
    }

    #[test]
    fn a_replay_does_not_cover_a_newer_local_invalidation() {
        let g = gens();
        let first = g.bump_local("ns", 0);
        let second = g.bump_local("ns", 0);
        let r = g.observe("ns", 9, 0, g.epoch(), Some(first.generation), None);
        assert_eq!(r.generation, second.generation);
        assert!(!r.fresh);
    }

    #[test]
    fn a_distrusted_generation_is_read_again() {
        let g = gens();
        g.observe("ns", 6, 0, g.epoch(), None, None);
        g.distrust("ns");
        assert_eq!(
            g.lookup("ns", Instant::now()),
            Lookup::Unsure(Some(Resolved {
                generation: 6,
                position: 0,
                floor: 0,
                fresh: false
            }))
        );
        g.observe("ns", 9, 0, g.epoch(), None, None);
        assert!(matches!(g.lookup("ns", Instant::now()), Lookup::Trusted(_)));
    }

    #[test]
    fn made_up_generations_are_replaced_by_redis() {
        let g = gens();
        let local = g.fallback("ns");
        assert!(!local.in_redis());
        assert_eq!(g.observe("ns", 3, 0, g.epoch(), None, None).generation, 3);
    }

    #[test]
    fn without_redis_everything_is_local_and_trusted() {
        let g = Generations::new(false, Duration::from_secs(60));
        let Lookup::Trusted(first) = g.lookup("ns", Instant::now()) else {
            panic!("not trusted")
        };
        let bumped = g.bump_local("ns", 0);
        assert_ne!(first.generation, bumped.generation);
        assert!(bumped.fresh);
        assert_eq!(g.lookup("ns", Instant::now()), Lookup::Trusted(bumped));
    }

    #[test]
    fn settling_invalidations_keep_the_generation_and_settle_after_their_window() {
        let g = gens();
        let window = Duration::from_millis(500);
        g.observe("ns", 6, 10, g.epoch(), None, None);
        let r = g.observe("ns", 6, 20, g.epoch(), None, Some(window));
        assert_eq!((r.generation, r.position, r.floor), (6, 20, 10));
        g.observe("ns", 6, 30, g.epoch(), None, Some(window));
        let Lookup::Trusted(now) = g.lookup("ns", Instant::now()) else {
            panic!("not trusted")
        };
        assert_eq!((now.position, now.floor), (30, 10));
        // Others may be served an entry read at 15 (behind unsettled changes only); a reader
        // who made the change at 20 may not, one whose changes end at 12 may.
        assert_eq!(now.need(0), 10);
        assert_eq!(now.need(20), 20);
        assert_eq!(now.need(12), 12);
        // Past every invalidation, an entry is current for everyone.
        assert_eq!(now.need(u64::MAX), 30);
        let later = Instant::now() + window;
        let Lookup::Trusted(settled) = g.lookup("ns", later) else {
            panic!("not trusted")
        };
        assert_eq!(settled.floor, 30);
    }

    #[test]
    fn what_is_not_trusted_or_not_timed_settles_at_once() {
        let g = gens();
        let window = Duration::from_secs(60);
        g.observe("ns", 6, 10, g.epoch(), None, None);
        g.observe("ns", 6, 20, g.epoch(), None, Some(window));
        // A read from Redis (time unknown) settles everything up to what it says.
        let r = g.observe("ns", 6, 25, g.epoch(), None, None);
        assert_eq!((r.position, r.floor), (25, 25));
        // A new generation settles everything.
        g.observe("ns", 6, 30, g.epoch(), None, Some(window));
        let r = g.observe("ns", 7, 31, g.epoch(), None, Some(window));
        assert_eq!((r.generation, r.floor), (7, 31));
        // While the bus is down nothing is trusted, and the floor is the latest position.
        g.observe("ns", 7, 40, g.epoch(), None, Some(window));
        g.bus_down();
        let Lookup::Unsure(Some(r)) = g.lookup("ns", Instant::now()) else {
            panic!("trusted without a bus")
        };
        assert_eq!(r.floor, 40);
    }

    #[test]
    fn settling_without_redis_and_the_bound_on_unsettled_positions() {
        let g = Generations::new(false, Duration::from_secs(60));
        let Lookup::Trusted(first) = g.lookup("ns", Instant::now()) else {
            panic!("not trusted")
        };
        for p in 1..=(MAX_UNSETTLED as u64 + 8) {
            g.settle_local("ns", p, Duration::from_secs(60));
        }
        let Lookup::Trusted(r) = g.lookup("ns", Instant::now()) else {
            panic!("not trusted")
        };
        assert_eq!(r.generation, first.generation);
        assert_eq!(r.position, MAX_UNSETTLED as u64 + 8);
        // The oldest settled early, the newest 32 are still settling.
        assert_eq!(r.floor, 8);
    }
}
