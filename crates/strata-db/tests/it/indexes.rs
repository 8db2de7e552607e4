//! Every list query the API can make is served by an index on PostgreSQL:
//! on a seeded, analysed database, no plan of any sort × filter × `q`
//! combination scans a whole table.

use chrono::{SecondsFormat, Utc};
use strata_db::model::{Contact, Deal, Invoice, Order, Task};
use strata_db::repo::{explain_list, FilterKind, ListParams, Resource, Spec};
use strata_db::seed::{SeedOptions, SeededTenant};
use uuid::Uuid;

use crate::seeding::seed_reporting;
use crate::support::TestDb;

/// Plausible raw values for a filter, as a client would send them.
async fn filter_values(t: &TestDb, spec: &Spec, kind: &FilterKind, tenant: Uuid) -> Vec<String> {
    let pg = t.raw.pg();
    match kind {
        FilterKind::OneOf(_, allowed) => allowed.iter().map(|v| (*v).to_owned()).collect(),
        FilterKind::Id(column) => {
            // An id this resource really links to in the tenant.
            let sql = format!(
                "SELECT {column} FROM {} WHERE tenant_id = $1 AND {column} IS NOT NULL LIMIT 1",
                spec.name
            );
            let id: Uuid = sqlx::query_scalar(&sql)
                .bind(tenant)
                .fetch_one(pg)
                .await
                .expect(&sql);
            vec![id.to_string()]
        }
        FilterKind::TextCi(column) => {
            let sql = format!(
                "SELECT {column} FROM {} WHERE tenant_id = $1 AND {column} IS NOT NULL \
                 GROUP BY {column} ORDER BY COUNT(*) DESC LIMIT 1",
                spec.name
            );
            let value: String = sqlx::query_scalar(&sql)
                .bind(tenant)
                .fetch_one(pg)
                .await
                .expect(&sql);
            vec![value.to_uppercase()]
        }
        FilterKind::Tag => vec!["customer".into(), "vip".into()],
        FilterKind::Open | FilterKind::Overdue => vec!["true".into(), "false".into()],
        FilterKind::Before(_) => vec![
            Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            "2020-01-01".into(),
        ],
    }
}

/// A search text that matches some of the tenant's rows.
fn search_text(spec: &Spec) -> &'static str {
    match spec.name {
        "contacts" => "son",
        "invoices" => "inv-0001",
        "orders" => "ord-00",
        _ => "renew",
    }
}

/// Every (description, params) combination of a resource: each sort field
/// both ways, with no filter, each filter value alone, and `q`.
async fn combinations(t: &TestDb, spec: &'static Spec, tenant: Uuid) -> Vec<(String, ListParams)> {
    let mut variants: Vec<(String, Option<strata_db::repo::Filter>, Option<String>)> =
        vec![("-".into(), None, None)];
    for filter in spec.filters {
        for raw in filter_values(t, spec, &filter.kind, tenant).await {
            let parsed = filter
                .parse(&raw)
                .unwrap_or_else(|e| panic!("{}={raw}: {e}", filter.name));
            variants.push((format!("{}={raw}", filter.name), Some(parsed), None));
        }
    }
    let q = search_text(spec);
    variants.push((format!("q={q}"), None, Some(q.to_owned())));

    let mut all = Vec::new();
    for sort in spec.sorts {
        for descending in [false, true] {
            for (what, filter, q) in &variants {
                let mut params = spec.default_params();
                params.sort = sort;
                params.descending = descending;
                params.filters = filter.iter().cloned().collect();
                params.q = q.clone();
                let order = if descending { "-" } else { "" };
                all.push((
                    format!("{} sort={order}{} {what}", spec.name, sort.field),
                    params,
                ));
            }
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_query_uses_an_index_on_postgres() {
    let t = TestDb::postgres().await;
    // Eight tenants of skewed sizes, ~40 000 resource rows: big enough that
    // a table scan costs more than an index for any one ordinary tenant.
    let opts = SeedOptions {
        tenants: 8,
        scale: 0.25,
        password_hash: "x".into(),
        seed: 1,
    };
    let seeded: Vec<SeededTenant> = seed_reporting(&t, &opts).await;
    t.raw.execute("ANALYZE").await;

    // The second largest tenant (about a fifth of every table, like the
    // largest of 100 seeded tenants), a mid-sized one and the smallest. The
    // largest is left out on purpose: at over a third of each table here,
    // reading the whole table is the right plan for its unfiltered counts.
    let specs: [&'static Spec; 5] = [
        &Contact::SPEC,
        &Deal::SPEC,
        &Task::SPEC,
        &Invoice::SPEC,
        &Order::SPEC,
    ];
    let now = Utc::now();
    let mut checked = 0;
    let mut scans = Vec::new();
    for tenant in [&seeded[1], &seeded[3], &seeded[seeded.len() - 1]] {
        for spec in specs {
            for (what, params) in combinations(&t, spec, tenant.tenant_id).await {
                let plan = explain_list(&t.db, spec, tenant.tenant_id, &params, now)
                    .await
                    .expect("explain")
                    .expect("PostgreSQL explains")
                    .concat();
                checked += 1;
                if plan.iter().any(|line| line.contains("Seq Scan")) {
                    scans.push(format!(
                        "tenant {}: {what}\n    {}",
                        tenant.index,
                        plan.join("\n    ")
                    ));
                }
            }
        }
    }
    assert!(checked > 1_000, "only {checked} queries checked");
    assert!(
        scans.is_empty(),
        "{} of {checked} list queries scan a table:\n{}",
        scans.len(),
        scans.join("\n")
    );
}

/// The least frequent first word of `column` among the tenant's rows, as a
/// user who knows what they look for would type it.
async fn rare_word(t: &TestDb, table: &str, column: &str, tenant: Uuid) -> String {
    let sql = format!(
        "SELECT split_part(lower({column}), ' ', 1) AS word FROM {table} \
         WHERE tenant_id = $1 AND length(split_part({column}, ' ', 1)) >= 3 \
         GROUP BY word ORDER BY COUNT(*), word LIMIT 1"
    );
    sqlx::query_scalar(&sql)
        .bind(tenant)
        .fetch_one(t.raw.pg())
        .await
        .expect(&sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_read_only_the_rows_they_match_on_postgres() {
    let t = TestDb::postgres().await;
    let opts = SeedOptions {
        tenants: 4,
        scale: 0.25,
        password_hash: "x".into(),
        seed: 1,
    };
    let seeded: Vec<SeededTenant> = seed_reporting(&t, &opts).await;
    // VACUUM merges the trigram indexes' pending lists, as autovacuum does
    // in service; the planner counts unmerged pages against an index, so
    // without it the plan would depend on whether autovacuum came by.
    t.raw.execute("VACUUM ANALYZE").await;
    let tenant = seeded[0].tenant_id;

    // A selective text of three characters or more: a search for it must
    // find its rows through the trigram indexes, not by reading every row
    // of the tenant (the count reads all the matches, so it shows it). An
    // index-only scan of the tenant's entries of an index that holds the
    // column (invoice and order numbers) reads no table row either, and is
    // what PostgreSQL picks for those small tables.
    let searches: [(&'static Spec, &str); 5] = [
        (&Contact::SPEC, "last_name"),
        (&Deal::SPEC, "title"),
        (&Task::SPEC, "title"),
        (&Invoice::SPEC, "number"),
        (&Order::SPEC, "number"),
    ];
    let now = Utc::now();
    let mut unindexed = Vec::new();
    for (spec, column) in searches {
        let text = rare_word(&t, spec.name, column, tenant).await;
        let mut params = spec.default_params();
        params.q = Some(text.to_uppercase());
        let [_, plan] = explain_list(&t.db, spec, tenant, &params, now)
            .await
            .expect("explain")
            .expect("PostgreSQL explains");
        let index = format!("on {}_search_", spec.name);
        let indexed = |line: &String| line.contains(&index) || line.contains("Index Only Scan");
        if !plan.iter().any(indexed) {
            unindexed.push(format!(
                "{} q={text}\n    {}",
                spec.name,
                plan.join("\n    ")
            ));
        }
    }
    assert!(
        unindexed.is_empty(),
        "searches that read the tenant's rows:\n{}",
        unindexed.join("\n")
    );
}
