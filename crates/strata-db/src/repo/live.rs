//! The reads a cache keeps exact under writes: a list's first rows with its
//! total and the snapshot they were read in, in one statement, and rows with
//! their lowered texts ([`Lowered`]). Never decides what is cached; it only
//! reads, so that what it reports is one point in the database's history.

use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use sea_query::{Alias, Asterisk, Expr, JoinType, Query, SimpleExpr, SubQueryStatement};
use sqlx::{FromRow, Row};
use uuid::Uuid;

use super::{list_statements, lowered_alias, lowered_exprs, ListParams, Resource, Spec};
use crate::change::{Image, Lowered, Snapshot};
use crate::pool::{Backend, Target};
use crate::{Db, DbError};

/// The most rows one window read returns.
pub const WINDOW_MAX: u32 = 1000;

/// A list's first rows in order, how many rows match in all, and which
/// writes the read saw: all three from one statement, so one snapshot.
#[derive(Debug)]
pub struct WindowRead<R> {
    pub rows: Vec<Image<R>>,
    pub total: i64,
    pub snapshot: Snapshot,
}

/// The first `limit` rows (at most [`WINDOW_MAX`]) of the list `params`
/// describes (its page and page size are ignored), with the total and the
/// snapshot. `now` is what a time-dependent filter (`overdue`) compares with.
pub async fn window<R: Resource>(
    db: &Db,
    tenant: Uuid,
    params: &ListParams,
    limit: u32,
    now: DateTime<Utc>,
) -> Result<WindowRead<R>, DbError> {
    let backend = db.backend();
    let mut prefix = params.clone();
    prefix.page = 1;
    prefix.per_page = limit.clamp(1, WINDOW_MAX);
    let (mut page, count) = list_statements(&R::SPEC, tenant, &prefix, now, backend);
    for (expr, alias) in lowered_exprs(&R::SPEC) {
        page.expr_as(expr, alias);
    }
    // One row that always exists (the total and the snapshot), joined to the
    // page's rows, which may be none: the derived table keeps the page's
    // ORDER BY and LIMIT for choosing its rows; their order is restored by
    // the caller from the sort keys.
    let header = Query::select()
        .expr_as(
            SimpleExpr::SubQuery(None, Box::new(SubQueryStatement::SelectStatement(count))),
            Alias::new("live_total"),
        )
        .expr_as(snapshot_expr(backend), Alias::new("live_snap"))
        .expr_as(standby_expr(backend), Alias::new("live_standby"))
        .to_owned();
    let stmt = Query::select()
        .column((Alias::new("live_h"), Asterisk))
        .column((Alias::new("live_p"), Asterisk))
        .from_subquery(header, Alias::new("live_h"))
        .join_subquery(
            JoinType::LeftJoin,
            page,
            Alias::new("live_p"),
            Expr::cust("1 = 1"),
        )
        .to_owned();
    let searching;
    let db = if params.q.as_deref().is_some_and(|q| !q.is_empty()) {
        // As for `list`: a search is planned for its own text.
        searching = db.planned_per_call();
        &searching
    } else {
        db
    };
    let rows: Vec<WindowRow<R>> = db.fetch_all(Target::Read, &stmt).await?;
    let first = rows
        .first()
        .ok_or_else(|| DbError::Config("a window read returned no header row".into()))?;
    let snapshot = Snapshot::parse(&first.snap, first.standby != 0)
        .map_err(|e| DbError::Config(e.to_string()))?;
    let total = first.total;
    Ok(WindowRead {
        rows: rows
            .into_iter()
            .filter_map(|r| r.item.map(WithLowered::into_image))
            .collect(),
        total,
        snapshot,
    })
}

/// The statement's snapshot as text: `pg_current_snapshot()`, or SQLite's
/// `change_seq` counter.
pub(super) fn snapshot_expr(backend: Backend) -> SimpleExpr {
    match backend {
        Backend::Postgres => Expr::cust("pg_current_snapshot()::text"),
        Backend::Sqlite => Expr::cust("(SELECT CAST(n AS TEXT) FROM change_seq WHERE id = 1)"),
    }
}

/// 1 when the statement runs on a PostgreSQL standby, else 0.
pub(super) fn standby_expr(backend: Backend) -> SimpleExpr {
    match backend {
        Backend::Postgres => {
            Expr::cust("CAST(CASE WHEN pg_is_in_recovery() THEN 1 ELSE 0 END AS BIGINT)")
        }
        Backend::Sqlite => Expr::cust("CAST(0 AS BIGINT)"),
    }
}

/// A row with its lowered texts, selected beside its columns.
pub(crate) struct WithLowered<R> {
    row: R,
    lowered: Lowered,
}

impl<R> WithLowered<R> {
    pub(crate) fn into_image(self) -> Image<R> {
        Image {
            row: self.row,
            lowered: self.lowered,
        }
    }
}

/// Only the lowered texts of `R`'s search columns (a write's `RETURNING`).
pub(crate) struct LoweredRow<R>(pub(crate) Lowered, PhantomData<fn() -> R>);

fn lowered<'r, DbRow>(spec: &Spec, row: &'r DbRow) -> Result<Lowered, sqlx::Error>
where
    DbRow: Row,
    for<'a> &'a str: sqlx::ColumnIndex<DbRow>,
    Option<String>: sqlx::Decode<'r, DbRow::Database> + sqlx::Type<DbRow::Database>,
{
    spec.search
        .iter()
        .map(|c| row.try_get::<Option<String>, _>(lowered_alias(c).as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map(Lowered)
}

impl<'r, DbRow, R> FromRow<'r, DbRow> for WithLowered<R>
where
    DbRow: Row,
    R: Resource + FromRow<'r, DbRow>,
    for<'a> &'a str: sqlx::ColumnIndex<DbRow>,
    Option<String>: sqlx::Decode<'r, DbRow::Database> + sqlx::Type<DbRow::Database>,
{
    fn from_row(row: &'r DbRow) -> Result<Self, sqlx::Error> {
        Ok(WithLowered {
            row: R::from_row(row)?,
            lowered: lowered(&R::SPEC, row)?,
        })
    }
}

impl<'r, DbRow, R> FromRow<'r, DbRow> for LoweredRow<R>
where
    DbRow: Row,
    R: Resource,
    for<'a> &'a str: sqlx::ColumnIndex<DbRow>,
    Option<String>: sqlx::Decode<'r, DbRow::Database> + sqlx::Type<DbRow::Database>,
{
    fn from_row(row: &'r DbRow) -> Result<Self, sqlx::Error> {
        Ok(LoweredRow(lowered(&R::SPEC, row)?, PhantomData))
    }
}

/// One row of a window read: the header, and a page row unless the page is
/// empty (then its columns are NULL).
struct WindowRow<R> {
    total: i64,
    snap: String,
    standby: i64,
    item: Option<WithLowered<R>>,
}

impl<'r, DbRow, R> FromRow<'r, DbRow> for WindowRow<R>
where
    DbRow: Row,
    R: Resource + FromRow<'r, DbRow>,
    for<'a> &'a str: sqlx::ColumnIndex<DbRow>,
    Option<String>: sqlx::Decode<'r, DbRow::Database> + sqlx::Type<DbRow::Database>,
    Option<Uuid>: sqlx::Decode<'r, DbRow::Database> + sqlx::Type<DbRow::Database>,
    String: sqlx::Decode<'r, DbRow::Database> + sqlx::Type<DbRow::Database>,
    i64: sqlx::Decode<'r, DbRow::Database> + sqlx::Type<DbRow::Database>,
{
    fn from_row(row: &'r DbRow) -> Result<Self, sqlx::Error> {
        let id: Option<Uuid> = row.try_get("id")?;
        Ok(WindowRow {
            total: row.try_get("live_total")?,
            snap: row.try_get("live_snap")?,
            standby: row.try_get("live_standby")?,
            item: id.map(|_| WithLowered::from_row(row)).transpose()?,
        })
    }
}
