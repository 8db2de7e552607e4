//! The in-process evaluation of lists (`repo::eval`) against the database itself, on
//! both backends: for random rows with awkward text (case, accents, `ß`, the Kelvin
//! sign, wildcards) and every shape of list (filters, searches, sorts), the rows a list
//! matches, their order and their count must be exactly what the SQL answers. A cache
//! that keeps lists up to date in place is only as exact as this.

use chrono::{Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use strata_db::model::{Contact, Task, TaskPriority, TaskStatus};
use strata_db::repo::eval::{Facts, SortKey};
use strata_db::repo::{self, auth, ListParams, Resource};
use strata_db::{Backend, Db};
use uuid::Uuid;

use crate::support::TestDb;

const NAMES: &[&str] = &[
    "Ann",
    "ann",
    "ANN",
    "Émile",
    "émile",
    "Zoë",
    "zoe",
    "Straße",
    "STRASSE",
    "İlker",
    "ılgaz",
    "\u{212A}elvin",
    "kelvin",
    "O'Brien",
    "obrien",
    "50% off",
    "a_b",
    "a\\b",
    "Ωmega",
    "日本",
    " lead",
    "Bo",
];

fn text(rng: &mut StdRng) -> String {
    let mut s = NAMES.choose(rng).copied().unwrap_or("x").to_owned();
    if rng.random_bool(0.3) {
        s.push(' ');
        s.push_str(NAMES.choose(rng).copied().unwrap_or("y"));
    }
    s
}

fn contact(rng: &mut StdRng, tenant: Uuid, i: i64) -> Contact {
    let base = Utc
        .with_ymd_and_hms(2026, 3, 1, 0, 0, 0)
        .single()
        .expect("date");
    let tags = ["vip", "VIP", "lead", "é"];
    Contact {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        first_name: text(rng),
        last_name: rng.random_bool(0.8).then(|| text(rng)),
        email: rng
            .random_bool(0.7)
            .then(|| format!("{}@example.com", text(rng).replace(' ', "."))),
        phone: None,
        company: rng.random_bool(0.7).then(|| text(rng)),
        tags: tags
            .iter()
            .filter(|_| rng.random_bool(0.3))
            .map(|t| (*t).to_owned())
            .collect(),
        created_at: base + Duration::seconds(rng.random_range(0..50)),
        updated_at: base + Duration::seconds(i),
    }
}

fn task(rng: &mut StdRng, tenant: Uuid, i: i64) -> Task {
    let base = Utc
        .with_ymd_and_hms(2026, 3, 1, 0, 0, 0)
        .single()
        .expect("date");
    Task {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        title: text(rng),
        description: None,
        status: *[
            TaskStatus::Pending,
            TaskStatus::InProgress,
            TaskStatus::Done,
        ]
        .choose(rng)
        .expect("status"),
        priority: *[TaskPriority::Low, TaskPriority::Normal, TaskPriority::High]
            .choose(rng)
            .expect("priority"),
        due_at: rng
            .random_bool(0.8)
            .then(|| base + Duration::hours(rng.random_range(0..30))),
        contact_id: None,
        deal_id: None,
        completed_at: None,
        created_at: base + Duration::seconds(rng.random_range(0..50)),
        updated_at: base + Duration::seconds(i),
    }
}

/// Every matching row in the list's order, by the database (walking pages of 100).
async fn by_database<R: Resource>(
    db: &Db,
    tenant: Uuid,
    params: &ListParams,
    now: chrono::DateTime<Utc>,
) -> (Vec<Uuid>, i64) {
    let mut ids = Vec::new();
    let mut p = params.clone();
    p.per_page = 100;
    let mut total = 0;
    for page in 1.. {
        p.page = page;
        let (items, t) = repo::list::<R>(db, tenant, &p, now).await.expect("list");
        total = t;
        let n = items.len();
        ids.extend(items.iter().map(Resource::id));
        if n < 100 {
            break;
        }
    }
    (ids, total)
}

/// The same list evaluated in the process over `rows` (each with the database's
/// lowered texts).
fn in_process(rows: &[Facts], params: &ListParams, now: chrono::DateTime<Utc>) -> Vec<Uuid> {
    let mut keyed: Vec<(SortKey, Uuid)> = rows
        .iter()
        .filter(|f| f.matches(params, now))
        .map(|f| (f.sort_key(params.sort), f.id()))
        .collect();
    keyed.sort();
    if params.descending {
        keyed.reverse();
    }
    keyed.into_iter().map(|(_, id)| id).collect()
}

/// Lists of `R` under every shape in `queries`: the database and the process agree, and
/// so does a window read (its rows, total and order) for the first rows.
async fn agree<R: Resource>(t: &TestDb, tenant: Uuid, queries: &[Vec<(&str, String)>]) {
    let now = Utc
        .with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("date");
    let all = repo::window::<R>(&t.db, tenant, &R::SPEC.default_params(), 1000, now)
        .await
        .expect("every row");
    let facts: Vec<Facts> = all
        .rows
        .iter()
        .map(|img| Facts::of(&img.row, img.lowered.clone()))
        .collect();
    for query in queries {
        let params = parse(&R::SPEC, query);
        let (want, total) = by_database::<R>(&t.db, tenant, &params, now).await;
        assert_eq!(total, want.len() as i64, "{query:?}: total");
        let got = in_process(&facts, &params, now);
        assert_eq!(
            got, want,
            "{query:?}: the process disagrees with the database"
        );
        let window = repo::window::<R>(&t.db, tenant, &params, 7, now)
            .await
            .expect("window");
        assert_eq!(window.total, total, "{query:?}: window total");
        let window_facts: Vec<Facts> = window
            .rows
            .iter()
            .map(|img| Facts::of(&img.row, img.lowered.clone()))
            .collect();
        let first = in_process(&window_facts, &params, now);
        assert_eq!(
            first[..],
            want[..want.len().min(7)],
            "{query:?}: window rows"
        );
    }
}

fn parse(spec: &'static repo::Spec, query: &[(&str, String)]) -> ListParams {
    let mut params = spec.default_params();
    for (name, value) in query {
        match *name {
            "sort" => {
                let (sort, descending) = spec.parse_sort(value).expect("sort");
                params.sort = sort;
                params.descending = descending;
            }
            "q" => params.q = Some(value.clone()),
            other => params.filters.push(
                spec.filter(other)
                    .expect("filter")
                    .parse(value)
                    .expect("value"),
            ),
        }
    }
    params
}

async fn case(t: TestDb) {
    let tenant = auth::create_tenant(&t.db, "eval", "EUR")
        .await
        .expect("tenant")
        .id;
    let other = auth::create_tenant(&t.db, "other", "EUR")
        .await
        .expect("tenant")
        .id;
    let mut rng = StdRng::seed_from_u64(7);
    for i in 0..120 {
        let c = contact(&mut rng, tenant, i);
        repo::insert(&t.db, tenant, &c).await.expect("contact");
        let t2 = task(&mut rng, tenant, i);
        repo::insert(&t.db, tenant, &t2).await.expect("task");
    }
    // Another tenant's rows never count.
    for i in 0..10 {
        let c = contact(&mut rng, other, i);
        repo::insert(&t.db, other, &c).await.expect("contact");
    }
    let mut contact_queries: Vec<Vec<(&str, String)>> = Vec::new();
    for sort in [
        "first_name",
        "-first_name",
        "last_name",
        "-last_name",
        "created_at",
        "-updated_at",
    ] {
        contact_queries.push(vec![("sort", sort.to_owned())]);
    }
    for q in [
        "ann", "ANN", "émile", "ÉMILE", "straße", "strasse", "kelvin", "\u{212A}", "50%", "a_b",
        "a\\b", "ı", "i̇", "日", "o'b", "zz",
    ] {
        contact_queries.push(vec![("q", q.to_owned()), ("sort", "last_name".to_owned())]);
    }
    for company in ["ann", "Émile", "ZOË", "straße"] {
        contact_queries.push(vec![("company", company.to_owned())]);
    }
    for tag in ["vip", "VIP", "é", "lead"] {
        contact_queries.push(vec![
            ("tag", tag.to_owned()),
            ("sort", "-first_name".to_owned()),
        ]);
    }
    agree::<Contact>(&t, tenant, &contact_queries).await;
    let mut task_queries: Vec<Vec<(&str, String)>> = Vec::new();
    for sort in ["due_at", "-due_at", "priority", "-priority", "created_at"] {
        task_queries.push(vec![("sort", sort.to_owned())]);
        task_queries.push(vec![
            ("sort", sort.to_owned()),
            ("status", "pending".to_owned()),
        ]);
        task_queries.push(vec![
            ("sort", sort.to_owned()),
            ("overdue", "true".to_owned()),
        ]);
        task_queries.push(vec![
            ("sort", sort.to_owned()),
            ("overdue", "false".to_owned()),
        ]);
    }
    task_queries.push(vec![
        ("priority", "high".to_owned()),
        ("q", "ann".to_owned()),
    ]);
    task_queries.push(vec![("due_before", "2026-03-01T10:00:00Z".to_owned())]);
    task_queries.push(vec![
        ("due_before", "2026-03-02".to_owned()),
        ("sort", "-due_at".to_owned()),
    ]);
    agree::<Task>(&t, tenant, &task_queries).await;
}

#[tokio::test]
async fn the_process_evaluates_lists_as_sqlite_does() {
    case(TestDb::new(Backend::Sqlite).await).await;
}

#[tokio::test]
async fn the_process_evaluates_lists_as_postgres_does() {
    case(TestDb::new(Backend::Postgres).await).await;
}

/// A database whose lower() is Turkish ICU's (`I` lowers to `ı`, not `i`) and whose
/// collation is not bytewise: the process still agrees, because it compares the
/// database's own lowered texts, as bytes, as the SQL does.
#[tokio::test]
async fn the_process_evaluates_lists_as_a_turkish_icu_database_does() {
    let t = TestDb::postgres_with(
        "TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'tr-TR' LOCALE 'C.UTF-8'",
    )
    .await;
    let lowered: Vec<(String,)> = t.raw.rows("SELECT lower('I')").await;
    assert_eq!(lowered[0].0, "ı", "the database lowers as Turkish does");
    case(t).await;
}
