//! Replica routing for PostgreSQL: which replica may serve a read, judged by
//! health (bans with back-off, re-admission only by a passing probe), replay
//! position and load, with the primary as the fallback; plus the background
//! prober that keeps those judgements current.
//! Never runs an application query and never routes a write: it answers
//! "which pool" and learns from how the last query there went.
//!
//! Lag is measured in WAL positions only. `now() - pg_last_xact_replay_timestamp()`
//! grows while the primary is idle, and even "only when behind in bytes" it
//! misfires on the first non-transactional record after a quiet spell; so the
//! prober keeps a short history of the primary's positions with the time it
//! first saw each, and a replica's lag is the age of the oldest position it
//! has not replayed yet.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use metrics::SharedString;
use sqlx::PgPool;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::lsn::Lsn;

/// Metric names, defined once here. Labels never carry a tenant.
pub(crate) mod names {
    /// Statements run, by `target` ("primary" | "replica") and `replica` index.
    pub const QUERIES: &str = "strata_db_queries_total";
    /// Reads that wanted a replica but went to the primary, by `reason`
    /// ("unusable": no replica healthy and within the lag limit; "behind":
    /// none had replayed the caller's minimum position; "retry": a replica
    /// failed and no other could take the read; "replica_error": the read
    /// failed on a replica for another reason and was re-run on the primary).
    pub const FALLBACKS: &str = "strata_db_read_fallbacks_total";
    /// Replicas asked for their replay position because the prober's last
    /// look had them behind a read's minimum position, by `result`
    /// ("caught_up": the read went to the replica; "behind": to the primary).
    pub const CATCH_UPS: &str = "strata_db_replica_catch_ups_total";
    /// Reads retried once elsewhere after failing on a replica.
    pub const RETRIES: &str = "strata_db_read_retries_total";
    /// Reads refused because the primary's share for fallback reads was full.
    pub const SHED: &str = "strata_db_reads_shed_total";
    /// Replica bans, by `replica`.
    pub const BANS: &str = "strata_db_replica_bans_total";
    /// WAL bytes the replica has not replayed, by `replica`.
    pub const LAG_BYTES: &str = "strata_db_replica_lag_bytes";
    /// Age of the oldest WAL position the replica has not replayed, by `replica`.
    pub const LAG_SECONDS: &str = "strata_db_replica_lag_seconds";
    /// 1 when the replica may serve reads, by `replica`.
    pub const USABLE: &str = "strata_db_replica_usable";
    /// Open connections per pool, by `target` and `replica`.
    pub const POOL_SIZE: &str = "strata_db_pool_connections";
    /// Idle connections per pool, by `target` and `replica`.
    pub const POOL_IDLE: &str = "strata_db_pool_idle_connections";
    /// Statements that found their pool full and had to wait for a connection.
    pub const POOL_WAITS: &str = "strata_db_pool_waits_total";
}

/// How replicas are judged; part of [`crate::DbConfig`].
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    /// A replica further behind than this (in time, measured by WAL
    /// positions) serves no reads until it catches up.
    pub max_lag: Duration,
    /// The first ban of a failing replica; each further ban doubles it...
    pub ban_base: Duration,
    /// ...up to this. A replica that stayed healthy this long since its last
    /// re-admission starts again at `ban_base`.
    pub ban_max: Duration,
    /// How often the prober reads every replica's replay position.
    pub probe_interval: Duration,
    /// A probe slower than this counts as failed (slow-but-alive is failing).
    pub probe_timeout: Duration,
    /// How many reads may fall back to the primary at once when no replica
    /// can take them; more wait up to the acquire timeout, then fail as
    /// "unavailable" rather than starving writes. `None`: half the primary's
    /// pool (at least 1).
    pub max_primary_fallback_reads: Option<u32>,
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        ReplicaSettings {
            max_lag: Duration::from_secs(1),
            ban_base: Duration::from_secs(5),
            ban_max: Duration::from_secs(60),
            probe_interval: Duration::from_millis(250),
            probe_timeout: Duration::from_secs(1),
            max_primary_fallback_reads: None,
        }
    }
}

/// One replica: its pools and what the router believes about it.
pub(crate) struct Replica {
    pub(crate) index: usize,
    /// The `replica` metric label (its index), shared rather than reallocated.
    pub(crate) label: SharedString,
    /// Application reads.
    pub(crate) pool: PgPool,
    /// One connection for probes alone, so a busy application pool never
    /// makes a healthy replica look dead (and vice versa).
    probe: PgPool,
    /// Reads in progress here: the load the choice balances.
    in_flight: AtomicUsize,
    health: Mutex<Health>,
}

#[derive(Debug)]
struct Health {
    /// Passed a probe since its last ban. False at start: a replica serves
    /// nothing until the prober has seen it answer and measured its lag.
    admitted: bool,
    admitted_at: Option<Instant>,
    banned_until: Option<Instant>,
    /// The length of the next ban.
    next_ban: Duration,
    replayed: Option<Lsn>,
    lag: Duration,
}

/// What the router believes about one replica, for operators and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// Position in `DbConfig::read_urls`.
    pub index: usize,
    /// Admitted (passed a probe since its last ban) and within the lag limit.
    pub usable: bool,
    /// Passed a probe since its last ban (false at start, until the first
    /// probe, and while banned or waiting for a probe to re-admit it).
    pub admitted: bool,
    /// The replay position the last passing probe read.
    pub replayed: Option<Lsn>,
    /// Lag measured by the last passing probe.
    pub lag: Duration,
}

/// Why a read did not get a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoReplica {
    Unusable,
    Behind,
}

impl NoReplica {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            NoReplica::Unusable => "unusable",
            NoReplica::Behind => "behind",
        }
    }
}

/// Counts a read as in progress on a replica until dropped.
pub(crate) struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) struct Router {
    pub(crate) replicas: Vec<Replica>,
    settings: ReplicaSettings,
    /// One connection to the primary for reading its WAL position.
    primary_probe: PgPool,
    /// Where the next choice starts looking, so equal loads take turns.
    next: AtomicUsize,
    /// The primary's share for reads that wanted a replica.
    fallback: Semaphore,
    fallback_wait: Duration,
    /// The primary's positions, each with the time the prober first saw it,
    /// oldest first: what replica lag is measured against.
    history: Mutex<VecDeque<(Instant, Lsn)>>,
    /// When the prober last read the primary's position. While the primary
    /// is unreachable, lag is measured as of then: a replica cannot replay
    /// what a crashed primary never sent, and nothing newer is being
    /// written, so it must not age out of service for that.
    primary_reached: Mutex<Option<Instant>>,
}

impl Router {
    pub(crate) fn new(
        replicas: Vec<(PgPool, PgPool)>,
        primary_probe: PgPool,
        settings: ReplicaSettings,
        fallback_reads: u32,
        fallback_wait: Duration,
    ) -> Router {
        let replicas = replicas
            .into_iter()
            .enumerate()
            .map(|(index, (pool, probe))| Replica {
                index,
                label: SharedString::from(std::sync::Arc::<str>::from(index.to_string())),
                pool,
                probe,
                in_flight: AtomicUsize::new(0),
                health: Mutex::new(Health {
                    admitted: false,
                    admitted_at: None,
                    banned_until: None,
                    next_ban: settings.ban_base,
                    replayed: None,
                    lag: Duration::ZERO,
                }),
            })
            .collect();
        Router {
            replicas,
            primary_probe,
            next: AtomicUsize::new(0),
            fallback: Semaphore::new(fallback_reads.max(1) as usize),
            fallback_wait,
            history: Mutex::new(VecDeque::new()),
            primary_reached: Mutex::new(None),
            settings,
        }
    }

    /// The least loaded replica that is admitted, within the lag limit and
    /// has replayed `min_lsn`, other than `except`; with its replay position.
    pub(crate) fn choose(
        &self,
        min_lsn: Option<Lsn>,
        except: Option<usize>,
    ) -> Result<(&Replica, Lsn), NoReplica> {
        let n = self.replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(&Replica, Lsn, usize)> = None;
        let mut behind = false;
        for k in 0..n {
            let replica = &self.replicas[(start + k) % n];
            if Some(replica.index) == except {
                continue;
            }
            let Some(replayed) = self.usable(replica) else {
                continue;
            };
            if min_lsn.is_some_and(|min| replayed < min) {
                behind = true;
                continue;
            }
            let load = replica.in_flight.load(Ordering::Relaxed);
            if best.is_none_or(|(_, _, l)| load < l) {
                best = Some((replica, replayed, load));
            }
        }
        match best {
            Some((replica, replayed, _)) => Ok((replica, replayed)),
            None if behind => Err(NoReplica::Behind),
            None => Err(NoReplica::Unusable),
        }
    }

    /// How far `replica` had replayed at the last probe, if reads may go to
    /// it at all: admitted, and no more than `max_lag` behind.
    fn usable(&self, replica: &Replica) -> Option<Lsn> {
        let h = lock(&replica.health);
        h.replayed
            .filter(|_| h.admitted && h.lag <= self.settings.max_lag)
    }

    /// When [`choose`](Self::choose) found every usable replica behind
    /// `min_lsn`: asks the least loaded of them how far it has replayed now.
    /// The prober looks only every `probe_interval`, while a replica on a
    /// good network replays a commit within milliseconds, so a read that
    /// needs a write made a moment ago (the writer's next request, a cache
    /// fill after an invalidation) usually costs one tiny query on the
    /// replica instead of a read on the primary. `None`: still behind, or no
    /// answer within the probe timeout.
    pub(crate) async fn catch_up(&self, min_lsn: Lsn) -> Option<(&Replica, Lsn)> {
        let replica = self
            .replicas
            .iter()
            .filter(|r| self.usable(r).is_some())
            .min_by_key(|r| r.in_flight.load(Ordering::Relaxed))?;
        metrics::counter!(names::QUERIES, "target" => "replica", "replica" => replica.label.clone())
            .increment(1);
        let asked = tokio::time::timeout(
            self.settings.probe_timeout,
            sqlx::query_scalar::<_, Option<String>>("SELECT pg_last_wal_replay_lsn()::text")
                .fetch_one(&replica.pool),
        )
        .await;
        let replayed = match asked {
            Ok(Ok(Some(text))) => text.parse::<Lsn>().ok(),
            _ => None,
        };
        if let Some(replayed) = replayed {
            let mut h = lock(&replica.health);
            if h.replayed.is_some_and(|r| r < replayed) {
                h.replayed = Some(replayed);
            }
        }
        let caught_up = replayed.filter(|&r| r >= min_lsn);
        let result = if caught_up.is_some() {
            "caught_up"
        } else {
            "behind"
        };
        metrics::counter!(names::CATCH_UPS, "result" => result).increment(1);
        caught_up.map(|r| (replica, r))
    }

    pub(crate) fn status(&self) -> Vec<ReplicaStatus> {
        self.replicas
            .iter()
            .map(|r| {
                let h = lock(&r.health);
                ReplicaStatus {
                    index: r.index,
                    usable: h.admitted && h.replayed.is_some() && h.lag <= self.settings.max_lag,
                    admitted: h.admitted,
                    replayed: h.replayed,
                    lag: h.lag,
                }
            })
            .collect()
    }

    pub(crate) async fn close(&self) {
        self.primary_probe.close().await;
        for replica in &self.replicas {
            replica.pool.close().await;
            replica.probe.close().await;
        }
    }

    /// Marks a read as running on `replica` (for load balancing).
    pub(crate) fn start<'a>(&self, replica: &'a Replica) -> InFlight<'a> {
        replica.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&replica.in_flight)
    }

    /// A read on the replica failed with a connection-class error: ban it
    /// now rather than waiting for the next probe, so concurrent reads stop
    /// choosing it. A replica already out is not banned again by every
    /// in-flight read that fails with it (the ban would double per query).
    pub(crate) fn failed(&self, replica: &Replica, error: &dyn std::fmt::Display) {
        let mut h = lock(&replica.health);
        if h.admitted {
            self.ban(replica, &mut h, Instant::now(), error);
        }
    }

    /// A permit to read on the primary in place of a replica, or `None`
    /// when the share stays full for the whole acquire timeout.
    pub(crate) async fn fallback_permit(&self) -> Option<SemaphorePermit<'_>> {
        tokio::time::timeout(self.fallback_wait, self.fallback.acquire())
            .await
            .ok()
            .and_then(Result::ok)
    }

    fn ban(&self, replica: &Replica, h: &mut Health, now: Instant, error: &dyn std::fmt::Display) {
        if h.admitted_at
            .is_some_and(|t| now.duration_since(t) >= self.settings.ban_max)
        {
            h.next_ban = self.settings.ban_base;
        }
        let period = h.next_ban;
        h.banned_until = Some(now + period);
        h.next_ban = (period * 2).min(self.settings.ban_max);
        h.admitted = false;
        h.admitted_at = None;
        metrics::counter!(names::BANS, "replica" => replica.label.clone()).increment(1);
        metrics::gauge!(names::USABLE, "replica" => replica.label.clone()).set(0.0);
        tracing::warn!(replica = replica.index, ban_secs = period.as_secs_f64(), %error, "read replica banned");
    }

    /// Reads every position once: the primary's, then each replica's not
    /// serving a ban, and updates health, lag and gauges.
    pub(crate) async fn probe_all(&self) {
        let timeout = self.settings.probe_timeout;
        let primary = tokio::time::timeout(
            timeout,
            sqlx::query_scalar::<_, String>("SELECT pg_current_wal_lsn()::text")
                .fetch_one(&self.primary_probe),
        )
        .await;
        match primary {
            Ok(Ok(text)) => match text.parse::<Lsn>() {
                Ok(lsn) => self.remember_primary(lsn, Instant::now()),
                Err(e) => tracing::warn!(%e, "unreadable primary WAL position"),
            },
            // The primary's own health is not this module's business (writes
            // report it); lag is then measured against the last position seen.
            Ok(Err(e)) => tracing::debug!(error = %e, "could not read the primary's WAL position"),
            Err(_) => tracing::debug!("reading the primary's WAL position timed out"),
        }
        let probes = self.replicas.iter().map(|r| self.probe(r));
        futures_util::future::join_all(probes).await;
    }

    async fn probe(&self, replica: &Replica) {
        let now = Instant::now();
        {
            let h = lock(&replica.health);
            // Banned replicas are left alone until the ban ends; then every
            // probe may re-admit them.
            if h.banned_until.is_some_and(|until| now < until) {
                return;
            }
        }
        let result = tokio::time::timeout(
            self.settings.probe_timeout,
            sqlx::query_as::<_, (bool, Option<String>)>(
                "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text",
            )
            .fetch_one(&replica.probe),
        )
        .await;
        let replayed: Result<Lsn, String> = match result {
            Ok(Ok((true, Some(text)))) => text
                .parse()
                .map_err(|e: crate::lsn::ParseLsnError| e.to_string()),
            // A promoted replica is a primary of its own timeline: reading it
            // could show writes the real primary never had, or miss ours.
            Ok(Ok((false, _))) => Err("not in recovery (promoted?)".into()),
            Ok(Ok((true, None))) => Err("has not replayed any WAL yet".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "probe took longer than {:?}",
                self.settings.probe_timeout
            )),
        };
        let now = Instant::now();
        let label = replica.label.clone();
        let mut h = lock(&replica.health);
        match replayed {
            Ok(replayed) => {
                let (lag_bytes, lag) = self.lag_of(replayed, now);
                h.replayed = Some(replayed);
                h.lag = lag;
                if !h.admitted {
                    h.admitted = true;
                    h.admitted_at = Some(now);
                    h.banned_until = None;
                    tracing::info!(replica = replica.index, replayed = %replayed, "read replica admitted");
                }
                let usable = h.lag <= self.settings.max_lag;
                drop(h);
                metrics::gauge!(names::LAG_BYTES, "replica" => label.clone()).set(lag_bytes as f64);
                metrics::gauge!(names::LAG_SECONDS, "replica" => label.clone())
                    .set(lag.as_secs_f64());
                metrics::gauge!(names::USABLE, "replica" => label).set(if usable {
                    1.0
                } else {
                    0.0
                });
            }
            // A replica that fails a probe while admitted, or again after its
            // ban ended, is banned (again, for longer).
            Err(error) => self.ban(replica, &mut h, now, &error),
        }
    }

    fn remember_primary(&self, lsn: Lsn, now: Instant) {
        *lock(&self.primary_reached) = Some(now);
        let mut history = lock(&self.history);
        if history.back().is_none_or(|&(_, last)| lsn > last) {
            history.push_back((now, lsn));
        }
        // Keep comfortably more than `max_lag` of history: a replica behind
        // every kept position is then known to be over the limit anyway.
        let keep = self.settings.max_lag * 2 + self.settings.probe_interval * 4;
        while history.len() > 1024
            || history
                .front()
                .is_some_and(|&(t, _)| now.duration_since(t) > keep && history.len() > 1)
        {
            history.pop_front();
        }
    }

    /// Bytes and time a replica at `replayed` is behind the primary.
    fn lag_of(&self, replayed: Lsn, now: Instant) -> (u64, Duration) {
        let now = lock(&self.primary_reached).map_or(now, |reached| now.min(reached));
        let history = lock(&self.history);
        let bytes = history
            .back()
            .map_or(0, |&(_, latest)| replayed.bytes_behind(latest));
        let lag = history
            .iter()
            .find(|&&(_, lsn)| lsn > replayed)
            .map_or(Duration::ZERO, |&(seen, _)| now.duration_since(seen));
        (bytes, lag)
    }
}

/// Health locks are held for a few instructions and never across an await;
/// a panic while holding one leaves plain data that is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::postgres::PgPoolOptions;

    fn router(n: usize) -> Router {
        // Lazy pools never connect unless used; these tests use none.
        let pool = || PgPoolOptions::new().connect_lazy("postgres://nobody@127.0.0.1:1/none");
        let pools = (0..n)
            .map(|_| Ok::<_, sqlx::Error>((pool()?, pool()?)))
            .collect::<Result<Vec<_>, _>>()
            .expect("lazy pools");
        Router::new(
            pools,
            pool().expect("lazy pool"),
            ReplicaSettings::default(),
            4,
            Duration::from_millis(10),
        )
    }

    fn set(r: &Replica, replayed: u64, lag_ms: u64) {
        let mut h = lock(&r.health);
        h.admitted = true;
        h.admitted_at = Some(Instant::now());
        h.replayed = Some(Lsn::from_u64(replayed));
        h.lag = Duration::from_millis(lag_ms);
    }

    #[tokio::test]
    async fn chooses_the_least_loaded_usable_replica() {
        let router = router(3);
        assert_eq!(router.choose(None, None).err(), Some(NoReplica::Unusable));
        set(&router.replicas[0], 100, 0);
        set(&router.replicas[1], 100, 0);
        set(&router.replicas[2], 100, 5_000); // over the 1 s limit
        let _busy = router.start(&router.replicas[0]);
        for _ in 0..4 {
            let (r, at) = router.choose(None, None).expect("a replica");
            assert_eq!((r.index, at), (1, Lsn::from_u64(100)));
        }
        assert_eq!(
            router.choose(None, Some(1)).map(|(r, _)| r.index).ok(),
            Some(0)
        );
        assert_eq!(
            router.choose(Some(Lsn::from_u64(101)), None).err(),
            Some(NoReplica::Behind)
        );
    }

    #[tokio::test]
    async fn bans_double_up_to_the_cap_and_need_a_probe_to_end() {
        let router = router(1);
        let r = &router.replicas[0];
        let now = Instant::now();
        let mut periods = Vec::new();
        for _ in 0..6 {
            let mut h = lock(&r.health);
            h.admitted = true;
            router.ban(r, &mut h, now, &"test");
            periods.push(h.banned_until.map(|u| u.duration_since(now).as_secs()));
        }
        assert_eq!(periods, [5, 10, 20, 40, 60, 60].map(Some));
        // A read that fails on a replica already out does not ban it again.
        router.failed(r, &"test");
        assert_eq!(lock(&r.health).next_ban, Duration::from_secs(60));
        assert!(router.choose(None, None).is_err());
    }

    #[tokio::test]
    async fn lag_is_the_age_of_the_oldest_unreplayed_primary_position() {
        let router = router(1);
        let t0 = Instant::now();
        router.remember_primary(Lsn::from_u64(10), t0);
        router.remember_primary(Lsn::from_u64(10), t0 + Duration::from_millis(500));
        router.remember_primary(Lsn::from_u64(20), t0 + Duration::from_millis(700));
        let now = t0 + Duration::from_millis(1_000);
        router.remember_primary(Lsn::from_u64(20), now);
        assert_eq!(router.lag_of(Lsn::from_u64(20), now), (0, Duration::ZERO));
        assert_eq!(
            router.lag_of(Lsn::from_u64(15), now),
            (5, Duration::from_millis(300))
        );
        assert_eq!(
            router.lag_of(Lsn::from_u64(5), now),
            (15, Duration::from_millis(1_000))
        );
    }

    #[tokio::test]
    async fn lag_stops_growing_while_the_primary_is_unreachable() {
        let router = router(1);
        let t0 = Instant::now();
        router.remember_primary(Lsn::from_u64(10), t0);
        // The last position the prober saw before the primary crashed; the
        // replica never received it.
        router.remember_primary(Lsn::from_u64(20), t0 + Duration::from_millis(900));
        let much_later = t0 + Duration::from_secs(60);
        assert_eq!(
            router.lag_of(Lsn::from_u64(10), much_later),
            (10, Duration::ZERO),
            "behind in bytes, but not in time: it stays usable"
        );
        assert_eq!(
            router.lag_of(Lsn::from_u64(5), much_later),
            (15, Duration::from_millis(900)),
            "as far behind as it was when the primary was last reached"
        );
        // The primary is back: lag is measured against now again.
        router.remember_primary(Lsn::from_u64(20), much_later);
        assert_eq!(
            router.lag_of(Lsn::from_u64(10), much_later),
            (10, Duration::from_secs(60) - Duration::from_millis(900))
        );
    }
}
