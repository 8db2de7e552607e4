//! What a cache needs to keep a query result exact under writes: which
//! committed writes a read saw ([`Snapshot`], [`Token`]) and the values the
//! database itself computed for a row's text comparisons ([`Lowered`]).
//! Never decides what to do with a write; it only tells, exactly or not at
//! all, whether a read included it.
//!
//! A write is named by a [`Token`]: on PostgreSQL its transaction id (xid8),
//! on SQLite the value it gave the `change_seq` counter inside its own
//! transaction. A read made with [`crate::repo::window`] or
//! [`crate::repo::stats::dashboard_at`] reports its snapshot in the same
//! statement, so "did this read include that write" has a precise answer:
//! - SQLite: `token <= n` (one writer; the counter moves in the same
//!   transaction as the rows).
//! - PostgreSQL primary: the MVCC rule (`xid < xmin`, or `xid < xmax` and not
//!   in progress).
//! - PostgreSQL standby: PostgreSQL up to at least 17 reports a standby
//!   snapshot's in-progress transactions as completed (`pg_current_snapshot`
//!   copies `xip`, which recovery leaves empty; fixed upstream in 2026), so
//!   between `xmin` and `xmax` the answer is "cannot tell" rather than a
//!   guess.

use std::fmt;

/// A committed write, as the database names it (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(pub u64);

/// Which committed writes a read saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Snapshot {
    /// SQLite: every write whose token is at most this.
    Seq(u64),
    /// PostgreSQL's `pg_current_snapshot()`; `standby` when read on a
    /// server in recovery, whose `xip` is not to be trusted.
    Pg {
        xmin: u64,
        xmax: u64,
        xip: Vec<u64>,
        standby: bool,
    },
}

/// Why a text is not a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a snapshot: {0:?}")]
pub struct ParseSnapshotError(String);

impl Snapshot {
    /// Whether the read included write `token`: `None` when that cannot be
    /// known (a standby's in-progress range).
    pub fn sees(&self, token: Token) -> Option<bool> {
        let t = token.0;
        match self {
            Snapshot::Seq(n) => Some(t <= *n),
            Snapshot::Pg {
                xmin,
                xmax,
                xip,
                standby,
            } => {
                if t < *xmin {
                    Some(true)
                } else if t >= *xmax {
                    Some(false)
                } else if *standby {
                    None
                } else {
                    Some(xip.binary_search(&t).is_err())
                }
            }
        }
    }

    /// Reads what the fill statements report: `xmin:xmax:xip,…` on
    /// PostgreSQL, the counter's value on SQLite.
    pub fn parse(text: &str, standby: bool) -> Result<Snapshot, ParseSnapshotError> {
        let err = || ParseSnapshotError(text.chars().take(60).collect());
        let number = |s: &str| s.trim().parse::<u64>().map_err(|_| err());
        let mut parts = text.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(n), None, None, None) => Ok(Snapshot::Seq(number(n)?)),
            (Some(xmin), Some(xmax), Some(xip), None) => {
                let mut xip = xip
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(number)
                    .collect::<Result<Vec<_>, _>>()?;
                xip.sort_unstable();
                Ok(Snapshot::Pg {
                    xmin: number(xmin)?,
                    xmax: number(xmax)?,
                    xip,
                    standby,
                })
            }
            _ => Err(err()),
        }
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Snapshot::Seq(n) => write!(f, "seq {n}"),
            Snapshot::Pg {
                xmin,
                xmax,
                xip,
                standby,
            } => write!(
                f,
                "{xmin}:{xmax}:{}{}",
                xip.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
                if *standby { " (standby)" } else { "" }
            ),
        }
    }
}

/// The database's own `lower()` of a resource's text columns
/// ([`crate::repo::Spec::search`], in that order): what its searches, its
/// case-insensitive filters and its name sorts compare, as bytes. Read from
/// the database rather than recomputed, so that a cache comparing them
/// agrees with the database by construction (PostgreSQL's `lower()` follows
/// the database's locale, SQLite's only folds ASCII, Rust's folds Unicode).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Lowered(pub Vec<Option<String>>);

impl Lowered {
    /// The lowered value of the `i`-th search column.
    pub fn get(&self, i: usize) -> Option<&str> {
        self.0.get(i).and_then(|v| v.as_deref())
    }
}

/// A row as a write left it or found it, with its [`Lowered`] texts.
#[derive(Debug, Clone)]
pub struct Image<R> {
    pub row: R,
    pub lowered: Lowered,
}

/// What a write reports besides its rows: its token, and the lowered texts
/// of the row it wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub token: Token,
    pub lowered: Lowered,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_snapshots_follow_the_mvcc_rule() {
        let s = Snapshot::parse("100:110:103,105", false).expect("parses");
        assert_eq!(s.sees(Token(99)), Some(true));
        assert_eq!(s.sees(Token(100)), Some(true));
        assert_eq!(s.sees(Token(103)), Some(false));
        assert_eq!(s.sees(Token(104)), Some(true));
        assert_eq!(s.sees(Token(105)), Some(false));
        assert_eq!(s.sees(Token(110)), Some(false));
        assert_eq!(s.sees(Token(500)), Some(false));
        assert_eq!(
            Snapshot::parse("7:7:", false)
                .expect("parses")
                .sees(Token(6)),
            Some(true)
        );
    }

    #[test]
    fn a_standby_snapshot_does_not_guess_inside_its_range() {
        let s = Snapshot::parse("100:110:", true).expect("parses");
        assert_eq!(s.sees(Token(99)), Some(true));
        assert_eq!(s.sees(Token(104)), None);
        assert_eq!(s.sees(Token(110)), Some(false));
    }

    #[test]
    fn sqlite_snapshots_are_a_counter() {
        let s = Snapshot::parse("42", false).expect("parses");
        assert_eq!(s.sees(Token(42)), Some(true));
        assert_eq!(s.sees(Token(43)), Some(false));
        for bad in ["", "x", "1:2", "1:2:3:4", "1:2:a"] {
            assert!(Snapshot::parse(bad, false).is_err(), "{bad}");
        }
    }
}
