//! The dashboard's aggregates, one indexed query per figure pair, run
//! concurrently. Never counts a row of another tenant.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use sea_query::{Alias, Asterisk, Expr, Func, Query, SelectStatement, SimpleExpr};
use sqlx::FromRow;
use uuid::Uuid;

use super::col;
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

/// Computes the dashboard of one tenant as of `now` (UTC months).
pub async fn dashboard(
    db: &Db,
    tenant: Uuid,
    now: DateTime<Utc>,
) -> Result<DashboardStats, DbError> {
    let today = now.date_naive();
    let month_start = NaiveDate::from_ymd_opt(today.year(), today.month(), 1)
        .unwrap_or(today)
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc();
    let closed = ["won", "lost"];

    let contacts = count_sum("contacts", None, tenant, None);
    let open_deals = count_sum(
        "deals",
        Some("amount_cents"),
        tenant,
        Some(col("stage").is_not_in(closed)),
    );
    let won = count_sum(
        "deals",
        Some("amount_cents"),
        tenant,
        Some(
            col("stage")
                .eq("won")
                .and(col("closed_at").gte(month_start)),
        ),
    );
    let pending = count_sum("tasks", None, tenant, Some(col("status").eq("pending")));
    let overdue_tasks = count_sum(
        "tasks",
        None,
        tenant,
        Some(col("status").ne("done").and(col("due_at").lt(now))),
    );
    let outstanding = count_sum(
        "invoices",
        Some("total_cents"),
        tenant,
        Some(col("status").is_in(["sent", "overdue"])),
    );
    let overdue_invoices = count_sum(
        "invoices",
        None,
        tenant,
        Some(
            col("status")
                .eq("overdue")
                .or(col("status").eq("sent").and(col("due_on").lt(today))),
        ),
    );
    let orders = count_sum(
        "orders",
        Some("total_cents"),
        tenant,
        Some(
            col("placed_at")
                .gte(month_start)
                .and(col("status").ne("cancelled")),
        ),
    );
    let placed = count_sum(
        "orders",
        None,
        tenant,
        Some(col("placed_at").gte(month_start)),
    );

    let one = |stmt: SelectStatement| async move {
        db.fetch_optional::<CountSum>(Target::Read, &stmt)
            .await
            .map(|r| r.unwrap_or(CountSum { n: 0, cents: 0 }))
    };
    let (
        contacts,
        open_deals,
        won,
        pending,
        overdue_tasks,
        outstanding,
        overdue_invoices,
        orders,
        placed,
    ) = tokio::try_join!(
        one(contacts),
        one(open_deals),
        one(won),
        one(pending),
        one(overdue_tasks),
        one(outstanding),
        one(overdue_invoices),
        one(orders),
        one(placed),
    )?;
    Ok(DashboardStats {
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
    })
}
