//! `seed` on both backends: what it reports is what it wrote, and what it
//! wrote is consistent (users, totals, tags, dates that go with statuses).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use chrono::Utc;
use sqlx::types::Json;
use strata_db::model::{
    DealStage, InvoiceStatus, Line, OrderStatus, Role, TaskPriority, TaskStatus,
};
use strata_db::repo::{auth, stats};
use strata_db::seed::{seed, SeedOptions, SeededTenant};
use strata_db::{Backend, DbError};
use uuid::Uuid;

use crate::support::{Raw, TestDb};

const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2VlZHNlZWRzZWVk$9c2XWCrsyJ0nFf0nK2wJ2ZGQ0GQbRLAfcoV4oYVMWuY";

fn options(tenants: u32, scale: f64) -> SeedOptions {
    SeedOptions {
        tenants,
        scale,
        password_hash: HASH.to_owned(),
        seed: 42,
    }
}

/// Seeds and returns what `seed` reported, checking the progress callback
/// saw every tenant exactly once.
pub async fn seed_reporting(t: &TestDb, opts: &SeedOptions) -> Vec<SeededTenant> {
    let reported = Mutex::new(Vec::new());
    let seeded = seed(&t.db, opts, |s| {
        reported.lock().expect("not poisoned").push(s.index)
    })
    .await
    .expect("seed");
    let mut reported = reported.into_inner().expect("not poisoned");
    reported.sort_unstable();
    assert_eq!(
        reported,
        (1..=opts.tenants).collect::<Vec<_>>(),
        "on_tenant once per tenant"
    );
    assert_eq!(
        seeded.iter().map(|s| s.index).collect::<Vec<_>>(),
        (1..=opts.tenants).collect::<Vec<_>>(),
        "returned in index order"
    );
    seeded
}

async fn per_tenant(raw: &Raw, table: &str) -> HashMap<Uuid, i64> {
    raw.rows::<(Uuid, i64)>(&format!(
        "SELECT tenant_id, COUNT(*) FROM {table} GROUP BY tenant_id"
    ))
    .await
    .into_iter()
    .collect()
}

async fn distinct(raw: &Raw, table: &str, column: &str) -> BTreeSet<String> {
    raw.rows::<(String,)>(&format!("SELECT DISTINCT {column} FROM {table}"))
        .await
        .into_iter()
        .map(|(v,)| v)
        .collect()
}

fn all(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

async fn seeds_consistent_data(backend: Backend) {
    let t = TestDb::new(backend).await;
    let opts = options(4, 0.05);
    let seeded = seed_reporting(&t, &opts).await;
    let raw = &t.raw;

    // Counts per tenant are what seed reported, with at least one of each.
    type Reported = fn(&SeededTenant) -> u64;
    let tables: [(&str, Reported); 5] = [
        ("contacts", |s| s.contacts),
        ("deals", |s| s.deals),
        ("tasks", |s| s.tasks),
        ("invoices", |s| s.invoices),
        ("orders", |s| s.orders),
    ];
    for (table, reported) in tables {
        let counts = per_tenant(raw, table).await;
        assert_eq!(
            counts.len(),
            seeded.len(),
            "{table}: rows of every tenant and no other"
        );
        for s in &seeded {
            assert!(
                reported(s) >= 1,
                "{table}: tenant {} has at least one row",
                s.index
            );
            assert_eq!(
                counts.get(&s.tenant_id).copied(),
                Some(reported(s) as i64),
                "{table} of tenant {}",
                s.index
            );
        }
    }
    // Skewed sizes: the first tenant is the largest, the last the smallest.
    let (first, last) = (&seeded[0], &seeded[seeded.len() - 1]);
    assert!(
        first.contacts > 2 * last.contacts,
        "skew: {} vs {} contacts",
        first.contacts,
        last.contacts
    );
    assert!(
        first.tasks > last.tasks && first.orders > last.orders,
        "skew in every resource"
    );
    // At scale 0.05 the average tenant has 500 contacts.
    let mean = seeded.iter().map(|s| s.contacts).sum::<u64>() as f64 / seeded.len() as f64;
    assert!(
        (mean - 500.0).abs() < 5.0,
        "average contacts per tenant {mean}"
    );

    // Each tenant: its row, an admin with the given hash, two members.
    let tenants = per_tenant(raw, "users").await;
    for s in &seeded {
        assert_eq!(
            tenants.get(&s.tenant_id),
            Some(&3),
            "users of tenant {}",
            s.index
        );
        assert_eq!(s.admin_email, format!("admin@tenant{}.example", s.index));
        let admin = auth::user_by_email(&t.db, &s.admin_email)
            .await
            .expect("read user")
            .expect("admin exists");
        assert_eq!(
            (admin.tenant_id, admin.role, admin.name.as_str()),
            (s.tenant_id, Role::Admin, &*format!("Admin {}", s.index))
        );
        assert_eq!(admin.password_hash, HASH);
        for k in 1..=2 {
            let member =
                auth::user_by_email(&t.db, &format!("member{k}@tenant{}.example", s.index))
                    .await
                    .expect("read user")
                    .expect("member exists");
            assert_eq!((member.tenant_id, member.role), (s.tenant_id, Role::Member));
        }
        let tenant = auth::tenant(&t.db, s.tenant_id)
            .await
            .expect("read tenant")
            .expect("tenant exists");
        assert_eq!(tenant.name, s.name);
        assert!(
            ["EUR", "USD", "GBP", "CHF", "SEK"].contains(&tenant.currency.as_str()),
            "{}",
            tenant.currency
        );
    }

    // Totals are the sums of 1 to 5 lines; numbers run 000001.. per tenant.
    for (table, prefix) in [("invoices", "INV-"), ("orders", "ORD-")] {
        let rows = raw
            .rows::<(Uuid, String, i64, Json<Vec<Line>>)>(&format!(
                "SELECT tenant_id, number, total_cents, lines FROM {table}"
            ))
            .await;
        let mut numbers: HashMap<Uuid, BTreeSet<String>> = HashMap::new();
        for (tenant, number, total, Json(lines)) in rows {
            assert!(
                (1..=5).contains(&lines.len()),
                "{table} {number}: {} lines",
                lines.len()
            );
            assert!(lines
                .iter()
                .all(|l| l.quantity >= 1 && l.unit_price_cents >= 0 && !l.description.is_empty()));
            let sum: i64 = lines.iter().map(|l| l.quantity * l.unit_price_cents).sum();
            assert_eq!(
                total, sum,
                "{table} {number}: total is the sum of its lines"
            );
            numbers.entry(tenant).or_default().insert(number);
        }
        for s in &seeded {
            let n = if table == "invoices" {
                s.invoices
            } else {
                s.orders
            };
            let expected: BTreeSet<String> = (1..=n).map(|i| format!("{prefix}{i:06}")).collect();
            assert_eq!(
                numbers.get(&s.tenant_id),
                Some(&expected),
                "{table} numbers of tenant {}",
                s.index
            );
        }
    }

    // contact_tags holds exactly each contact's JSON tags, under its tenant.
    let mut expected = BTreeSet::new();
    let mut tagged = 0;
    for (id, tenant, Json(tags)) in raw
        .rows::<(Uuid, Uuid, Json<Vec<String>>)>("SELECT id, tenant_id, tags FROM contacts")
        .await
    {
        assert!(tags.len() <= 4, "contact {id} has {} tags", tags.len());
        tagged += usize::from(!tags.is_empty());
        for tag in tags {
            assert!(
                expected.insert((tenant, id, tag)),
                "contact {id} repeats a tag"
            );
        }
    }
    let actual: BTreeSet<(Uuid, Uuid, String)> = raw
        .rows("SELECT tenant_id, contact_id, tag FROM contact_tags")
        .await
        .into_iter()
        .collect();
    assert_eq!(actual, expected, "contact_tags mirrors contacts.tags");
    assert!(
        tagged > 0 && actual.len() > tagged,
        "some contacts have several tags"
    );

    // Companies are shared, so the company filter finds several contacts.
    let shared = raw
        .count("SELECT COUNT(*) FROM (SELECT tenant_id, company FROM contacts WHERE company IS NOT NULL GROUP BY tenant_id, company HAVING COUNT(*) >= 5) AS c")
        .await;
    assert!(shared > 0, "some companies have several contacts");
    assert_eq!(
        raw.count(
            "SELECT COUNT(*) FROM contacts WHERE email IS NOT NULL AND email NOT LIKE '%_@_%._%'"
        )
        .await,
        0
    );

    // Every value of every enum occurs, and the dates go with them.
    assert_eq!(distinct(raw, "deals", "stage").await, all(DealStage::ALL));
    assert_eq!(distinct(raw, "tasks", "status").await, all(TaskStatus::ALL));
    assert_eq!(
        distinct(raw, "tasks", "priority").await,
        all(TaskPriority::ALL)
    );
    assert_eq!(
        distinct(raw, "invoices", "status").await,
        all(InvoiceStatus::ALL)
    );
    assert_eq!(
        distinct(raw, "orders", "status").await,
        all(OrderStatus::ALL)
    );
    for (what, sql) in [
        ("closed_at iff won or lost", "SELECT COUNT(*) FROM deals WHERE (stage IN ('won', 'lost')) <> (closed_at IS NOT NULL)"),
        ("completed_at iff done", "SELECT COUNT(*) FROM tasks WHERE (status = 'done') <> (completed_at IS NOT NULL)"),
        ("paid_at iff paid", "SELECT COUNT(*) FROM invoices WHERE (status = 'paid') <> (paid_at IS NOT NULL)"),
        ("updated_at not before created_at", "SELECT COUNT(*) FROM contacts WHERE updated_at < created_at"),
        ("closed after created", "SELECT COUNT(*) FROM deals WHERE closed_at < created_at"),
        ("completed after created", "SELECT COUNT(*) FROM tasks WHERE completed_at < created_at"),
        ("due after issued", "SELECT COUNT(*) FROM invoices WHERE due_on < issued_on"),
        ("negative amounts", "SELECT COUNT(*) FROM deals WHERE amount_cents < 0"),
        (
            "links stay in the tenant",
            "SELECT COUNT(*) FROM tasks t JOIN deals d ON d.id = t.deal_id WHERE d.tenant_id <> t.tenant_id",
        ),
        (
            "invoice contacts stay in the tenant",
            "SELECT COUNT(*) FROM invoices i JOIN contacts c ON c.id = i.contact_id WHERE c.tenant_id <> i.tenant_id",
        ),
    ] {
        assert_eq!(raw.count(sql).await, 0, "{what}");
    }
    assert!(
        raw.count("SELECT COUNT(*) FROM tasks WHERE deal_id IS NOT NULL")
            .await
            > 0,
        "tasks link deals"
    );
    assert!(
        raw.count("SELECT COUNT(*) FROM tasks WHERE contact_id IS NOT NULL")
            .await
            > 0,
        "tasks link contacts"
    );

    // The largest tenant's dashboard has something in every figure.
    let dash = stats::dashboard(&t.db, first.tenant_id, Utc::now())
        .await
        .expect("dashboard");
    assert_eq!(dash.contacts.total, first.contacts as i64);
    assert!(
        dash.deals.open > 0 && dash.deals.pipeline_cents > 0,
        "{dash:?}"
    );
    assert!(
        dash.deals.won_this_month > 0 && dash.deals.won_cents_this_month > 0,
        "{dash:?}"
    );
    assert!(dash.tasks.pending > 0 && dash.tasks.overdue > 0, "{dash:?}");
    assert!(
        dash.invoices.outstanding > 0 && dash.invoices.overdue > 0,
        "{dash:?}"
    );
    assert!(
        dash.orders.this_month > 0 && dash.orders.revenue_cents_this_month > 0,
        "{dash:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_consistent_data_on_sqlite() {
    seeds_consistent_data(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_consistent_data_on_postgres() {
    seeds_consistent_data(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_gets_one_row_of_each_even_at_scale_zero() {
    let t = TestDb::sqlite().await;
    let seeded = seed_reporting(&t, &options(3, 0.0)).await;
    for s in &seeded {
        assert_eq!(
            (s.contacts, s.deals, s.tasks, s.invoices, s.orders),
            (1, 1, 1, 1, 1),
            "tenant {}",
            s.index
        );
    }
    assert_eq!(t.raw.count("SELECT COUNT(*) FROM invoices").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_seed_over_existing_users_and_writes_nothing() {
    let t = TestDb::sqlite().await;
    seed_reporting(&t, &options(2, 0.0)).await;
    let before = t.raw.count("SELECT COUNT(*) FROM tenants").await;

    let err = seed(&t.db, &options(3, 0.0), |_| {})
        .await
        .expect_err("emails are taken");
    match err {
        DbError::Config(message) => assert!(message.contains("admin@tenant1.example"), "{message}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    assert_eq!(
        t.raw.count("SELECT COUNT(*) FROM tenants").await,
        before,
        "nothing written"
    );

    let err = seed(
        &t.db,
        &SeedOptions {
            scale: f64::NAN,
            ..options(1, 1.0)
        },
        |_| {},
    )
    .await
    .expect_err("bad scale");
    assert!(matches!(err, DbError::Config(_)), "{err:?}");
    for (tenants, scale) in [(1, -1.0), (1, 1e12), (u32::MAX, 1.0)] {
        let err = seed(&t.db, &options(tenants, scale), |_| {})
            .await
            .expect_err("out of bounds");
        assert!(
            matches!(err, DbError::Config(_)),
            "{tenants} × {scale}: {err:?}"
        );
    }
    assert!(seed(&t.db, &options(0, 1.0), |_| {})
        .await
        .expect("no tenants is no work")
        .is_empty());
}

/// Everything but times (which follow the clock) and the ids made from them.
async fn fingerprint(t: &TestDb) -> (Vec<(String, String)>, BTreeMap<String, usize>) {
    let tenants = t
        .raw
        .rows::<(String, String)>("SELECT name, currency FROM tenants ORDER BY name, currency")
        .await;
    let mut contacts = BTreeMap::new();
    let rows = t
        .raw
        .rows::<(
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        )>("SELECT first_name, last_name, email, phone, company FROM contacts")
        .await;
    for row in rows {
        *contacts.entry(format!("{row:?}")).or_default() += 1;
    }
    (tenants, contacts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_gives_the_same_data() {
    let (a, b, c) = tokio::join!(TestDb::sqlite(), TestDb::sqlite(), TestDb::sqlite());
    let opts = options(3, 0.02);
    let (sa, sb) = (
        seed_reporting(&a, &opts).await,
        seed_reporting(&b, &opts).await,
    );
    seed_reporting(
        &c,
        &SeedOptions {
            seed: 7,
            ..opts.clone()
        },
    )
    .await;
    let strip = |s: &[SeededTenant]| {
        s.iter()
            .map(|t| (t.name.clone(), t.contacts, t.deals, t.tasks))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&sa), strip(&sb));
    assert_eq!(
        fingerprint(&a).await,
        fingerprint(&b).await,
        "same seed, same rows"
    );
    assert_ne!(
        fingerprint(&a).await,
        fingerprint(&c).await,
        "another seed, other rows"
    );
}
