//! The dashboard's aggregates, one indexed query per figure pair: run
//! concurrently, or as one statement that also reports its snapshot.
//! Never counts a row of another tenant.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use sea_query::{Alias, Asterisk, Expr, Func, JoinType, Query, SelectStatement, SimpleExpr};
use sqlx::FromRow;
use uuid::Uuid;

use super::eval::{date_number, Facts};
use super::{col, live};
use crate::change::Snapshot;
use crate::model::{ContactStats, DashboardStats, DealStats, InvoiceStats, OrderStats, TaskStats};
use crate::pool::Target;
use crate::{Db, DbError};

#[derive(FromRow)]
struct CountSum {
    n: i64,
    cents: i64,
}

/// `SELECT COUNT(*) AS n, CAST(COALESCE(SUM(column), 0) AS BIGINT) AS cents`
/// over the tenant's rows that meet the condition. PostgreSQL's SUM of BIGINT
/// is NUMERIC, hence the cast, which SQLite accepts too.
fn count_sum(
    table: &str,
    sum_of: Option<&str>,
    tenant: Uuid,
    condition: Option<SimpleExpr>,
) -> SelectStatement {
    let cents: SimpleExpr = match sum_of {
        Some(column) => Func::cast_as(
            Func::coalesce([Func::sum(col(column)).into(), Expr::val(0i64).into()]),
            Alias::new("BIGINT"),
        )
        .into(),
        None => Expr::val(0i64).into(),
    };
    let mut stmt = Query::select();
    stmt.expr_as(Func::count(Expr::col(Asterisk)), Alias::new("n"))
        .expr_as(cents, Alias::new("cents"))
        .from(Alias::new(table))
        .and_where(col("tenant_id").eq(tenant));
    if let Some(condition) = condition {
        stmt.and_where(condition);
    }
    stmt
}

/// The first instant of `now`'s month (UTC): where "this month" starts.
pub fn month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let today = now.date_naive();
    NaiveDate::from_ymd_opt(today.year(), today.month(), 1)
        .unwrap_or(today)
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc()
}

/// The nine figure pairs of the dashboard as of `now`, in the order
/// [`assemble`] reads them.
fn figures(tenant: Uuid, now: DateTime<Utc>) -> [SelectStatement; 9] {
    let today = now.date_naive();
    let month_start = month_start(now);
    let closed = ["won", "lost"];
    [
        count_sum("contacts", None, tenant, None),
        count_sum(
            "deals",
            Some("amount_cents"),
            tenant,
            Some(col("stage").is_not_in(closed)),
        ),
        count_sum(
            "deals",
            Some("amount_cents"),
            tenant,
            Some(
                col("stage")
                    .eq("won")
                    .and(col("closed_at").gte(month_start)),
            ),
        ),
        count_sum("tasks", None, tenant, Some(col("status").eq("pending"))),
        count_sum(
            "tasks",
            None,
            tenant,
            Some(col("status").ne("done").and(col("due_at").lt(now))),
        ),
        count_sum(
            "invoices",
            Some("total_cents"),
            tenant,
            Some(col("status").is_in(["sent", "overdue"])),
        ),
        count_sum(
            "invoices",
            None,
            tenant,
            Some(
                col("status")
                    .eq("overdue")
                    .or(col("status").eq("sent").and(col("due_on").lt(today))),
            ),
        ),
        count_sum(
            "orders",
            Some("total_cents"),
            tenant,
            Some(
                col("placed_at")
                    .gte(month_start)
                    .and(col("status").ne("cancelled")),
            ),
        ),
        count_sum(
            "orders",
            None,
            tenant,
            Some(col("placed_at").gte(month_start)),
        ),
    ]
}

/// The stats from the nine figure pairs of [`figures`].
fn assemble(f: [CountSum; 9]) -> DashboardStats {
    let [contacts, open_deals, won, pending, overdue_tasks, outstanding, overdue_invoices, orders, placed] =
        f;
    DashboardStats {
        contacts: ContactStats { total: contacts.n },
        deals: DealStats {
            open: open_deals.n,
            pipeline_cents: open_deals.cents,
            won_this_month: won.n,
            won_cents_this_month: won.cents,
        },
        tasks: TaskStats {
            pending: pending.n,
            overdue: overdue_tasks.n,
        },
        invoices: InvoiceStats {
            outstanding: outstanding.n,
            outstanding_cents: outstanding.cents,
            overdue: overdue_invoices.n,
        },
        orders: OrderStats {
            this_month: placed.n,
            revenue_cents_this_month: orders.cents,
        },
    }
}

/// Computes the dashboard of one tenant as of `now` (UTC months): one
/// statement per figure pair, run concurrently.
pub async fn dashboard(
    db: &Db,
    tenant: Uuid,
    now: DateTime<Utc>,
) -> Result<DashboardStats, DbError> {
    let one = |stmt: SelectStatement| async move {
        db.fetch_optional::<CountSum>(Target::Read, &stmt)
            .await
            .map(|r| r.unwrap_or(CountSum { n: 0, cents: 0 }))
    };
    let [a, b, c, d, e, f, g, h, i] = figures(tenant, now);
    let figures = tokio::try_join!(
        one(a),
        one(b),
        one(c),
        one(d),
        one(e),
        one(f),
        one(g),
        one(h),
        one(i),
    )?;
    let (a, b, c, d, e, f, g, h, i) = figures;
    Ok(assemble([a, b, c, d, e, f, g, h, i]))
}

/// The dashboard of one tenant as of `now` and the snapshot it was read in:
/// every figure from one statement, so from one point in the database's
/// history, which a cache can then keep exact by applying the writes the
/// snapshot did not see.
pub async fn dashboard_at(
    db: &Db,
    tenant: Uuid,
    now: DateTime<Utc>,
) -> Result<(DashboardStats, Snapshot), DbError> {
    let backend = db.backend();
    let mut stmt = Query::select();
    for (i, figure) in figures(tenant, now).into_iter().enumerate() {
        let alias = Alias::new(format!("f{i}"));
        stmt.expr_as(
            Expr::col((alias.clone(), Alias::new("n"))),
            Alias::new(format!("n{i}")),
        )
        .expr_as(
            Expr::col((alias.clone(), Alias::new("cents"))),
            Alias::new(format!("c{i}")),
        );
        if i == 0 {
            stmt.from_subquery(figure, alias);
        } else {
            stmt.join_subquery(JoinType::InnerJoin, figure, alias, Expr::cust("1 = 1"));
        }
    }
    stmt.expr_as(live::snapshot_expr(backend), Alias::new("live_snap"))
        .expr_as(live::standby_expr(backend), Alias::new("live_standby"));
    let row: AllFigures = db
        .fetch_optional(Target::Read, &stmt)
        .await?
        .ok_or_else(|| DbError::Config("the dashboard statement returned no row".into()))?;
    let snapshot =
        Snapshot::parse(&row.snap, row.standby != 0).map_err(|e| DbError::Config(e.to_string()))?;
    Ok((assemble(row.figures), snapshot))
}

/// The one row of [`dashboard_at`]'s statement.
struct AllFigures {
    figures: [CountSum; 9],
    snap: String,
    standby: i64,
}

impl<'r, DbRow> FromRow<'r, DbRow> for AllFigures
where
    DbRow: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<DbRow>,
    String: sqlx::Decode<'r, DbRow::Database> + sqlx::Type<DbRow::Database>,
    i64: sqlx::Decode<'r, DbRow::Database> + sqlx::Type<DbRow::Database>,
{
    fn from_row(row: &'r DbRow) -> Result<Self, sqlx::Error> {
        let mut figures = [0; 9].map(|_| CountSum { n: 0, cents: 0 });
        for (i, f) in figures.iter_mut().enumerate() {
            f.n = row.try_get(format!("n{i}").as_str())?;
            f.cents = row.try_get(format!("c{i}").as_str())?;
        }
        Ok(AllFigures {
            figures,
            snap: row.try_get("live_snap")?,
            standby: row.try_get("live_standby")?,
        })
    }
}

/// What one row adds to the dashboard as of `now`: the conditions of
/// [`figures`], evaluated in the process (every other figure is 0). A cache
/// keeps a dashboard exact by adding a write's new row and taking away its
/// old one.
pub fn contribution(row: &Facts, now: DateTime<Utc>) -> DashboardStats {
    let mut d = zero();
    let month_start = month_start(now).timestamp_micros();
    let now_micros = now.timestamp_micros();
    let today = date_number(now.date_naive());
    let status = row.text("status");
    let since_month = |column: &str| row.number(column).is_some_and(|t| t >= month_start);
    match row.spec().name {
        "contacts" => d.contacts.total = 1,
        "deals" => {
            let amount = row.number("amount_cents").unwrap_or(0);
            let stage = row.text("stage");
            if !matches!(stage, Some("won" | "lost")) {
                d.deals.open = 1;
                d.deals.pipeline_cents = amount;
            }
            if stage == Some("won") && since_month("closed_at") {
                d.deals.won_this_month = 1;
                d.deals.won_cents_this_month = amount;
            }
        }
        "tasks" => {
            d.tasks.pending = i64::from(status == Some("pending"));
            let past_due = row.number("due_at").is_some_and(|t| t < now_micros);
            d.tasks.overdue = i64::from(status != Some("done") && past_due);
        }
        "invoices" => {
            if matches!(status, Some("sent" | "overdue")) {
                d.invoices.outstanding = 1;
                d.invoices.outstanding_cents = row.number("total_cents").unwrap_or(0);
            }
            let past_due = row.number("due_on").is_some_and(|day| day < today);
            d.invoices.overdue =
                i64::from(status == Some("overdue") || (status == Some("sent") && past_due));
        }
        "orders" if since_month("placed_at") => {
            d.orders.this_month = 1;
            if status != Some("cancelled") {
                d.orders.revenue_cents_this_month = row.number("total_cents").unwrap_or(0);
            }
        }
        _ => {}
    }
    d
}

/// Every figure 0.
pub fn zero() -> DashboardStats {
    assemble([0; 9].map(|_| CountSum { n: 0, cents: 0 }))
}

/// `into += sign * delta`, figure by figure (sums wrap rather than panic; a
/// real tenant's cents never come near).
pub fn add(into: &mut DashboardStats, delta: &DashboardStats, sign: i64) {
    let f = |a: &mut i64, b: i64| *a = a.wrapping_add(sign.wrapping_mul(b));
    f(&mut into.contacts.total, delta.contacts.total);
    f(&mut into.deals.open, delta.deals.open);
    f(&mut into.deals.pipeline_cents, delta.deals.pipeline_cents);
    f(&mut into.deals.won_this_month, delta.deals.won_this_month);
    f(
        &mut into.deals.won_cents_this_month,
        delta.deals.won_cents_this_month,
    );
    f(&mut into.tasks.pending, delta.tasks.pending);
    f(&mut into.tasks.overdue, delta.tasks.overdue);
    f(&mut into.invoices.outstanding, delta.invoices.outstanding);
    f(
        &mut into.invoices.outstanding_cents,
        delta.invoices.outstanding_cents,
    );
    f(&mut into.invoices.overdue, delta.invoices.overdue);
    f(&mut into.orders.this_month, delta.orders.this_month);
    f(
        &mut into.orders.revenue_cents_this_month,
        delta.orders.revenue_cents_this_month,
    );
}
