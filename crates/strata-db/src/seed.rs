//! Bulk generation of realistic demo and load-test data.
//! Never used by the request path; writes with large multi-row INSERTs.
//!
//! Each tenant is generated from its own random generator (derived from the
//! caller's seed and the tenant's index) and written in one transaction, so
//! the data do not depend on which tenants happen to run concurrently, and a
//! failure never leaves a half-written tenant behind. Rows of each table are
//! generated in `created_at` order and their UUIDv7 ids carry that time, so
//! the primary key and the `(tenant_id, created_at, id)` indexes are filled
//! by appends rather than random page splits.
//!
//! Every generated value is relative to the moment `seed` starts ("now"):
//! ids, names, amounts and statuses are the same for the same seed, the
//! timestamps move with the clock.

use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_query::{Alias, Expr, Query, SimpleExpr, Value};
use sqlx::FromRow;
use uuid::Uuid;

use crate::model::{
    db_time, Contact, Deal, DealStage, Invoice, InvoiceStatus, Line, Order, OrderStatus, Role,
    Task, TaskPriority, TaskStatus,
};
use crate::pool::{Target, Tx};
use crate::repo::Resource;
use crate::{Backend, Db, DbError};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    /// How many tenants; tenant `i` (from 1) gets the admin `admin@tenant{i}.example`.
    pub tenants: u32,
    /// Multiplies every tenant's size: at 1.0 the average tenant has 10 000
    /// contacts, 2 000 deals, 5 000 tasks, 1 000 invoices and 1 000 orders.
    /// Every tenant has at least one row of each, whatever the scale.
    pub scale: f64,
    /// The password hash (argon2, computed by the caller) of every seeded user.
    pub password_hash: String,
    /// Seeds the random generators: the same value gives the same data.
    pub seed: u64,
}

/// One tenant that [`seed`] created, with how many rows it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededTenant {
    /// The tenant's number, from 1; tenant 1 is the largest.
    pub index: u32,
    pub tenant_id: Uuid,
    pub name: String,
    /// `admin@tenant{index}.example`, with the password the hash was made from.
    pub admin_email: String,
    pub contacts: u64,
    pub deals: u64,
    pub tasks: u64,
    pub invoices: u64,
    pub orders: u64,
}

/// Creates `opts.tenants` tenants of skewed sizes (a few large, many small),
/// each with an admin, two members and realistic contacts, deals, tasks,
/// invoices and orders, and calls `on_tenant` as each one is committed (in
/// completion order, which on PostgreSQL is not index order). Returns them
/// all in index order.
///
/// Fails with [`DbError::Config`] before writing anything when one of the
/// seeded users' emails (`admin@tenant{i}.example`,
/// `member{k}@tenant{i}.example`) already exists, since emails are unique
/// across tenants; or when the scale is negative or not a number, there are
/// over 100 000 tenants, or a tenant would get over 20 million contacts.
/// A failure part-way leaves the tenants committed so far.
///
/// PostgreSQL seeds up to four tenants at once, on separate connections
/// (fewer when the pool is smaller), then runs `ANALYZE`; SQLite, which has
/// a single writer, seeds one tenant after the other.
pub async fn seed(
    db: &Db,
    opts: &SeedOptions,
    on_tenant: impl Fn(&SeededTenant) + Send + Sync,
) -> Result<Vec<SeededTenant>, DbError> {
    if !opts.scale.is_finite() || opts.scale < 0.0 {
        return Err(DbError::Config(format!(
            "seed scale must be a number ≥ 0, got {}",
            opts.scale
        )));
    }
    if opts.tenants == 0 {
        return Ok(Vec::new());
    }
    if opts.tenants > MAX_TENANTS {
        return Err(DbError::Config(format!(
            "seed tenants must be at most {MAX_TENANTS}, got {}",
            opts.tenants
        )));
    }
    let plans = plan_sizes(opts.tenants, opts.scale);
    // A tenant is generated with its contacts' ids and times in memory (and
    // its timeline sorted): bound it rather than fail on allocation.
    if let Some(largest) = plans.iter().find(|p| p.contacts > MAX_TENANT_CONTACTS) {
        return Err(DbError::Config(format!(
            "seed scale {} gives tenant {} {} contacts; at most {MAX_TENANT_CONTACTS} per tenant",
            opts.scale, largest.index, largest.contacts
        )));
    }
    refuse_existing_users(db, opts.tenants).await?;

    let now = db_time(Utc::now());
    // Each concurrent tenant holds one connection for its whole transaction:
    // more workers than the pool has connections would only wait, and could
    // time out waiting.
    let workers = match db.backend() {
        Backend::Postgres => (db.write_connections() as usize).clamp(1, PG_WORKERS),
        Backend::Sqlite => 1,
    };
    let next = AtomicUsize::new(0);
    let worker = |slot: usize| {
        let (next, plans, on_tenant) = (&next, &plans, &on_tenant);
        async move {
            let mut done = Vec::new();
            if slot >= workers {
                return Ok(done);
            }
            // Tenants are handed out largest first, so the biggest one never
            // starts last and becomes the tail of the run.
            while let Some(sizes) = plans.get(next.fetch_add(1, Ordering::Relaxed)) {
                let seeded = seed_tenant(db, sizes, opts, now).await?;
                on_tenant(&seeded);
                done.push(seeded);
            }
            Ok::<_, DbError>(done)
        }
    };
    // All workers run in this one task (no spawning: the callback and the
    // options are borrowed). Generating rows is cheap next to inserting
    // them, so one client thread keeps the database's connections busy.
    let (a, b, c, d) = tokio::try_join!(worker(0), worker(1), worker(2), worker(3))?;
    let mut seeded: Vec<SeededTenant> = a.into_iter().chain(b).chain(c).chain(d).collect();
    seeded.sort_by_key(|t| t.index);

    if db.backend() == Backend::Postgres {
        // Fresh statistics, so that list queries use their indexes at once
        // instead of after autovacuum's next round.
        db.execute_sql(
            "ANALYZE tenants, users, contacts, contact_tags, deals, tasks, invoices, orders",
        )
        .await?;
    }
    Ok(seeded)
}

/// Bounds that keep a mistyped `--tenants` or `--scale` an error message
/// rather than an out-of-memory crash (about 1.6 GB of contact references).
const MAX_TENANTS: u32 = 100_000;
const MAX_TENANT_CONTACTS: u64 = 20_000_000;

/// How many tenants PostgreSQL seeds at once: on two cores more connections
/// only contend for the same CPUs (the `try_join!` above has this many arms).
const PG_WORKERS: usize = 4;

/// The most bind parameters one statement may carry.
fn max_params(backend: Backend) -> usize {
    match backend {
        // The protocol counts parameters in 16 bits.
        Backend::Postgres => 65_535,
        // SQLITE_MAX_VARIABLE_NUMBER's default since 3.32.
        Backend::Sqlite => 32_766,
    }
}

const MEMBERS_PER_TENANT: u32 = 2;

fn admin_email(index: u32) -> String {
    format!("admin@tenant{index}.example")
}

fn member_email(index: u32, k: u32) -> String {
    format!("member{k}@tenant{index}.example")
}

/// Fails, naming the first one found, when a user the seed would create exists.
async fn refuse_existing_users(db: &Db, tenants: u32) -> Result<(), DbError> {
    #[derive(FromRow)]
    struct Email {
        email: String,
    }
    let emails: Vec<String> = (1..=tenants)
        .flat_map(|i| {
            std::iter::once(admin_email(i))
                .chain((1..=MEMBERS_PER_TENANT).map(move |k| member_email(i, k)))
        })
        .collect();
    // Well under both backends' parameter limits per statement.
    for chunk in emails.chunks(1_000) {
        let stmt = Query::select()
            .column(Alias::new("email"))
            .from(Alias::new("users"))
            .and_where(Expr::col(Alias::new("email")).is_in(chunk.iter().map(String::as_str)))
            .limit(1)
            .to_owned();
        if let Some(found) = db.fetch_optional::<Email>(Target::Primary, &stmt).await? {
            return Err(DbError::Config(format!(
                "cannot seed: a user with email {} already exists (emails are unique across tenants; \
                 seed into a database without seeded tenants)",
                found.email
            )));
        }
    }
    Ok(())
}

/// Row counts of one tenant.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    index: u32,
    contacts: u64,
    deals: u64,
    tasks: u64,
    invoices: u64,
    orders: u64,
}

/// The average tenant at scale 1.
const AVERAGE: Sizes = Sizes {
    index: 0,
    contacts: 10_000,
    deals: 2_000,
    tasks: 5_000,
    invoices: 1_000,
    orders: 1_000,
};

/// Zipf's exponent for tenant sizes: tenant `i` weighs `1 / i^s`. At 1.0 and
/// 100 tenants the first is about 19 times the average and the last a fifth of it.
const ZIPF_EXPONENT: f64 = 1.0;

/// Every tenant's counts: Zipf weights normalised so that the mean tenant is
/// `AVERAGE * scale`, with at least one row of each kind.
fn plan_sizes(tenants: u32, scale: f64) -> Vec<Sizes> {
    let weights: Vec<f64> = (1..=tenants)
        .map(|i| f64::from(i).powf(-ZIPF_EXPONENT))
        .collect();
    let total: f64 = weights.iter().sum();
    (1..=tenants)
        .zip(&weights)
        .map(|(index, weight)| {
            // This tenant's size as a multiple of the average tenant's.
            let factor = weight / total * f64::from(tenants) * scale;
            // `as` saturates; the values are finite and non-negative.
            let n = |average: u64| ((average as f64) * factor).round().max(1.0) as u64;
            Sizes {
                index,
                contacts: n(AVERAGE.contacts),
                deals: n(AVERAGE.deals),
                tasks: n(AVERAGE.tasks),
                invoices: n(AVERAGE.invoices),
                orders: n(AVERAGE.orders),
            }
        })
        .collect()
}

/// Generates and writes one tenant in one transaction, a statement's worth
/// of rows at a time: besides one statement's rows, only each table's sorted
/// creation times and small references to contacts and deals (for the rows
/// that link to them) are held in memory.
async fn seed_tenant(
    db: &Db,
    sizes: &Sizes,
    opts: &SeedOptions,
    now: DateTime<Utc>,
) -> Result<SeededTenant, DbError> {
    let limit = max_params(db.backend());
    let mut g = Generator::new(opts.seed, sizes, now);
    let mut tx = db.begin().await?;

    // The tenant and its users.
    let tenant_id = g.tenant_id;
    let (name, currency) = (g.tenant_name.clone(), g.currency);
    let stmt = Query::insert()
        .into_table(Alias::new("tenants"))
        .columns(["id", "name", "currency", "created_at"].map(Alias::new))
        .values([
            tenant_id.into(),
            name.clone().into(),
            currency.into(),
            g.tenant_created.into(),
        ])
        .map_err(build_error)?
        .to_owned();
    tx.execute(&stmt).await?;
    let users = g.users(sizes.index, &opts.password_hash);
    insert_rows(&mut tx, limit, "users", &USER_COLUMNS, users).await?;

    let timeline = g.timeline(sizes.contacts, CONTACT_SPAN_DAYS, 0.01);
    for chunk in timeline.chunks(rows_per_statement(limit, Contact::SPEC.columns.len())) {
        let contacts: Vec<Contact> = chunk.iter().map(|t| g.contact(*t)).collect();
        // The tag filter reads `contact_tags`; it must hold exactly the JSON
        // tags, as `repo::insert` keeps it (tags are distinct per contact).
        let tags: Vec<Vec<Value>> = contacts
            .iter()
            .flat_map(|c| {
                c.tags
                    .iter()
                    .map(|tag| vec![tenant_id.into(), c.id.into(), tag.as_str().into()])
            })
            .collect();
        insert_resources(&mut tx, limit, &contacts).await?;
        insert_rows(
            &mut tx,
            limit,
            "contact_tags",
            &["tenant_id", "contact_id", "tag"],
            tags,
        )
        .await?;
    }

    let timeline = g.timeline(sizes.deals, DEAL_SPAN_DAYS, 0.01);
    for chunk in timeline.chunks(rows_per_statement(limit, Deal::SPEC.columns.len())) {
        let deals: Vec<Deal> = chunk.iter().map(|t| g.deal(*t)).collect();
        insert_resources(&mut tx, limit, &deals).await?;
    }

    let timeline = g.timeline(sizes.tasks, TASK_SPAN_DAYS, 0.02);
    for chunk in timeline.chunks(rows_per_statement(limit, Task::SPEC.columns.len())) {
        let tasks: Vec<Task> = chunk.iter().map(|t| g.task(*t)).collect();
        insert_resources(&mut tx, limit, &tasks).await?;
    }

    let timeline = g.timeline(sizes.invoices, INVOICE_SPAN_DAYS, 0.03);
    let mut number = 0u64;
    for chunk in timeline.chunks(rows_per_statement(limit, Invoice::SPEC.columns.len())) {
        let invoices: Vec<Invoice> = chunk
            .iter()
            .map(|t| {
                number += 1;
                g.invoice(number, *t)
            })
            .collect();
        insert_resources(&mut tx, limit, &invoices).await?;
    }

    let timeline = g.timeline(sizes.orders, ORDER_SPAN_DAYS, 0.06);
    let mut number = 0u64;
    for chunk in timeline.chunks(rows_per_statement(limit, Order::SPEC.columns.len())) {
        let orders: Vec<Order> = chunk
            .iter()
            .map(|t| {
                number += 1;
                g.order(number, *t)
            })
            .collect();
        insert_resources(&mut tx, limit, &orders).await?;
    }

    tx.commit().await?;
    Ok(SeededTenant {
        index: sizes.index,
        tenant_id,
        name,
        admin_email: admin_email(sizes.index),
        contacts: sizes.contacts,
        deals: sizes.deals,
        tasks: sizes.tasks,
        invoices: sizes.invoices,
        orders: sizes.orders,
    })
}

/// Rows of `columns` values that fit one statement, and at most 1 000. More
/// rows per statement means fewer round trips; the full-size statements all
/// have the same text, so each connection prepares it once. The cap keeps
/// each statement well under a second: a slower one trips sqlx's
/// slow-statement warning, which logs the whole statement (400 kB for 5 000
/// contacts).
fn rows_per_statement(limit: usize, columns: usize) -> usize {
    (limit / columns.max(1)).clamp(1, 1_000)
}

fn build_error(e: sea_query::error::Error) -> DbError {
    DbError::Config(format!("seed statement: {e}"))
}

/// Inserts resource rows with exactly the columns and encodings `repo::insert` uses.
async fn insert_resources<R: Resource>(
    tx: &mut Tx,
    limit: usize,
    rows: &[R],
) -> Result<(), DbError> {
    let values = rows.iter().map(Resource::values).collect();
    insert_rows(tx, limit, R::SPEC.name, R::SPEC.columns, values).await
}

/// Inserts rows with as many multi-row INSERTs as the parameter limit needs.
async fn insert_rows(
    tx: &mut Tx,
    limit: usize,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<Value>>,
) -> Result<(), DbError> {
    let per_statement = rows_per_statement(limit, columns.len());
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut stmt = Query::insert();
        stmt.into_table(Alias::new(table))
            .columns(columns.iter().map(|c| Alias::new(*c)));
        for row in rows.by_ref().take(per_statement) {
            stmt.values(row.into_iter().map(SimpleExpr::from))
                .map_err(build_error)?;
        }
        tx.execute(&stmt).await?;
    }
    Ok(())
}

const USER_COLUMNS: [&str; 7] = [
    "id",
    "tenant_id",
    "email",
    "name",
    "role",
    "password_hash",
    "created_at",
];

// How far back each kind of row goes (the tenant is a little older than all).
const CONTACT_SPAN_DAYS: i64 = 3 * 365;
const DEAL_SPAN_DAYS: i64 = 2 * 365;
const TASK_SPAN_DAYS: i64 = 365;
const INVOICE_SPAN_DAYS: i64 = 2 * 365;
const ORDER_SPAN_DAYS: i64 = 2 * 365;

/// What a later row needs to know about a contact it may link to.
struct ContactRef {
    id: Uuid,
    created_at: DateTime<Utc>,
    first_name: &'static str,
    last_name: Option<&'static str>,
    company: Option<usize>,
}

/// What a task needs to know about a deal it may link to.
struct DealRef {
    id: Uuid,
    created_at: DateTime<Utc>,
    contact: Option<usize>,
}

struct Company {
    name: String,
    domain: String,
}

/// One tenant's random data, drawn from one deterministic generator.
struct Generator {
    rng: StdRng,
    now: DateTime<Utc>,
    month_start: DateTime<Utc>,
    tenant_id: Uuid,
    tenant_name: String,
    tenant_created: DateTime<Utc>,
    currency: &'static str,
    companies: Vec<Company>,
    /// In creation order, so "a contact that existed then" is a prefix.
    contacts: Vec<ContactRef>,
    deals: Vec<DealRef>,
}

impl Generator {
    fn new(seed: u64, sizes: &Sizes, now: DateTime<Utc>) -> Generator {
        // Distinct, well-mixed streams per tenant (StdRng's seed_from_u64
        // mixes the value further), independent of the order tenants run in.
        let stream = seed ^ u64::from(sizes.index).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rng = StdRng::seed_from_u64(stream);
        let today = now.date_naive();
        let month_start = NaiveDate::from_ymd_opt(
            chrono::Datelike::year(&today),
            chrono::Datelike::month(&today),
            1,
        )
        .unwrap_or(today)
        .and_time(NaiveTime::MIN)
        .and_utc();
        let currency = weighted(&mut rng, CURRENCIES);
        let tenant_name = format!(
            "{}{} {} {}",
            pick(&mut rng, COMPANY_STEMS),
            pick(&mut rng, COMPANY_ENDINGS),
            pick(&mut rng, SECTORS),
            legal_suffix(&mut rng, currency)
        );
        let tenant_created =
            db_time(now - Duration::days(CONTACT_SPAN_DAYS + rng.random_range(1..90)));
        let tenant_id = uuid_at(&mut rng, tenant_created);
        // Few enough companies that several contacts share each, and the
        // company filter finds a handful (or, for the popular ones, many).
        let company_count = (sizes.contacts / 12).clamp(3, 20_000) as usize;
        let companies = (0..company_count).map(|_| company(&mut rng)).collect();
        Generator {
            rng,
            now,
            month_start,
            tenant_id,
            tenant_name,
            tenant_created,
            currency,
            companies,
            contacts: Vec::with_capacity(sizes.contacts.min(1 << 20) as usize),
            deals: Vec::with_capacity(sizes.deals.min(1 << 20) as usize),
        }
    }

    /// `n` creation times over the last `span_days`, oldest first, denser
    /// towards now (a growing business); `this_month` of them fall in the
    /// current calendar month whatever the span, so "this month" figures are
    /// never empty.
    fn timeline(&mut self, n: u64, span_days: i64, this_month: f64) -> Vec<DateTime<Utc>> {
        let span = Duration::days(span_days)
            .num_microseconds()
            .unwrap_or(i64::MAX);
        let mut times: Vec<DateTime<Utc>> = (0..n)
            .map(|_| {
                if self.rng.random_bool(this_month) {
                    self.between(self.month_start, self.now)
                } else {
                    let age = (span as f64 * self.rng.random::<f64>().powf(1.6)) as i64;
                    db_time(self.now - Duration::microseconds(age))
                }
            })
            .collect();
        times.sort_unstable();
        times
    }

    /// A time uniformly between `from` and `to` (`from` when the range is empty).
    fn between(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> DateTime<Utc> {
        let span = (to - from).num_microseconds().unwrap_or(0);
        if span <= 0 {
            return from;
        }
        db_time(from + Duration::microseconds(self.rng.random_range(0..=span)))
    }

    /// The last change of a row created at `t`: often never changed.
    fn updated_after(&mut self, t: DateTime<Utc>) -> DateTime<Utc> {
        if self.rng.random_bool(0.5) {
            t
        } else {
            self.between(t, self.now)
        }
    }

    fn users(&mut self, index: u32, password_hash: &str) -> Vec<Vec<Value>> {
        let mut users = vec![(admin_email(index), format!("Admin {index}"), Role::Admin)];
        for k in 1..=MEMBERS_PER_TENANT {
            let name = format!(
                "{} {}",
                pick(&mut self.rng, FIRST_NAMES),
                pick(&mut self.rng, LAST_NAMES)
            );
            users.push((member_email(index, k), name, Role::Member));
        }
        users
            .into_iter()
            .map(|(email, name, role)| {
                let created = self.between(
                    self.tenant_created,
                    self.tenant_created + Duration::days(30),
                );
                vec![
                    uuid_at(&mut self.rng, created).into(),
                    self.tenant_id.into(),
                    email.into(),
                    name.into(),
                    role.into(),
                    password_hash.into(),
                    created.into(),
                ]
            })
            .collect()
    }

    fn contact(&mut self, t: DateTime<Utc>) -> Contact {
        let first = pick(&mut self.rng, FIRST_NAMES);
        let last = self
            .rng
            .random_bool(0.95)
            .then(|| pick(&mut self.rng, LAST_NAMES));
        // Popular companies first: squaring skews the pick towards the start.
        let company = self.rng.random_bool(0.8).then(|| {
            let u: f64 = self.rng.random();
            ((u * u * self.companies.len() as f64) as usize).min(self.companies.len() - 1)
        });
        let email = self
            .rng
            .random_bool(0.9)
            .then(|| self.email(first, last, company));
        let phone = self.rng.random_bool(0.7).then(|| self.phone());
        let tags = self.tags();
        let id = uuid_at(&mut self.rng, t);
        let updated_at = self.updated_after(t);
        self.contacts.push(ContactRef {
            id,
            created_at: t,
            first_name: first,
            last_name: last,
            company,
        });
        Contact {
            id,
            tenant_id: self.tenant_id,
            first_name: first.to_owned(),
            last_name: last.map(str::to_owned),
            email,
            phone,
            company: company.map(|c| self.companies[c].name.clone()),
            tags,
            created_at: t,
            updated_at,
        }
    }

    fn email(&mut self, first: &str, last: Option<&str>, company: Option<usize>) -> String {
        let first = ascii_slug(first);
        let local = match last.map(ascii_slug) {
            Some(last) => match self.rng.random_range(0..4) {
                0 => format!("{first}.{last}"),
                1 => format!("{}{last}", first.chars().next().unwrap_or('x')),
                2 => format!("{first}{last}"),
                _ => format!("{first}_{last}"),
            },
            None => first,
        };
        match company {
            Some(c) if self.rng.random_bool(0.75) => {
                format!("{local}@{}", self.companies[c].domain)
            }
            _ => {
                let domain = pick(&mut self.rng, FREE_MAIL);
                if self.rng.random_bool(0.5) {
                    format!("{local}{}@{domain}", self.rng.random_range(1..100))
                } else {
                    format!("{local}@{domain}")
                }
            }
        }
    }

    fn phone(&mut self) -> String {
        let digits =
            |rng: &mut StdRng, n: u32| rng.random_range(10u64.pow(n - 1)..10u64.pow(n)).to_string();
        match self.currency {
            "USD" => format!(
                "+1 {} 555 {:04}",
                digits(&mut self.rng, 3),
                self.rng.random_range(100..200)
            ),
            "GBP" => format!("+44 20 7946 {:04}", self.rng.random_range(0..1000)),
            "CHF" => format!(
                "+41 44 {} {}",
                digits(&mut self.rng, 3),
                digits(&mut self.rng, 4)
            ),
            "SEK" => format!(
                "+46 8 {} {}",
                digits(&mut self.rng, 3),
                digits(&mut self.rng, 3)
            ),
            _ => {
                let (country, area) = pick(&mut self.rng, EURO_PHONE_PREFIXES);
                format!("+{country} {area} {}", digits(&mut self.rng, 7))
            }
        }
    }

    /// 0 to 4 distinct tags, common ones more often.
    fn tags(&mut self) -> Vec<String> {
        let count = weighted(
            &mut self.rng,
            &[(0usize, 30), (1, 35), (2, 20), (3, 10), (4, 5)],
        );
        let mut tags: Vec<String> = Vec::with_capacity(count);
        while tags.len() < count {
            let tag = weighted(&mut self.rng, TAGS);
            if !tags.iter().any(|t| t == tag) {
                tags.push(tag.to_owned());
            }
        }
        tags
    }

    /// A contact that already existed at `t` (any contact when none did).
    fn contact_before(&mut self, t: DateTime<Utc>) -> Option<usize> {
        if self.contacts.is_empty() {
            return None;
        }
        let existing = self.contacts.partition_point(|c| c.created_at <= t);
        Some(self.rng.random_range(0..existing.max(1)))
    }

    fn contact_label(&self, c: usize) -> String {
        let contact = &self.contacts[c];
        match contact.company {
            Some(company) => self.companies[company].name.clone(),
            None => match contact.last_name {
                Some(last) => format!("{} {last}", contact.first_name),
                None => contact.first_name.to_owned(),
            },
        }
    }

    fn deal(&mut self, t: DateTime<Utc>) -> Deal {
        let contact = if self.rng.random_bool(0.9) {
            self.contact_before(t)
        } else {
            None
        };
        let offer = pick(&mut self.rng, OFFERS);
        let title = match contact {
            Some(c) => format!("{}: {offer}", self.contact_label(c)),
            None => capitalise(offer),
        };
        // Old deals have mostly been decided; young ones are in the pipeline.
        let stage = if (self.now - t).num_days() > 120 {
            weighted(&mut self.rng, OLD_DEAL_STAGES)
        } else {
            weighted(&mut self.rng, YOUNG_DEAL_STAGES)
        };
        let closed_at = (!stage.is_open()).then(|| {
            if self.rng.random_bool(0.12) {
                self.between(t.max(self.month_start), self.now)
            } else {
                let decided = t + Duration::days(self.rng.random_range(3..150));
                self.between(t, decided.min(self.now))
            }
        });
        let amount_cents = if stage == DealStage::Lead && self.rng.random_bool(0.1) {
            0
        } else {
            // Log-normal around 8 000 in whole currency units, rounded to tens.
            let units = (13.59 + 1.1 * self.normal()).exp() / 100.0;
            ((units / 10.0).round().max(1.0) as i64) * 1_000
        };
        let expected_close_on = self.rng.random_bool(0.85).then(|| match closed_at {
            Some(closed) => closed.date_naive() + Duration::days(self.rng.random_range(-20..=20)),
            None => t.date_naive() + Duration::days(self.rng.random_range(14..=150)),
        });
        let id = uuid_at(&mut self.rng, t);
        let updated_at = match closed_at {
            Some(closed) => closed,
            None => self.updated_after(t),
        };
        self.deals.push(DealRef {
            id,
            created_at: t,
            contact,
        });
        Deal {
            id,
            tenant_id: self.tenant_id,
            title,
            contact_id: contact.map(|c| self.contacts[c].id),
            stage,
            amount_cents,
            expected_close_on,
            closed_at,
            created_at: t,
            updated_at,
        }
    }

    fn task(&mut self, t: DateTime<Utc>) -> Task {
        let deal = if self.rng.random_bool(0.35) && !self.deals.is_empty() {
            let existing = self.deals.partition_point(|d| d.created_at <= t);
            Some(self.rng.random_range(0..existing.max(1)))
        } else {
            None
        };
        let contact = match deal {
            Some(d) => self.deals[d].contact,
            None if self.rng.random_bool(0.6) => self.contact_before(t),
            None => None,
        };
        let title = self.task_title(contact);
        let description = self.rng.random_bool(0.4).then(|| {
            let n = self.rng.random_range(1..=3);
            (0..n)
                .map(|_| pick(&mut self.rng, TASK_NOTES))
                .collect::<Vec<_>>()
                .join(" ")
        });
        let due_at = self.rng.random_bool(0.85).then(|| {
            let due = t + Duration::minutes(self.rng.random_range(120..=45 * 24 * 60));
            db_time(due)
        });
        // Most tasks whose time has passed are done; the rest are overdue.
        let past = due_at.map_or((self.now - t).num_days() > 14, |due| due < self.now);
        let status = if self.rng.random_bool(if past { 0.75 } else { 0.15 }) {
            TaskStatus::Done
        } else if self.rng.random_bool(0.65) {
            TaskStatus::Pending
        } else {
            TaskStatus::InProgress
        };
        let priority = weighted(
            &mut self.rng,
            &[
                (TaskPriority::Low, 25),
                (TaskPriority::Normal, 55),
                (TaskPriority::High, 20),
            ],
        );
        let completed_at = (status == TaskStatus::Done).then(|| {
            let by = due_at.unwrap_or(t + Duration::days(14)) + Duration::days(3);
            self.between(t, by.min(self.now))
        });
        let updated_at = match completed_at {
            Some(done) => done,
            None => self.updated_after(t),
        };
        Task {
            id: uuid_at(&mut self.rng, t),
            tenant_id: self.tenant_id,
            title,
            description,
            status,
            priority,
            due_at,
            contact_id: contact.map(|c| self.contacts[c].id),
            deal_id: deal.map(|d| self.deals[d].id),
            completed_at,
            created_at: t,
            updated_at,
        }
    }

    fn task_title(&mut self, contact: Option<usize>) -> String {
        let Some(c) = contact else {
            return pick(&mut self.rng, GENERIC_TASKS).to_owned();
        };
        let person = self.contacts[c].first_name;
        let label = self.contact_label(c);
        match self.rng.random_range(0..7) {
            0 => format!("Call {person}"),
            1 => format!("Follow up with {person}"),
            2 => format!("Send quote to {label}"),
            3 => format!("Prepare demo for {label}"),
            4 => format!("Email {person} the proposal"),
            5 => format!("Book meeting with {person}"),
            _ => format!("Review contract with {label}"),
        }
    }

    /// 1 to 5 lines from the catalogue.
    fn lines(&mut self) -> Vec<Line> {
        let count = weighted(
            &mut self.rng,
            &[(1usize, 35), (2, 25), (3, 20), (4, 12), (5, 8)],
        );
        (0..count)
            .map(|_| {
                let (description, low, high, most) = pick(&mut self.rng, PRODUCTS);
                // Prices in whole units, often just under a round figure.
                let price = self.rng.random_range(low..=high) / 100 * 100;
                let unit_price_cents = if self.rng.random_bool(0.3) {
                    (price - 1).max(0)
                } else {
                    price
                };
                let u: f64 = self.rng.random();
                let quantity = 1 + (u * u * most as f64) as i64;
                Line {
                    description: description.to_owned(),
                    quantity,
                    unit_price_cents,
                }
            })
            .collect()
    }

    fn invoice(&mut self, number: u64, t: DateTime<Utc>) -> Invoice {
        // An invoice always has a customer; there is at least one contact.
        let contact = self.contact_before(t).unwrap_or(0);
        let lines = self.lines();
        let total_cents = lines.iter().map(|l| l.quantity * l.unit_price_cents).sum();
        let today = self.now.date_naive();
        let young = (self.now - t).num_days() < 30;
        let terms = Duration::days(pick(&mut self.rng, &[14, 30, 30, 45, 60]));
        let (status, issued_on, due_on, paid_at) =
            if self.rng.random_bool(if young { 0.3 } else { 0.02 }) {
                let issued = self.rng.random_bool(0.4).then(|| t.date_naive());
                (
                    InvoiceStatus::Draft,
                    issued,
                    issued.map(|d| d + terms),
                    None,
                )
            } else if self.rng.random_bool(0.04) {
                let issued = t.date_naive();
                (
                    InvoiceStatus::Void,
                    Some(issued),
                    Some(issued + terms),
                    None,
                )
            } else {
                let issued = t.date_naive();
                let due = issued + terms;
                if self.rng.random_bool(if due < today { 0.88 } else { 0.4 }) {
                    let paid = self.between(t, (t + terms + Duration::days(20)).min(self.now));
                    (InvoiceStatus::Paid, Some(issued), Some(due), Some(paid))
                } else if due < today && self.rng.random_bool(0.7) {
                    (InvoiceStatus::Overdue, Some(issued), Some(due), None)
                } else {
                    // Includes some sent invoices past their due date, which the
                    // dashboard counts as overdue too.
                    (InvoiceStatus::Sent, Some(issued), Some(due), None)
                }
            };
        let updated_at = match paid_at {
            Some(paid) => paid,
            None => self.updated_after(t),
        };
        Invoice {
            id: uuid_at(&mut self.rng, t),
            tenant_id: self.tenant_id,
            number: format!("INV-{number:06}"),
            contact_id: self.contacts[contact].id,
            status,
            lines,
            total_cents,
            issued_on,
            due_on,
            paid_at,
            created_at: t,
            updated_at,
        }
    }

    fn order(&mut self, number: u64, t: DateTime<Utc>) -> Order {
        let contact = if self.rng.random_bool(0.9) {
            self.contact_before(t)
        } else {
            None
        };
        let lines = self.lines();
        let total_cents = lines.iter().map(|l| l.quantity * l.unit_price_cents).sum();
        let age = (self.now - t).num_days();
        use OrderStatus::*;
        let status = if age < 2 {
            weighted(
                &mut self.rng,
                &[(Pending, 45), (Paid, 35), (Shipped, 10), (Cancelled, 10)],
            )
        } else if age < 10 {
            weighted(
                &mut self.rng,
                &[
                    (Pending, 5),
                    (Paid, 20),
                    (Shipped, 50),
                    (Delivered, 15),
                    (Cancelled, 10),
                ],
            )
        } else {
            weighted(
                &mut self.rng,
                &[
                    (Pending, 1),
                    (Paid, 2),
                    (Shipped, 2),
                    (Delivered, 87),
                    (Cancelled, 8),
                ],
            )
        };
        let updated_at = if status == Pending {
            t
        } else {
            self.between(t, (t + Duration::days(14)).min(self.now))
        };
        Order {
            id: uuid_at(&mut self.rng, t),
            tenant_id: self.tenant_id,
            number: format!("ORD-{number:06}"),
            contact_id: contact.map(|c| self.contacts[c].id),
            status,
            lines,
            total_cents,
            placed_at: t,
            created_at: t,
            updated_at,
        }
    }

    /// A standard normal draw (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1: f64 = 1.0 - self.rng.random::<f64>(); // (0, 1]: ln is finite
        let u2: f64 = self.rng.random();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// A UUIDv7 for a row created at `t`: its time is the row's, its random part
/// comes from the tenant's generator, so ids are reproducible and sort like
/// `created_at`.
fn uuid_at(rng: &mut StdRng, t: DateTime<Utc>) -> Uuid {
    let mut random = [0u8; 10];
    rng.fill(&mut random);
    let millis = u64::try_from(t.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// One of `items`, each as likely as its weight.
fn weighted<T: Copy>(rng: &mut StdRng, items: &[(T, u32)]) -> T {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total.max(1));
    for (item, weight) in items {
        if roll < *weight {
            return *item;
        }
        roll -= weight;
    }
    items[items.len() - 1].0
}

fn company(rng: &mut StdRng) -> Company {
    let stem = pick(rng, COMPANY_STEMS);
    let ending = pick(rng, COMPANY_ENDINGS);
    let brand = format!("{stem}{ending}");
    let name = match rng.random_range(0..4) {
        0 => brand.clone(),
        1 => format!("{brand} {}", pick(rng, SECTORS)),
        2 => format!("{brand} {}", legal_suffix(rng, "USD")),
        _ => format!("{} & {}", pick(rng, LAST_NAMES), pick(rng, LAST_NAMES)),
    };
    let slug: String = ascii_slug(&name).chars().take(24).collect();
    let domain = format!(
        "{slug}.{}",
        pick(rng, &["com", "com", "io", "de", "co.uk", "fr", "nl", "net"])
    );
    Company { name, domain }
}

fn legal_suffix(rng: &mut StdRng, currency: &str) -> &'static str {
    match currency {
        "USD" => pick(rng, &["Inc.", "LLC", "Corp."]),
        "GBP" => pick(rng, &["Ltd", "plc", "LLP"]),
        "CHF" => pick(rng, &["AG", "SA", "GmbH"]),
        "SEK" => "AB",
        _ => pick(rng, &["GmbH", "SA", "BV", "SRL", "AG", "Oy", "SAS"]),
    }
}

/// Lowercase ASCII letters and digits only, accents folded: for emails and domains.
fn ascii_slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        let folded = match c {
            'a'..='z' | '0'..='9' => c,
            'à' | 'á' | 'â' | 'ä' | 'å' | 'ã' => 'a',
            'ç' => 'c',
            'è' | 'é' | 'ê' | 'ë' => 'e',
            'ì' | 'í' | 'î' | 'ï' => 'i',
            'ñ' => 'n',
            'ò' | 'ó' | 'ô' | 'ö' | 'ø' | 'õ' => 'o',
            'ù' | 'ú' | 'û' | 'ü' => 'u',
            'ß' => {
                out.push('s');
                's'
            }
            _ => continue,
        };
        out.push(folded);
    }
    if out.is_empty() {
        out.push('x');
    }
    out
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

const CURRENCIES: &[(&str, u32)] = &[
    ("EUR", 45),
    ("USD", 35),
    ("GBP", 15),
    ("CHF", 3),
    ("SEK", 2),
];

const FIRST_NAMES: &[&str] = &[
    "Ada", "Alan", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "John",
    "Mary", "James", "Sofia", "Lucas", "Emma", "Noah", "Olivia", "Liam", "Mia", "Elias", "Hannah",
    "Mateo", "Chloé", "Léa", "Jonas", "Lena", "Marta", "Pablo", "Giulia", "Marco", "Anna", "Jan",
    "Eva", "Tomás", "Zoë", "Björn", "Ingrid", "Søren", "Aisha", "Omar", "Yuki", "Hiro", "Priya",
    "Arjun", "Mei", "Wei", "Fatima", "Ivan", "Olga", "Kofi", "Amara", "Diego", "Camila", "Sean",
    "Niamh", "Chris", "Sam", "Alex", "Robin", "Kim", "Laura", "Felix", "Nora", "Oscar",
];

const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Rossi",
    "Russo",
    "Ferrari",
    "Bianchi",
    "Romano",
    "Fernández",
    "López",
    "Martínez",
    "Silva",
    "Santos",
    "Costa",
    "Jansen",
    "de Vries",
    "van Dijk",
    "Bakker",
    "Nowak",
    "Kowalski",
    "Novák",
    "Svensson",
    "Johansson",
    "Nielsen",
    "Hansen",
    "Andersen",
    "O'Brien",
    "Murphy",
    "Kelly",
    "Tanaka",
    "Suzuki",
    "Sato",
    "Kim",
    "Lee",
    "Park",
    "Chen",
    "Wang",
    "Li",
    "Patel",
    "Shah",
    "Singh",
    "Okafor",
    "Mensah",
    "Ivanova",
    "Popescu",
    "Nagy",
    "Lovelace",
    "Hopper",
    "Turing",
];

const COMPANY_STEMS: &[&str] = &[
    "Blue",
    "Bright",
    "North",
    "Silver",
    "Green",
    "Red",
    "Iron",
    "Quantum",
    "Apex",
    "Summit",
    "Cedar",
    "Harbor",
    "River",
    "Stone",
    "Lumen",
    "Nova",
    "Pixel",
    "Vertex",
    "Orbit",
    "Atlas",
    "Maple",
    "Falcon",
    "Crescent",
    "Pioneer",
    "Evergreen",
    "Golden",
    "Swift",
    "Clear",
    "Bold",
    "Prime",
];

const COMPANY_ENDINGS: &[&str] = &[
    "wave", "point", "field", "works", "labs", "bridge", "stone", "path", "gate", "line", "forge",
    "spring", "view", "peak", "craft",
];

const SECTORS: &[&str] = &[
    "Logistics",
    "Consulting",
    "Software",
    "Foods",
    "Energy",
    "Health",
    "Media",
    "Retail",
    "Construction",
    "Analytics",
    "Design",
    "Capital",
    "Robotics",
    "Textiles",
    "Travel",
];

const FREE_MAIL: &[&str] = &[
    "gmail.com",
    "outlook.com",
    "yahoo.com",
    "proton.me",
    "icloud.com",
    "gmx.de",
    "web.de",
    "hotmail.co.uk",
];

const EURO_PHONE_PREFIXES: &[(&str, &str)] = &[
    ("49", "30"),
    ("49", "89"),
    ("33", "1"),
    ("31", "20"),
    ("34", "91"),
    ("39", "02"),
    ("353", "1"),
];

const TAGS: &[(&str, u32)] = &[
    ("customer", 30),
    ("newsletter", 25),
    ("lead", 18),
    ("prospect", 14),
    ("smb", 10),
    ("partner", 8),
    ("enterprise", 7),
    ("vip", 6),
    ("referral", 6),
    ("event-2025", 5),
    ("churn-risk", 4),
    ("reseller", 3),
];

const OFFERS: &[&str] = &[
    "annual subscription",
    "pilot project",
    "renewal",
    "seat expansion",
    "support contract",
    "implementation",
    "consulting retainer",
    "hardware refresh",
    "training package",
    "data migration",
    "enterprise licence",
    "onboarding",
];

const YOUNG_DEAL_STAGES: &[(DealStage, u32)] = &[
    (DealStage::Lead, 30),
    (DealStage::Qualified, 22),
    (DealStage::Proposal, 18),
    (DealStage::Negotiation, 12),
    (DealStage::Won, 10),
    (DealStage::Lost, 8),
];

const OLD_DEAL_STAGES: &[(DealStage, u32)] = &[
    (DealStage::Lead, 2),
    (DealStage::Qualified, 3),
    (DealStage::Proposal, 5),
    (DealStage::Negotiation, 5),
    (DealStage::Won, 50),
    (DealStage::Lost, 35),
];

const GENERIC_TASKS: &[&str] = &[
    "Update the pipeline report",
    "Prepare quarterly review",
    "Clean up duplicate contacts",
    "Chase overdue invoices",
    "Plan the trade fair stand",
    "Renew the CRM licences",
    "Write the newsletter",
    "Check stock levels",
];

const TASK_NOTES: &[&str] = &[
    "They asked for a discount on the second year.",
    "Bring the updated price list.",
    "Decision expected after their board meeting.",
    "Legal wants to review the data processing terms.",
    "Mention the new reporting features.",
    "Budget is approved for this quarter.",
    "Their IT team needs SSO before rollout.",
    "Confirm delivery address and VAT number.",
];

/// Description, lowest and highest unit price in cents, and how many are
/// usually bought at most.
const PRODUCTS: &[(&str, i64, i64, i64)] = &[
    ("Consulting (hour)", 9_000, 18_000, 40),
    ("Software licence, annual", 20_000, 250_000, 25),
    ("Support plan, monthly", 5_000, 60_000, 12),
    ("Onboarding workshop", 80_000, 300_000, 2),
    ("Hardware kit", 15_000, 120_000, 10),
    ("Training seat", 30_000, 90_000, 15),
    ("Shipping", 500, 4_000, 1),
    ("Custom integration", 150_000, 900_000, 1),
];
