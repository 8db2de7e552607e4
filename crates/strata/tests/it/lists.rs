//! List endpoints: every filter, every sort field in both directions,
//! search, pagination edges and the 400s for bad parameters.

use chrono::{Duration, Utc};
use serde_json::{json, Value};

use crate::both;
use crate::support::{Backend, Client, TestApp};

both!(
    pagination,
    parameter_errors,
    contact_filters_and_search,
    deal_filters,
    task_filters,
    invoice_and_order_filters,
    every_sort_orders_rows
);

async fn pagination(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.tenant("acme").await;
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(
            alice
                .create_id("contacts", json!({"first_name": format!("C{i:02}")}))
                .await,
        );
    }
    // Default order is newest first.
    ids.reverse();
    let first = alice.get("/api/contacts").await.json();
    assert_eq!(first["total"], 25);
    assert_eq!(first["items"].as_array().map(Vec::len), Some(20));
    let second = alice.get("/api/contacts?page=2").await.json();
    assert_eq!(second["page"], 2);
    let mut seen = alice.list_ids("/api/contacts?page=1").await;
    seen.extend(alice.list_ids("/api/contacts?page=2").await);
    assert_eq!(seen, ids, "pages neither repeat nor skip rows");
    assert_eq!(
        alice.list_ids("/api/contacts?per_page=1&page=25").await,
        vec![ids[24].clone()]
    );
    assert_eq!(alice.list_ids("/api/contacts?per_page=100").await.len(), 25);
    let beyond = alice.get("/api/contacts?page=99").await.json();
    assert_eq!(beyond["items"], json!([]));
    assert_eq!(
        beyond["total"], 25,
        "total counts every match even past the end"
    );
    let far = alice.get("/api/contacts?page=10000000&per_page=100").await;
    far.assert_status(200);
}

async fn parameter_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.tenant("acme").await;
    for (query, param) in [
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=abc", "page"),
        ("page=10000001", "page"),
        ("page=99999999999999999999", "page"),
        ("per_page=0", "per_page"),
        ("per_page=101", "per_page"),
        ("sort=age", "sort"),
        ("sort=--created_at", "sort"),
        ("colour=red", "colour"),
        ("page=1&page=2", "page"),
        ("tag=", "tag"),
        (&format!("q={}", "x".repeat(201)), "q"),
    ] {
        let resp = alice.get(&format!("/api/contacts?{query}")).await;
        resp.assert_error(400, "bad_request");
        assert_eq!(resp.error_fields(), vec![param], "{query}: {}", resp.text);
    }
    for (path, param) in [
        ("/api/deals?stage=won,lost", "stage"),
        ("/api/deals?open=yes", "open"),
        ("/api/deals?contact_id=42", "contact_id"),
        ("/api/tasks?overdue=1", "overdue"),
        ("/api/tasks?due_before=soon", "due_before"),
        ("/api/tasks?priority=urgent", "priority"),
        ("/api/tasks?sort=title", "sort"),
        ("/api/invoices?status=unpaid", "status"),
        ("/api/orders?tag=vip", "tag"),
        ("/api/orders?sort=-number", "sort"),
    ] {
        let resp = alice.get(path).await;
        resp.assert_error(400, "bad_request");
        assert_eq!(resp.error_fields(), vec![param], "{path}: {}", resp.text);
    }
}

async fn contact_filters_and_search(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.tenant("acme").await;
    let ada = alice.create_id("contacts", json!({"first_name": "Ada", "last_name": "Lovelace", "email": "ada@engines.example", "company": "Analytical Engines", "tags": ["vip", "math"]})).await;
    let grace = alice.create_id("contacts", json!({"first_name": "Grace", "last_name": "Hopper", "company": "Navy", "tags": ["math"]})).await;
    let alan = alice.create_id("contacts", json!({"first_name": "Alan", "last_name": "Turing", "company": "analytical engines", "email": "alan@100%.example"})).await;
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(
            alice
                .list_ids("/api/contacts?company=ANALYTICAL%20ENGINES")
                .await
        ),
        sorted(vec![ada.clone(), alan.clone()])
    );
    assert_eq!(
        sorted(alice.list_ids("/api/contacts?tag=math").await),
        sorted(vec![ada.clone(), grace.clone()])
    );
    assert_eq!(
        alice.list_ids("/api/contacts?tag=vip").await,
        vec![ada.clone()]
    );
    assert_eq!(
        alice.list_ids("/api/contacts?tag=vip&company=navy").await,
        Vec::<String>::new()
    );
    // q: case-insensitive substring of first/last name, email, company.
    assert_eq!(
        alice.list_ids("/api/contacts?q=HOPP").await,
        vec![grace.clone()]
    );
    assert_eq!(
        sorted(alice.list_ids("/api/contacts?q=engines").await),
        sorted(vec![ada.clone(), alan.clone()])
    );
    assert_eq!(
        alice.list_ids("/api/contacts?q=ada%40").await,
        vec![ada.clone()]
    );
    // LIKE wildcards are literal.
    assert_eq!(
        alice.list_ids("/api/contacts?q=100%25").await,
        vec![alan.clone()]
    );
    assert_eq!(
        alice.list_ids("/api/contacts?q=_").await,
        Vec::<String>::new()
    );
    assert_eq!(
        alice
            .get("/api/contacts?q=%27%3B%20DROP%20TABLE%20contacts%3B--")
            .await
            .json()["total"],
        0
    );
    let page = alice.get("/api/contacts?tag=math&per_page=1").await.json();
    assert_eq!(page["total"], 2, "total counts the filtered rows");
    // Retagging moves the contact between tag filters.
    alice
        .patch(
            &format!("/api/contacts/{grace}"),
            &json!({"tags": ["navy"]}),
        )
        .await
        .assert_status(200);
    assert_eq!(
        alice.list_ids("/api/contacts?tag=math").await,
        vec![ada.clone()]
    );
    assert_eq!(alice.list_ids("/api/contacts?tag=navy").await, vec![grace]);
}

async fn deal_filters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.tenant("acme").await;
    let contact = alice
        .create_id("contacts", json!({"first_name": "Buyer"}))
        .await;
    let lead = alice
        .create_id(
            "deals",
            json!({"title": "Lead deal", "contact_id": contact}),
        )
        .await;
    let won = alice
        .create_id("deals", json!({"title": "Won deal", "stage": "won"}))
        .await;
    let lost = alice
        .create_id(
            "deals",
            json!({"title": "Lost DEAL", "stage": "lost", "contact_id": contact}),
        )
        .await;
    let prop = alice
        .create_id("deals", json!({"title": "Proposal", "stage": "proposal"}))
        .await;
    let set = |v: &[&String]| {
        let mut v: Vec<String> = v.iter().map(|s| (*s).clone()).collect();
        v.sort();
        v
    };
    let got = |path: &'static str| {
        let alice = alice.clone();
        async move {
            let mut ids = alice.list_ids(path).await;
            ids.sort();
            ids
        }
    };
    assert_eq!(got("/api/deals?stage=won").await, set(&[&won]));
    assert_eq!(got("/api/deals?open=true").await, set(&[&lead, &prop]));
    assert_eq!(got("/api/deals?open=false").await, set(&[&won, &lost]));
    assert_eq!(
        alice
            .list_ids(&format!("/api/deals?contact_id={contact}"))
            .await
            .len(),
        2
    );
    assert_eq!(
        alice
            .list_ids(&format!("/api/deals?contact_id={contact}&open=true"))
            .await,
        vec![lead.clone()]
    );
    assert_eq!(got("/api/deals?q=deal").await, set(&[&lead, &won, &lost]));
}

async fn task_filters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.tenant("acme").await;
    let past = (Utc::now() - Duration::days(2)).to_rfc3339();
    let future = (Utc::now() + Duration::days(2)).to_rfc3339();
    let contact = alice
        .create_id("contacts", json!({"first_name": "Who"}))
        .await;
    let deal = alice.create_id("deals", json!({"title": "What"})).await;
    let overdue = alice
        .create_id(
            "tasks",
            json!({"title": "Late", "due_at": past, "priority": "high", "contact_id": contact}),
        )
        .await;
    let done_late = alice
        .create_id(
            "tasks",
            json!({"title": "Done late", "due_at": past, "status": "done", "deal_id": deal}),
        )
        .await;
    let upcoming = alice
        .create_id(
            "tasks",
            json!({"title": "Soon", "due_at": future, "status": "in_progress", "priority": "low"}),
        )
        .await;
    let undated = alice.create_id("tasks", json!({"title": "Someday"})).await;
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        alice.list_ids("/api/tasks?overdue=true").await,
        vec![overdue.clone()]
    );
    assert_eq!(
        sorted(alice.list_ids("/api/tasks?overdue=false").await),
        sorted(vec![done_late.clone(), upcoming.clone(), undated.clone()])
    );
    assert_eq!(
        alice.list_ids("/api/tasks?status=in_progress").await,
        vec![upcoming.clone()]
    );
    assert_eq!(
        alice.list_ids("/api/tasks?priority=high").await,
        vec![overdue.clone()]
    );
    assert_eq!(
        alice
            .list_ids(&format!("/api/tasks?contact_id={contact}"))
            .await,
        vec![overdue.clone()]
    );
    assert_eq!(
        alice.list_ids(&format!("/api/tasks?deal_id={deal}")).await,
        vec![done_late.clone()]
    );
    let today = Utc::now().date_naive().to_string();
    assert_eq!(
        sorted(
            alice
                .list_ids(&format!("/api/tasks?due_before={today}"))
                .await
        ),
        sorted(vec![overdue.clone(), done_late.clone()])
    );
    let now = Utc::now().to_rfc3339().replace('+', "%2B");
    assert_eq!(
        sorted(
            alice
                .list_ids(&format!("/api/tasks?due_before={now}&status=pending"))
                .await
        ),
        vec![overdue.clone()]
    );
    assert_eq!(alice.list_ids("/api/tasks?q=SOMEDAY").await, vec![undated]);
}

async fn invoice_and_order_filters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.tenant("acme").await;
    let c1 = alice
        .create_id("contacts", json!({"first_name": "One"}))
        .await;
    let c2 = alice
        .create_id("contacts", json!({"first_name": "Two"}))
        .await;
    let i1 = alice
        .create_id(
            "invoices",
            json!({"number": "INV-001", "contact_id": c1, "status": "sent"}),
        )
        .await;
    let i2 = alice
        .create_id("invoices", json!({"number": "INV-002", "contact_id": c2}))
        .await;
    assert_eq!(
        alice.list_ids("/api/invoices?status=sent").await,
        vec![i1.clone()]
    );
    assert_eq!(
        alice
            .list_ids(&format!("/api/invoices?contact_id={c2}"))
            .await,
        vec![i2.clone()]
    );
    assert_eq!(alice.list_ids("/api/invoices?q=inv-002").await, vec![i2]);
    assert_eq!(alice.list_ids("/api/invoices?q=INV").await.len(), 2);
    let o1 = alice
        .create_id(
            "orders",
            json!({"number": "ORD-A", "contact_id": c1, "status": "shipped"}),
        )
        .await;
    let o2 = alice.create_id("orders", json!({"number": "ORD-B"})).await;
    assert_eq!(
        alice.list_ids("/api/orders?status=shipped").await,
        vec![o1.clone()]
    );
    assert_eq!(
        alice.list_ids("/api/orders?status=pending").await,
        vec![o2.clone()]
    );
    assert_eq!(
        alice
            .list_ids(&format!("/api/orders?contact_id={c1}"))
            .await,
        vec![o1]
    );
    assert_eq!(alice.list_ids("/api/orders?q=ord-b").await, vec![o2]);
}

/// Reads the whole list in the given order and checks it is sorted by the
/// field (NULLs last ascending, first descending), ties by id.
async fn check_sort(client: &Client, resource: &str, field: &str, key: impl Fn(&Value) -> Value) {
    for descending in [false, true] {
        let sort = if descending {
            format!("-{field}")
        } else {
            field.to_owned()
        };
        let page = client
            .get(&format!("/api/{resource}?sort={sort}&per_page=100"))
            .await
            .json();
        let items = page["items"].as_array().expect("items").clone();
        assert!(items.len() >= 3, "{resource}: enough rows to sort");
        let rank = |v: &Value| -> (bool, String) {
            let k = key(v);
            // Compare numbers as fixed-width strings so one ordering works for all.
            let text = match &k {
                Value::Number(n) => format!("{:020}", n.as_i64().unwrap_or_default()),
                Value::String(s) => s.clone(),
                _ => String::new(),
            };
            (k.is_null(), text)
        };
        for pair in items.windows(2) {
            let (a, b) = (rank(&pair[0]), rank(&pair[1]));
            let ordered = if descending {
                // NULLs first, then larger values first.
                (a.0 && !b.0) || (a.0 == b.0 && a.1 >= b.1)
            } else {
                (!a.0 && b.0) || (a.0 == b.0 && a.1 <= b.1)
            };
            assert!(
                ordered,
                "{resource} sort={sort}: {} before {}",
                pair[0], pair[1]
            );
        }
    }
}

async fn every_sort_orders_rows(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.tenant("acme").await;
    let contact = alice
        .create_id("contacts", json!({"first_name": "Zed"}))
        .await;
    for (i, (first, last)) in [
        ("Bob", Some("Young")),
        ("Alice", None),
        ("Carol", Some("Adams")),
        ("Dave", Some("Baker")),
    ]
    .into_iter()
    .enumerate()
    {
        let id = alice
            .create_id("contacts", json!({"first_name": first, "last_name": last}))
            .await;
        if i == 1 {
            alice
                .patch(&format!("/api/contacts/{id}"), &json!({"phone": "1"}))
                .await
                .assert_status(200);
        }
    }
    for (amount, close) in [
        (500, Some("2027-01-01")),
        (100, None),
        (900, Some("2026-06-01")),
        (100, Some("2026-07-01")),
    ] {
        alice
            .create(
                "deals",
                json!({"title": "d", "amount_cents": amount, "expected_close_on": close}),
            )
            .await;
    }
    let soon = |days: i64| (Utc::now() + Duration::days(days)).to_rfc3339();
    for (priority, due) in [
        ("low", Some(soon(3))),
        ("high", None),
        ("normal", Some(soon(1))),
        ("high", Some(soon(2))),
    ] {
        alice
            .create(
                "tasks",
                json!({"title": "t", "priority": priority, "due_at": due}),
            )
            .await;
    }
    for (i, (issued, due, qty)) in [
        (Some("2026-01-05"), Some("2026-02-05"), 3),
        (None, None, 1),
        (Some("2026-03-01"), Some("2026-03-31"), 7),
    ]
    .into_iter()
    .enumerate()
    {
        alice
            .create("invoices", json!({"number": format!("I{i}"), "contact_id": contact, "issued_on": issued, "due_on": due,
                                        "lines": [{"description": "x", "quantity": qty, "unit_price_cents": 100}]}))
            .await;
    }
    for (i, (placed, qty)) in [
        ("2026-01-01T00:00:00Z", 2),
        ("2025-06-01T00:00:00Z", 9),
        ("2026-03-01T00:00:00Z", 1),
    ]
    .into_iter()
    .enumerate()
    {
        alice.create("orders", json!({"number": format!("O{i}"), "placed_at": placed, "lines": [{"description": "x", "quantity": qty, "unit_price_cents": 10}]})).await;
    }
    let field = |name: &'static str| move |v: &Value| v[name].clone();
    for f in ["created_at", "updated_at"] {
        for r in ["contacts", "deals", "tasks", "invoices", "orders"] {
            check_sort(&alice, r, f, field(f)).await;
        }
    }
    check_sort(&alice, "deals", "amount_cents", field("amount_cents")).await;
    check_sort(
        &alice,
        "deals",
        "expected_close_on",
        field("expected_close_on"),
    )
    .await;
    check_sort(&alice, "tasks", "due_at", field("due_at")).await;
    let priority = |v: &Value| {
        json!(match v["priority"].as_str() {
            Some("low") => 0,
            Some("normal") => 1,
            _ => 2,
        })
    };
    check_sort(&alice, "tasks", "priority", priority).await;
    for f in ["issued_on", "due_on", "total_cents"] {
        check_sort(&alice, "invoices", f, field(f)).await;
    }
    for f in ["placed_at", "total_cents"] {
        check_sort(&alice, "orders", f, field(f)).await;
    }
    // Names: capitalised ASCII, which every collation orders alike.
    let firsts: Vec<String> = alice.get("/api/contacts?sort=first_name").await.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["first_name"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut expected = firsts.clone();
    expected.sort();
    assert_eq!(firsts.len(), 5);
    assert_eq!(firsts, expected, "first_name ascending");
    let lasts: Vec<Value> = alice.get("/api/contacts?sort=-last_name").await.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["last_name"].clone())
        .collect();
    assert!(
        lasts[0].is_null() && lasts[1].is_null(),
        "NULL last names first when descending: {lasts:?}"
    );
}
