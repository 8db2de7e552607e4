//! Read-your-writes: WAL positions ([`Lsn`]), the context a request's reads and
//! writes share ([`ReadCtx`]), and the record of what served its reads
//! ([`ReadSource`]). Never picks a replica itself: the router reads the
//! context and reports back into it.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::gate::CommitGate;

/// A position in PostgreSQL's write-ahead log, as `pg_current_wal_lsn()` and
/// `pg_last_wal_replay_lsn()` report it. Opaque to callers: compare, store,
/// and send it back; it serialises as PostgreSQL writes it (`16/B374D848`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(u64);

impl Lsn {
    /// The start of the log: every replica has replayed it.
    pub const ZERO: Lsn = Lsn(0);
    /// A position no replica reaches: a read that needs it goes to the
    /// primary. Used when a commit's position could not be read.
    pub const MAX: Lsn = Lsn(u64::MAX);

    pub const fn from_u64(raw: u64) -> Lsn {
        Lsn(raw)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// How many bytes of WAL lie between `self` and a later position
    /// (0 when `self` is not behind it).
    pub fn bytes_behind(self, later: Lsn) -> u64 {
        later.0.saturating_sub(self.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Why a text is not a WAL position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a WAL position (expected hex `X/Y`): {0:?}")]
pub struct ParseLsnError(String);

impl FromStr for Lsn {
    type Err = ParseLsnError;
    fn from_str(s: &str) -> Result<Lsn, ParseLsnError> {
        let err = || ParseLsnError(s.chars().take(40).collect());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Which kind of database served a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServedBy {
    /// The primary (PostgreSQL) or SQLite's writer.
    Primary,
    /// Replica number `n` in `DbConfig::read_urls` order (SQLite's reader
    /// pool is replica 0, one that is never behind).
    Replica(usize),
}

/// What served a read, and how far that server had replayed when the router
/// chose it: a lower bound on what the read saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSource {
    pub served_by: ServedBy,
    /// `None`: the server cannot be behind (the primary, SQLite's readers).
    pub replayed: Option<Lsn>,
}

impl ReadSource {
    pub(crate) const PRIMARY: ReadSource = ReadSource {
        served_by: ServedBy::Primary,
        replayed: None,
    };

    /// Whether what was read includes every write committed at or before
    /// `lsn`. The cache's fill condition: a value may be stored only if this
    /// holds for the position of its namespace's latest invalidation.
    pub fn has_replayed(&self, lsn: Lsn) -> bool {
        self.replayed.is_none_or(|r| r >= lsn)
    }

    /// The weaker of two sources: what a result built from both reads is
    /// guaranteed to include.
    fn weakest(self, other: ReadSource) -> ReadSource {
        match (self.replayed, other.replayed) {
            (None, _) => other,
            (_, None) => self,
            (Some(a), Some(b)) if b < a => other,
            _ => self,
        }
    }
}

/// The replication context of one unit of work (a request, a cache fill):
/// the position its reads must have seen, raised by each write it commits,
/// and the weakest source its reads came from. Cheap to clone (shared);
/// attach it with [`crate::Db::with_ctx`].
///
/// The session layer seeds it with the position of the session's last write
/// and stores [`ReadCtx::last_write`] back after the request, so reads see
/// their own writes on any instance.
#[derive(Debug, Clone, Default)]
pub struct ReadCtx(Arc<CtxInner>);

#[derive(Debug, Default)]
struct CtxInner {
    /// 0 means no requirement: every replica has replayed 0/0.
    min_lsn: AtomicU64,
    last_write: AtomicU64,
    source: Mutex<Option<ReadSource>>,
    /// Passed before every commit through this context.
    gate: Option<CommitGate>,
}

impl ReadCtx {
    /// A context whose reads must see at least `min_lsn` (`None`: any
    /// healthy replica within the lag limit will do).
    pub fn new(min_lsn: Option<Lsn>) -> ReadCtx {
        let ctx = ReadCtx::default();
        if let Some(lsn) = min_lsn {
            ctx.0.min_lsn.store(lsn.0, Ordering::Relaxed);
        }
        ctx
    }

    /// The same, for work that can be stopped from outside (a request):
    /// every commit through the context passes `gate` first, and fails
    /// with [`DbError::Cancelled`](crate::DbError::Cancelled) when the work
    /// was cancelled before.
    pub fn gated(min_lsn: Option<Lsn>, gate: CommitGate) -> ReadCtx {
        ReadCtx(Arc::new(CtxInner {
            min_lsn: AtomicU64::new(min_lsn.map_or(0, |lsn| lsn.0)),
            gate: Some(gate),
            ..CtxInner::default()
        }))
    }

    /// Passes the context's gate, if it has one, before an effect that must
    /// not be cut halfway: `false` when the work was cancelled first, and
    /// the effect must not start. Commits through the context do this
    /// themselves.
    pub fn pass_gate(&self) -> bool {
        self.0.gate.as_ref().is_none_or(CommitGate::pass)
    }

    /// Whether commits through the context pass a gate.
    pub(crate) fn is_gated(&self) -> bool {
        self.0.gate.is_some()
    }

    /// The position a replica must have replayed to serve this context.
    pub fn min_lsn(&self) -> Option<Lsn> {
        match self.0.min_lsn.load(Ordering::Acquire) {
            0 => None,
            raw => Some(Lsn(raw)),
        }
    }

    /// The position of the latest commit made through this context: the
    /// primary's WAL position on PostgreSQL, a commit counter on SQLite
    /// (`None`: no write yet).
    pub fn last_write(&self) -> Option<Lsn> {
        match self.0.last_write.load(Ordering::Acquire) {
            0 => None,
            raw => Some(Lsn(raw)),
        }
    }

    /// The weakest source of the reads made through this context so far
    /// (`None`: no read yet). A value built from those reads may be cached
    /// for a namespace only if `source.has_replayed(invalidation_lsn)`.
    pub fn source(&self) -> Option<ReadSource> {
        *self.0.source.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a commit: later reads through this context need `lsn`.
    pub(crate) fn wrote(&self, lsn: Lsn) {
        self.0.last_write.fetch_max(lsn.0, Ordering::AcqRel);
        self.0.min_lsn.fetch_max(lsn.0, Ordering::AcqRel);
    }

    pub(crate) fn read_from(&self, source: ReadSource) {
        let mut seen = self.0.source.lock().unwrap_or_else(|p| p.into_inner());
        *seen = Some(match *seen {
            Some(previous) => previous.weakest(source),
            None => source,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_postgres_text() {
        for text in ["0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF", "0/1"] {
            let lsn: Lsn = text.parse().expect(text);
            assert_eq!(lsn.to_string(), text);
        }
        let lsn: Lsn = "16/B374D848".parse().expect("valid");
        assert_eq!(lsn.as_u64(), 0x16_B374_D848);
        assert!("16B374D848".parse::<Lsn>().is_err());
        assert!("1/2/3".parse::<Lsn>().is_err());
        assert!("G/0".parse::<Lsn>().is_err());
        let json = serde_json::to_string(&lsn).expect("serialise");
        assert_eq!(json, "\"16/B374D848\"");
        assert_eq!(serde_json::from_str::<Lsn>(&json).expect("parse"), lsn);
        assert!("0/FF".parse::<Lsn>().expect("v") < "1/0".parse::<Lsn>().expect("v"));
    }

    #[test]
    fn ctx_keeps_the_weakest_source_and_the_latest_write() {
        let ctx = ReadCtx::new(None);
        assert_eq!(ctx.min_lsn(), None);
        ctx.wrote(Lsn(10));
        ctx.wrote(Lsn(5));
        assert_eq!(
            (ctx.min_lsn(), ctx.last_write()),
            (Some(Lsn(10)), Some(Lsn(10)))
        );
        ctx.read_from(ReadSource::PRIMARY);
        let replica = |n, at| ReadSource {
            served_by: ServedBy::Replica(n),
            replayed: Some(Lsn(at)),
        };
        ctx.read_from(replica(1, 30));
        ctx.read_from(replica(0, 20));
        ctx.read_from(ReadSource::PRIMARY);
        let source = ctx.source().expect("reads happened");
        assert_eq!(source, replica(0, 20));
        assert!(source.has_replayed(Lsn(20)) && !source.has_replayed(Lsn(21)));
        assert!(ReadSource::PRIMARY.has_replayed(Lsn::MAX));
    }
}
