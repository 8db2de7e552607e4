//! Repositories: the SQL for every resource, written once with sea-query and
//! run on either backend. A resource is described by a [`Spec`] (its columns,
//! sort fields, search columns and filters); the generic functions here do
//! list, get, insert, update and delete for all five.
//! Never trusts a tenant id from anywhere but its caller, and never lets a
//! row of another tenant through: every statement is scoped by `tenant_id`.

pub mod auth;
pub mod eval;
mod live;
mod resources;
pub mod stats;

pub use live::{window, WindowRead};

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use sea_query::{
    Alias, Asterisk, Cond, Expr, Func, LikeExpr, NullOrdering, Order, Query, SelectStatement,
    SimpleExpr, Value,
};
use serde::Serialize;
use uuid::Uuid;

use crate::change::{Image, Token, Written};
use crate::pool::{AnyRow, Backend, Target};
use crate::{Db, DbError};

/// A sortable field: its API name, the column behind it, and whether it can
/// be NULL (NULLs sort last ascending and first descending, PostgreSQL's
/// order, on both backends so pages agree).
#[derive(Debug)]
pub struct SortField {
    pub field: &'static str,
    pub column: &'static str,
    pub nullable: bool,
    /// Sorted by the database's `lower()` of the column compared as bytes
    /// (`COLLATE "C"` on PostgreSQL, SQLite's BINARY): the same order on
    /// both backends, and one a cache reproduces exactly from the lowered
    /// values the database returns ([`crate::change::Lowered`]). The
    /// column must be one of the resource's [`Spec::search`] columns.
    pub text: bool,
}

/// How one list filter parameter is read and applied.
#[derive(Debug)]
pub enum FilterKind {
    /// Equality with one of a closed set of values.
    OneOf(&'static str, &'static [&'static str]),
    /// Equality with an id.
    Id(&'static str),
    /// Case-insensitive equality with a text column.
    TextCi(&'static str),
    /// The contact carries this tag.
    Tag,
    /// `true`: the deal is neither won nor lost; `false`: it is.
    Open,
    /// `true`: the task is not done and its due time has passed.
    Overdue,
    /// The column is earlier than a timestamp or date.
    Before(&'static str),
}

/// The longest value of a case-insensitive text filter, in characters.
pub const TEXT_FILTER_MAX: usize = 200;
/// The longest value of the tag filter, in characters.
pub const TAG_FILTER_MAX: usize = 40;

/// A list filter parameter of a resource.
#[derive(Debug)]
pub struct FilterSpec {
    pub name: &'static str,
    pub kind: FilterKind,
}

/// Everything the generic repository needs to know about a resource.
#[derive(Debug)]
pub struct Spec {
    /// The table, which is also the resource's name in the API.
    pub name: &'static str,
    /// Selected columns, in the order of [`Resource::values`].
    pub columns: &'static [&'static str],
    pub sorts: &'static [SortField],
    /// Columns that `q` searches, case-insensitively, anywhere in the text.
    /// Their lowered values come with every row a cache keeps
    /// ([`crate::change::Lowered`], in this order), so they also cover the
    /// columns of text sorts and case-insensitive filters.
    pub search: &'static [&'static str],
    pub filters: &'static [FilterSpec],
}

/// A parsed filter, ready to become a condition.
#[derive(Debug, Clone)]
pub enum Filter {
    Eq(&'static str, Value),
    TextCi(&'static str, String),
    Tag(String),
    Open(bool),
    Overdue(bool),
    Before(&'static str, DateTime<Utc>),
}

/// One page of a list: what to match, in which order, which slice.
#[derive(Debug, Clone)]
pub struct ListParams {
    /// 1-based page number.
    pub page: u32,
    pub per_page: u32,
    pub q: Option<String>,
    pub sort: &'static SortField,
    pub descending: bool,
    pub filters: Vec<Filter>,
}

/// A stored resource type. Implemented for the five resources of the API.
pub trait Resource: AnyRow + Clone + Serialize + Sync + 'static {
    const SPEC: Spec;
    fn id(&self) -> Uuid;
    fn updated_at(&self) -> DateTime<Utc>;
    /// The row's values in the order of `SPEC.columns`.
    fn values(&self) -> Vec<Value>;
    /// Contacts keep their tags in a side table as well, for the tag filter.
    fn tags(&self) -> Option<&[String]> {
        None
    }
}

impl Spec {
    /// The sort field an API `sort` value names (`field` or `-field`).
    pub fn parse_sort(&'static self, raw: &str) -> Result<(&'static SortField, bool), String> {
        let (name, descending) = match raw.strip_prefix('-') {
            Some(name) => (name, true),
            None => (raw, false),
        };
        self.sorts
            .iter()
            .find(|s| s.field == name)
            .map(|s| (s, descending))
            .ok_or_else(|| {
                let fields: Vec<_> = self.sorts.iter().map(|s| s.field).collect();
                format!("unknown sort field {name:?}; one of: {}", fields.join(", "))
            })
    }

    /// The default list order: newest first.
    pub fn default_params(&'static self) -> ListParams {
        let sort = self
            .sorts
            .iter()
            .find(|s| s.field == "created_at")
            .unwrap_or(&self.sorts[0]);
        ListParams {
            page: 1,
            per_page: 20,
            q: None,
            sort,
            descending: true,
            filters: Vec::new(),
        }
    }

    /// The filter an API parameter name refers to, if the resource has it.
    pub fn filter(&self, name: &str) -> Option<&FilterSpec> {
        self.filters.iter().find(|f| f.name == name)
    }
}

impl FilterSpec {
    /// Reads a filter's value from the query string; the error says why it is
    /// not acceptable.
    pub fn parse(&self, raw: &str) -> Result<Filter, String> {
        let boolean = |raw: &str| match raw {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err("must be true or false".to_owned()),
        };
        match self.kind {
            FilterKind::OneOf(column, allowed) => {
                if allowed.contains(&raw) {
                    Ok(Filter::Eq(column, raw.into()))
                } else {
                    Err(format!("must be one of: {}", allowed.join(", ")))
                }
            }
            FilterKind::Id(column) => Uuid::parse_str(raw)
                .map(|id| Filter::Eq(column, id.into()))
                .map_err(|_| "is not a valid id".to_owned()),
            FilterKind::TextCi(column)
                if !raw.is_empty() && raw.chars().count() <= TEXT_FILTER_MAX =>
            {
                Ok(Filter::TextCi(column, raw.to_owned()))
            }
            FilterKind::TextCi(_) => Err(format!("must be 1 to {TEXT_FILTER_MAX} characters")),
            FilterKind::Tag if !raw.is_empty() && raw.chars().count() <= TAG_FILTER_MAX => {
                Ok(Filter::Tag(raw.to_owned()))
            }
            FilterKind::Tag => Err(format!("must be 1 to {TAG_FILTER_MAX} characters")),
            FilterKind::Open => boolean(raw).map(Filter::Open),
            FilterKind::Overdue => boolean(raw).map(Filter::Overdue),
            FilterKind::Before(column) => parse_instant(raw)
                .map(|t| Filter::Before(column, t))
                .ok_or_else(|| "must be an RFC 3339 timestamp or a YYYY-MM-DD date".to_owned()),
        }
    }
}

/// An RFC 3339 timestamp, or a date taken as midnight UTC.
fn parse_instant(raw: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok()?;
    Some(date.and_time(NaiveTime::MIN).and_utc())
}

fn col(name: &str) -> Expr {
    Expr::col(Alias::new(name))
}

/// Escapes LIKE's wildcards so a search for "50%" means the text "50%".
fn like_pattern(text: &str) -> LikeExpr {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    LikeExpr::new(pattern).escape('\\')
}

impl Filter {
    fn condition(&self, tenant: Uuid, now: DateTime<Utc>) -> SimpleExpr {
        match self {
            Filter::Eq(column, value) => col(column).eq(value.clone()),
            Filter::TextCi(column, text) => {
                Expr::expr(Func::lower(col(column))).eq(text.to_lowercase())
            }
            Filter::Tag(tag) => col("id").in_subquery(
                Query::select()
                    .column(Alias::new("contact_id"))
                    .from(Alias::new("contact_tags"))
                    .and_where(col("tenant_id").eq(tenant))
                    .and_where(col("tag").eq(tag.as_str()))
                    .to_owned(),
            ),
            Filter::Open(open) => {
                let closed = ["won", "lost"];
                if *open {
                    col("stage").is_not_in(closed)
                } else {
                    col("stage").is_in(closed)
                }
            }
            Filter::Overdue(overdue) => {
                let is_overdue = col("status").ne("done").and(col("due_at").lt(now));
                if *overdue {
                    is_overdue
                } else {
                    col("status")
                        .eq("done")
                        .or(col("due_at").is_null())
                        .or(col("due_at").gte(now))
                }
            }
            Filter::Before(column, t) => col(column).lt(*t),
        }
    }
}

/// The rows a list matches, before ordering and paging.
fn matching(spec: &Spec, tenant: Uuid, params: &ListParams, now: DateTime<Utc>) -> SelectStatement {
    let mut query = Query::select();
    query
        .from(Alias::new(spec.name))
        .and_where(col("tenant_id").eq(tenant));
    for filter in &params.filters {
        query.and_where(filter.condition(tenant, now));
    }
    if let Some(text) = params.q.as_deref().filter(|q| !q.is_empty()) {
        let pattern = like_pattern(text);
        let mut any = Cond::any();
        for column in spec.search {
            any = any.add(Expr::expr(Func::lower(col(column))).like(pattern.clone()));
        }
        query.cond_where(any);
    }
    query
}

/// What a row is sorted by: its column, or for a text sort the database's
/// `lower()` of it compared as bytes.
fn sort_expr(sort: &SortField, backend: Backend) -> SimpleExpr {
    if !sort.text {
        return col(sort.column).into();
    }
    match backend {
        Backend::Postgres => Expr::cust(format!("lower(\"{}\") COLLATE \"C\"", sort.column)),
        Backend::Sqlite => Expr::cust(format!("lower(\"{}\")", sort.column)),
    }
}

/// The alias a lowered search column is selected under.
fn lowered_alias(column: &str) -> String {
    format!("lower_{column}")
}

/// Adds the lowered values of the spec's search columns to a select or a
/// `RETURNING` list, as [`Lowered`] decodes them.
fn lowered_exprs(spec: &Spec) -> impl Iterator<Item = (SimpleExpr, Alias)> + '_ {
    spec.search
        .iter()
        .map(|c| (Func::lower(col(c)).into(), Alias::new(lowered_alias(c))))
}

/// The statements behind a list: the page, and the count of all matches.
pub fn list_statements(
    spec: &Spec,
    tenant: Uuid,
    params: &ListParams,
    now: DateTime<Utc>,
    backend: Backend,
) -> (SelectStatement, SelectStatement) {
    let base = matching(spec, tenant, params, now);
    let (order, nulls) = if params.descending {
        (Order::Desc, NullOrdering::First)
    } else {
        (Order::Asc, NullOrdering::Last)
    };
    let mut page = base.clone();
    page.columns(spec.columns.iter().map(|c| Alias::new(*c)));
    let key = sort_expr(params.sort, backend);
    if params.sort.nullable {
        page.order_by_expr_with_nulls(key, order.clone(), nulls);
    } else {
        page.order_by_expr(key, order.clone());
    }
    // The id breaks ties so that pages never repeat or skip a row.
    page.order_by(Alias::new("id"), order)
        .limit(u64::from(params.per_page))
        .offset(u64::from(params.page.saturating_sub(1)) * u64::from(params.per_page));
    let mut count = base;
    count.expr(Func::count(Expr::col(Asterisk)));
    (page, count)
}

/// One page of a tenant's rows and the number of rows matching in all.
pub async fn list<R: Resource>(
    db: &Db,
    tenant: Uuid,
    params: &ListParams,
    now: DateTime<Utc>,
) -> Result<(Vec<R>, i64), DbError> {
    let (page, count) = list_statements(&R::SPEC, tenant, params, now, db.backend());
    // How to find a search's rows depends on its text (see `planned_per_call`).
    let searching;
    let db = if params.q.as_deref().is_some_and(|q| !q.is_empty()) {
        searching = db.planned_per_call();
        &searching
    } else {
        db
    };
    let (items, total) = tokio::try_join!(
        db.fetch_all(Target::Read, &page),
        db.fetch_i64(Target::Read, &count)
    )?;
    Ok((items, total))
}

/// The query plans of a list's statements, the page's then the count's, one
/// line per plan node (PostgreSQL only; `None` on SQLite).
pub async fn explain_list(
    db: &Db,
    spec: &Spec,
    tenant: Uuid,
    params: &ListParams,
    now: DateTime<Utc>,
) -> Result<Option<[Vec<String>; 2]>, DbError> {
    let (page, count) = list_statements(spec, tenant, params, now, Backend::Postgres);
    let (Some(page), Some(count)) = (db.explain(&page).await?, db.explain(&count).await?) else {
        return Ok(None);
    };
    Ok(Some([page, count]))
}

fn by_id(spec: &Spec, tenant: Uuid, id: Uuid) -> SelectStatement {
    Query::select()
        .columns(spec.columns.iter().map(|c| Alias::new(*c)))
        .from(Alias::new(spec.name))
        .and_where(col("tenant_id").eq(tenant))
        .and_where(col("id").eq(id))
        .to_owned()
}

/// One row of the tenant, from a read pool.
pub async fn get<R: Resource>(db: &Db, tenant: Uuid, id: Uuid) -> Result<Option<R>, DbError> {
    db.fetch_optional(Target::Read, &by_id(&R::SPEC, tenant, id))
        .await
}

/// One row of the tenant, from the primary: the current version, as a write
/// about to change it must see, with its lowered texts (the image a change
/// record carries of the row before the write).
pub async fn get_current<R: Resource>(
    db: &Db,
    tenant: Uuid,
    id: Uuid,
) -> Result<Option<Image<R>>, DbError> {
    let mut stmt = by_id(&R::SPEC, tenant, id);
    for (expr, alias) in lowered_exprs(&R::SPEC) {
        stmt.expr_as(expr, alias);
    }
    Ok(db
        .fetch_optional::<live::WithLowered<R>>(Target::Primary, &stmt)
        .await?
        .map(live::WithLowered::into_image))
}

/// Whether the tenant has a row with this id in the table (checked on the
/// primary, so a row created a moment ago counts).
pub async fn exists(db: &Db, table: &str, tenant: Uuid, id: Uuid) -> Result<bool, DbError> {
    let stmt = Query::select()
        .expr(Func::count(Expr::col(Asterisk)))
        .from(Alias::new(table))
        .and_where(col("tenant_id").eq(tenant))
        .and_where(col("id").eq(id))
        .to_owned();
    Ok(db.fetch_i64(Target::Primary, &stmt).await? > 0)
}

/// `fresh`: the row was just inserted, so it has no tags to clear yet.
async fn write_tags<R: Resource>(
    tx: &mut crate::pool::Tx,
    tenant: Uuid,
    row: &R,
    fresh: bool,
) -> Result<(), DbError> {
    let Some(tags) = row.tags() else {
        return Ok(());
    };
    if !fresh {
        let clear = Query::delete()
            .from_table(Alias::new("contact_tags"))
            .and_where(col("contact_id").eq(row.id()))
            .to_owned();
        tx.execute(&clear).await?;
    }
    if tags.is_empty() {
        return Ok(());
    }
    let mut insert = Query::insert();
    insert.into_table(Alias::new("contact_tags")).columns([
        Alias::new("tenant_id"),
        Alias::new("contact_id"),
        Alias::new("tag"),
    ]);
    let mut seen = std::collections::HashSet::new();
    for tag in tags.iter().filter(|t| seen.insert(t.as_str())) {
        insert
            .values([tenant.into(), row.id().into(), tag.as_str().into()])
            .map_err(|e| DbError::Config(e.to_string()))?;
    }
    tx.execute(&insert).await?;
    Ok(())
}

/// What a write's `RETURNING` lists: the lowered texts of the row, and on
/// PostgreSQL the transaction id (`live_token`; SQLite's token comes from
/// `change_seq` instead).
fn returning(spec: &Spec, backend: Backend, all_columns: bool) -> sea_query::ReturningClause {
    let mut exprs: Vec<SimpleExpr> = Vec::new();
    if all_columns {
        exprs.extend(spec.columns.iter().map(|c| col(c).into()));
    }
    // Static names from the spec, never input.
    exprs.extend(
        spec.search
            .iter()
            .map(|c| Expr::cust(format!("lower(\"{c}\") AS \"{}\"", lowered_alias(c)))),
    );
    if backend == Backend::Postgres {
        exprs.push(Expr::cust("pg_current_xact_id()::text AS live_token"));
    }
    Query::returning().exprs(exprs)
}

/// Stores a new row of the tenant; reports the write's token and the row's
/// lowered texts.
pub async fn insert<R: Resource>(db: &Db, tenant: Uuid, row: &R) -> Result<Written, DbError> {
    let mut values = row.values();
    // The tenant column is always the caller's, whatever the row says.
    let tenant_index = R::SPEC.columns.iter().position(|c| *c == "tenant_id");
    if let Some(i) = tenant_index {
        values[i] = tenant.into();
    }
    let stmt = Query::insert()
        .into_table(Alias::new(R::SPEC.name))
        .columns(R::SPEC.columns.iter().map(|c| Alias::new(*c)))
        .values(values.into_iter().map(SimpleExpr::from))
        .map_err(|e| DbError::Config(e.to_string()))?
        .returning(returning(&R::SPEC, db.backend(), false))
        .to_owned();
    let missing = || DbError::Config("an insert returned no row".into());
    if row.tags().is_none_or(<[String]>::is_empty) {
        // One statement commits by itself: two round trips fewer.
        let (lowered, token) = db
            .write_returning::<live::LoweredRow<R>>(&stmt)
            .await?
            .ok_or_else(missing)?;
        return Ok(Written {
            token,
            lowered: lowered.0,
        });
    }
    let mut tx = db.begin().await?;
    let lowered = tx
        .write_returning::<live::LoweredRow<R>>(&stmt)
        .await?
        .ok_or_else(missing)?;
    write_tags(&mut tx, tenant, row, true).await?;
    let token = tx.token().await?;
    tx.commit().await?;
    Ok(Written {
        token,
        lowered: lowered.0,
    })
}

/// Replaces a row of the tenant if it is still the version last read
/// (`expected_updated_at`); `None` when it changed or vanished meanwhile.
pub async fn update<R: Resource>(
    db: &Db,
    tenant: Uuid,
    row: &R,
    expected_updated_at: DateTime<Utc>,
) -> Result<Option<Written>, DbError> {
    let immutable = ["id", "tenant_id", "created_at"];
    let pairs = R::SPEC
        .columns
        .iter()
        .zip(row.values())
        .filter(|(c, _)| !immutable.contains(c))
        .map(|(c, v)| (Alias::new(*c), SimpleExpr::from(v)));
    let stmt = Query::update()
        .table(Alias::new(R::SPEC.name))
        .values(pairs)
        .and_where(col("tenant_id").eq(tenant))
        .and_where(col("id").eq(row.id()))
        .and_where(col("updated_at").eq(expected_updated_at))
        .returning(returning(&R::SPEC, db.backend(), false))
        .to_owned();
    if row.tags().is_none() {
        return Ok(db.write_returning::<live::LoweredRow<R>>(&stmt).await?.map(
            |(lowered, token)| Written {
                token,
                lowered: lowered.0,
            },
        ));
    }
    let mut tx = db.begin().await?;
    let Some(lowered) = tx.write_returning::<live::LoweredRow<R>>(&stmt).await? else {
        return Ok(None);
    };
    write_tags(&mut tx, tenant, row, false).await?;
    let token = tx.token().await?;
    tx.commit().await?;
    Ok(Some(Written {
        token,
        lowered: lowered.0,
    }))
}

/// Deletes a row of the tenant; `None` when there was none, else the row as
/// it was and the write's token.
pub async fn delete<R: Resource>(
    db: &Db,
    tenant: Uuid,
    id: Uuid,
) -> Result<Option<(Image<R>, Token)>, DbError> {
    let stmt = Query::delete()
        .from_table(Alias::new(R::SPEC.name))
        .and_where(col("tenant_id").eq(tenant))
        .and_where(col("id").eq(id))
        .returning(returning(&R::SPEC, db.backend(), true))
        .to_owned();
    Ok(db
        .write_returning::<live::WithLowered<R>>(&stmt)
        .await?
        .map(|(row, token)| (row.into_image(), token)))
}
