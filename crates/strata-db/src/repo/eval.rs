//! The list queries of [`super`], evaluated in the process for one row: whether
//! the row matches a list's filters and search, and where its sort puts it. Written
//! beside the SQL it mirrors, so that a cache keeping lists up to date decides
//! exactly what the database would. Never guesses: text comparisons use the
//! database's own lowered values ([`Lowered`]), and name sorts compare them as
//! bytes, which is what the SQL does too (`COLLATE "C"`, SQLite's BINARY).

use chrono::{DateTime, Utc};
use sea_query::Value;
use uuid::Uuid;

use super::{Filter, ListParams, Resource, SortField, Spec};
use crate::change::Lowered;

/// A row as the in-process evaluation sees it.
#[derive(Debug, Clone)]
pub struct Facts {
    spec: &'static Spec,
    id: Uuid,
    /// In the order of `spec.columns`.
    values: Vec<Value>,
    lowered: Lowered,
    tags: Option<Vec<String>>,
    version: i64,
}

/// Where a sort puts a row (ascending; `Null` last, as in the SQL), before the
/// id breaks ties.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SortKey {
    Int(i64),
    Text(Box<str>),
    Null,
}

impl SortKey {
    /// Bytes held beyond the key itself (for weighing cached entries).
    pub fn heap_bytes(&self) -> usize {
        match self {
            SortKey::Text(t) => t.len(),
            _ => 0,
        }
    }
}

impl Facts {
    pub fn of<R: Resource>(row: &R, lowered: Lowered) -> Facts {
        Facts {
            spec: &R::SPEC,
            id: row.id(),
            values: row.values(),
            lowered,
            tags: row.tags().map(<[String]>::to_vec),
            version: row.updated_at().timestamp_micros(),
        }
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    pub fn spec(&self) -> &'static Spec {
        self.spec
    }

    /// The row's version: `updated_at` in microseconds, which only moves forward.
    pub fn version(&self) -> i64 {
        self.version
    }

    pub fn lowered(&self) -> &Lowered {
        &self.lowered
    }

    /// The value of `column`, if the resource has it.
    pub fn value(&self, column: &str) -> Option<&Value> {
        let i = self.spec.columns.iter().position(|c| *c == column)?;
        self.values.get(i)
    }

    /// `column` as an integer (timestamps in microseconds, dates in days);
    /// `None` when NULL or not a number.
    pub fn number(&self, column: &str) -> Option<i64> {
        self.value(column).and_then(number)
    }

    /// `column` as text, `None` when NULL or not text.
    pub fn text(&self, column: &str) -> Option<&str> {
        match self.value(column)? {
            Value::String(Some(s)) => Some(s.as_str()),
            _ => None,
        }
    }

    fn lowered_of(&self, column: &str) -> Option<&str> {
        let i = self.spec.search.iter().position(|c| *c == column)?;
        self.lowered.get(i)
    }

    /// Where `sort` puts the row (ascending; the caller reverses for `-field`).
    pub fn sort_key(&self, sort: &SortField) -> SortKey {
        if sort.text {
            return self
                .lowered_of(sort.column)
                .map_or(SortKey::Null, |t| SortKey::Text(t.into()));
        }
        if sort.column == "priority_rank" {
            // The generated column of the tasks table: low < normal < high.
            return match self.text("priority") {
                Some("low") => SortKey::Int(0),
                Some("normal") => SortKey::Int(1),
                Some(_) => SortKey::Int(2),
                None => SortKey::Null,
            };
        }
        self.number(sort.column).map_or(SortKey::Null, SortKey::Int)
    }

    /// Whether the row is one the list `params` describes would show (its
    /// filters and search; `now` for `overdue`), exactly as the SQL of
    /// [`super::list_statements`] decides.
    pub fn matches(&self, params: &ListParams, now: DateTime<Utc>) -> bool {
        params.filters.iter().all(|f| self.meets(f, now))
            && params
                .q
                .as_deref()
                .filter(|q| !q.is_empty())
                .is_none_or(|q| self.found_by(q))
    }

    fn meets(&self, filter: &Filter, now: DateTime<Utc>) -> bool {
        match filter {
            // `column = value`: NULL matches nothing.
            Filter::Eq(column, value) => self.value(column).is_some_and(|v| v == value),
            // `lower(column) = <text lowered by Rust>`, compared as bytes.
            Filter::TextCi(column, text) => {
                self.lowered_of(column) == Some(text.to_lowercase().as_str())
            }
            Filter::Tag(tag) => self.tags.as_ref().is_some_and(|t| t.contains(tag)),
            Filter::Open(open) => {
                let closed = matches!(self.text("stage"), Some("won" | "lost"));
                *open != closed
            }
            Filter::Overdue(overdue) => {
                let due = self
                    .number("due_at")
                    .is_some_and(|d| d < now.timestamp_micros());
                let is_overdue = self.text("status") != Some("done") && due;
                *overdue == is_overdue
            }
            Filter::Before(column, t) => self
                .number(column)
                .is_some_and(|v| v < t.timestamp_micros()),
        }
    }

    /// `lower(column) LIKE '%<q lowered by Rust, wildcards escaped>%'` for any
    /// search column: a substring of the database's lowered text.
    fn found_by(&self, q: &str) -> bool {
        let needle = q.to_lowercase();
        self.lowered.0.iter().flatten().any(|t| t.contains(&needle))
    }
}

fn number(value: &Value) -> Option<i64> {
    match value {
        Value::ChronoDateTimeUtc(Some(t)) => Some(t.timestamp_micros()),
        Value::ChronoDate(Some(d)) => Some(i64::from(chrono::Datelike::num_days_from_ce(&**d))),
        Value::BigInt(Some(n)) => Some(*n),
        Value::Int(Some(n)) => Some(i64::from(*n)),
        Value::SmallInt(Some(n)) => Some(i64::from(*n)),
        _ => None,
    }
}

/// The integer a date or timestamp compares as in [`Facts::number`].
pub fn date_number(date: chrono::NaiveDate) -> i64 {
    i64::from(chrono::Datelike::num_days_from_ce(&date))
}
