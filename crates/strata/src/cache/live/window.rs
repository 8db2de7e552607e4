//! One cached list: the first rows of a (filters, search, sort) list in order, with its
//! total, as of one database snapshot plus every change applied since. Pages are slices.
//! Never guesses: a change it cannot place exactly (the snapshot cannot tell whether it saw
//! it) makes the window drop itself.
//!
//! The window is an exact prefix of the list. Removing a row from a prefix leaves a prefix;
//! a row sorting before the last one kept belongs in it; one sorting after it does not (the
//! rows beyond are unknown). A window that holds every matching row ([`Window::complete`])
//! takes every matching row. The total moves by the change's own effect (matched before,
//! matches now), which is exact whether or not the row is in the prefix.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use strata_db::change::Snapshot;
use strata_db::repo::eval::{Facts, SortKey};
use strata_db::repo::ListParams;
use tiered_cache::Bytes;
use uuid::Uuid;

use super::record::RowChange;
use crate::http::etag::Tagged;

/// Pages rendered and kept per window until its next change.
const PAGES_KEPT: usize = 8;
/// What one kept row costs besides its JSON (key, id, version, vector slot).
const ROW_OVERHEAD: usize = 64;

/// One row of a window.
#[derive(Debug, Clone)]
struct Row {
    key: SortKey,
    id: Uuid,
    json: Bytes,
}

/// What applying a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The change was already in the window's snapshot, or concerns nothing it shows.
    Unchanged,
    Changed,
    /// The window cannot say what it should now hold: drop it.
    Drop,
}

#[derive(Debug)]
pub struct Window {
    params: ListParams,
    /// The `now` of the fill: what `overdue` compares with, for the window's whole life.
    now: DateTime<Utc>,
    base: Snapshot,
    rows: Vec<Row>,
    /// Every matching row is in `rows`.
    complete: bool,
    total: i64,
    /// The most rows kept; more are cut (and the window is no longer complete).
    cap: usize,
    pages: Vec<((u32, u32), Tagged)>,
    bytes: usize,
}

impl Window {
    /// A window from a fill: `rows` as `(facts, object JSON)` in any order, the total and
    /// snapshot read with them, and how many rows the read asked for.
    pub fn new(
        params: ListParams,
        now: DateTime<Utc>,
        base: Snapshot,
        rows: Vec<(Facts, Bytes)>,
        total: i64,
        limit: usize,
    ) -> Window {
        let complete = rows.len() < limit;
        let mut w = Window {
            rows: Vec::with_capacity(rows.len()),
            params,
            now,
            base,
            complete,
            total,
            cap: limit,
            pages: Vec::new(),
            bytes: 0,
        };
        for (facts, json) in rows {
            let row = w.row(&facts, json);
            w.bytes += row_bytes(&row);
            w.rows.push(row);
        }
        let descending = w.params.descending;
        w.rows.sort_by(|a, b| order(descending, a, b));
        w
    }

    fn row(&self, facts: &Facts, json: Bytes) -> Row {
        Row {
            key: facts.sort_key(self.params.sort),
            id: facts.id(),
            json,
        }
    }

    fn order(&self, a: &Row, b: &Row) -> Ordering {
        order(self.params.descending, a, b)
    }

    /// Bytes held (rows and rendered pages), for the memory bound.
    pub fn bytes(&self) -> usize {
        self.bytes + self.pages.iter().map(|(_, t)| t.len()).sum::<usize>()
    }

    /// Whether the window can serve `page` of `per_page` rows: it holds them, or it holds
    /// every row there is.
    pub fn covers(&self, page: u32, per_page: u32) -> bool {
        self.complete || end(page, per_page) <= self.rows.len()
    }

    /// Page `page` of `per_page` rows as the response bytes (`None` if not [`covers`]).
    /// Rendered once per page and change.
    pub fn page(&mut self, page: u32, per_page: u32) -> Option<Tagged> {
        if !self.covers(page, per_page) {
            return None;
        }
        if let Some((_, t)) = self.pages.iter().find(|(k, _)| *k == (page, per_page)) {
            return Some(t.clone());
        }
        let tagged = Tagged::new(self.render(page, per_page));
        if self.pages.len() >= PAGES_KEPT {
            self.pages.clear();
        }
        self.pages.push(((page, per_page), tagged.clone()));
        Some(tagged)
    }

    /// `{"items":[…],"page":…,"per_page":…,"total":…}`, byte for byte what serialising
    /// `resources::Page` gives.
    fn render(&self, page: u32, per_page: u32) -> Vec<u8> {
        let start = (end(page, per_page) - per_page as usize).min(self.rows.len());
        let stop = end(page, per_page).min(self.rows.len());
        let items = &self.rows[start..stop];
        let size = items.iter().map(|r| r.json.len() + 1).sum::<usize>() + 64;
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(b"{\"items\":[");
        for (i, row) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&row.json);
        }
        let mut n = itoa::Buffer::new();
        out.extend_from_slice(b"],\"page\":");
        out.extend_from_slice(n.format(page).as_bytes());
        out.extend_from_slice(b",\"per_page\":");
        out.extend_from_slice(n.format(per_page).as_bytes());
        out.extend_from_slice(b",\"total\":");
        out.extend_from_slice(n.format(self.total).as_bytes());
        out.push(b'}');
        out
    }

    /// Applies a change of the window's resource. `newest`: the highest version of the row
    /// applied before this change on this instance, if any (a change older than it moves
    /// the total but not the row).
    pub fn apply(&mut self, change: &RowChange, newest: Option<i64>) -> Applied {
        match self.base.sees(change.token) {
            Some(true) => return Applied::Unchanged,
            None => return Applied::Drop,
            Some(false) => {}
        }
        let matched = |f: Option<&Facts>| f.is_some_and(|f| f.matches(&self.params, self.now));
        let before = matched(change.old.as_ref().map(|(f, _)| f));
        let after = matched(change.new.as_ref().map(|(f, _)| f));
        let mut changed = false;
        if before != after {
            self.total += if after { 1 } else { -1 };
            changed = true;
        }
        let version = change.version();
        if newest.is_none_or(|n| version > n) {
            if let Some(i) = self.rows.iter().position(|r| r.id == change.id) {
                let row = self.rows.remove(i);
                self.bytes -= row_bytes(&row);
                changed = true;
            }
            if let (Some((facts, json)), true) = (&change.new, after) {
                changed |= self.insert(facts, json.clone());
            }
        }
        if !changed {
            return Applied::Unchanged;
        }
        self.pages.clear();
        // A complete window is the whole list: its length is the total, or something was
        // applied wrongly, and the window must not be served.
        if self.complete && self.rows.len() as i64 != self.total {
            tracing::warn!(
                rows = self.rows.len(),
                total = self.total,
                "a complete cached list disagrees with its total; dropped"
            );
            return Applied::Drop;
        }
        Applied::Changed
    }

    /// Puts a matching row where the list has it, if that is within the prefix.
    fn insert(&mut self, facts: &Facts, json: Bytes) -> bool {
        let row = self.row(facts, json);
        let at = self
            .rows
            .partition_point(|r| self.order(r, &row) == Ordering::Less);
        if at == self.rows.len() && !self.complete {
            return false; // Beyond the last row kept: not known to be in the prefix.
        }
        self.bytes += row_bytes(&row);
        self.rows.insert(at, row);
        // Room for inserts up to half the cap again, then cut back to the cap.
        if self.rows.len() > self.cap + self.cap / 2 {
            for cut in self.rows.drain(self.cap..) {
                self.bytes -= row_bytes(&cut);
            }
            self.complete = false;
        }
        true
    }
}

/// The list's order: ascending by (key, id), or the reverse.
fn order(descending: bool, a: &Row, b: &Row) -> Ordering {
    let asc = a.key.cmp(&b.key).then(a.id.cmp(&b.id));
    if descending {
        asc.reverse()
    } else {
        asc
    }
}

fn row_bytes(row: &Row) -> usize {
    row.json.len() + row.key.heap_bytes() + ROW_OVERHEAD
}

/// The index after the last row of `page` (1-based) of `per_page` rows.
fn end(page: u32, per_page: u32) -> usize {
    (page as usize).saturating_mul(per_page as usize)
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use strata_db::change::{Lowered, Token};
    use strata_db::model::{Task, TaskPriority, TaskStatus};
    use strata_db::repo::Resource;

    use super::*;
    use crate::http::query::parse_list;

    fn task(rng: &mut StdRng, id: Uuid, version: i64) -> Task {
        let base = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("date");
        let status = [
            TaskStatus::Pending,
            TaskStatus::InProgress,
            TaskStatus::Done,
        ][rng.random_range(0..3)];
        let priority =
            [TaskPriority::Low, TaskPriority::Normal, TaskPriority::High][rng.random_range(0..3)];
        let due = rng
            .random_bool(0.8)
            .then(|| base + Duration::hours(rng.random_range(0..48)));
        Task {
            id,
            tenant_id: Uuid::nil(),
            title: ["call ann", "mail bob", "Ann again", "visit"][rng.random_range(0..4)]
                .to_owned(),
            description: None,
            status,
            priority,
            due_at: due,
            contact_id: None,
            deal_id: None,
            completed_at: None,
            created_at: base + Duration::minutes(rng.random_range(0..1000)),
            updated_at: base + Duration::microseconds(version),
        }
    }

    fn facts(t: &Task) -> (Facts, Bytes) {
        let lowered = Lowered(vec![Some(t.title.to_lowercase())]);
        let json = serde_json::to_vec(t).expect("json");
        (Facts::of(t, lowered), json.into())
    }

    /// What the database would answer: every matching row in the list's order.
    fn truth(rows: &HashMap<Uuid, Task>, params: &ListParams, now: DateTime<Utc>) -> Vec<Uuid> {
        let mut matching: Vec<(SortKey, Uuid)> = rows
            .values()
            .map(|t| facts(t).0)
            .filter(|f| f.matches(params, now))
            .map(|f| (f.sort_key(params.sort), f.id()))
            .collect();
        matching.sort();
        if params.descending {
            matching.reverse();
        }
        matching.into_iter().map(|(_, id)| id).collect()
    }

    use std::collections::HashMap;

    /// Random creates, updates (moving rows in and out of the filter and across the
    /// order) and deletes, applied in any order: the window stays an exact prefix of the
    /// list with the exact total, for every list shape.
    #[test]
    fn a_window_stays_an_exact_prefix_under_random_changes() {
        let now = Utc
            .with_ymd_and_hms(2026, 1, 2, 0, 0, 0)
            .single()
            .expect("date");
        let queries = [
            "",
            "sort=due_at",
            "sort=-due_at&status=pending",
            "sort=priority&q=ann",
            "overdue=true&sort=created_at",
            "priority=high&sort=-priority",
        ];
        for (n, query) in queries.iter().enumerate() {
            let mut rng = StdRng::seed_from_u64(n as u64);
            let params = parse_list(&Task::SPEC, Some(query)).expect("query");
            let mut rows: HashMap<Uuid, Task> = HashMap::new();
            let mut version = 1;
            for _ in 0..60 {
                version += 1;
                let id = Uuid::now_v7();
                rows.insert(id, task(&mut rng, id, version));
            }
            let limit = 12;
            let all = truth(&rows, &params, now);
            let read: Vec<(Facts, Bytes)> =
                all.iter().take(limit).map(|id| facts(&rows[id])).collect();
            let mut w = Window::new(
                params.clone(),
                now,
                Snapshot::Seq(0),
                read,
                all.len() as i64,
                limit,
            );
            let mut newest: HashMap<Uuid, i64> = HashMap::new();
            let mut token = 0;
            for step in 0..400 {
                token += 1;
                version += 1;
                let ids: Vec<Uuid> = rows.keys().copied().collect();
                let change = match rng.random_range(0..10) {
                    0..=2 => {
                        let id = Uuid::now_v7();
                        let t = task(&mut rng, id, version);
                        rows.insert(id, t.clone());
                        RowChange {
                            tenant: Uuid::nil(),
                            slot: 2,
                            id,
                            token: Token(token),
                            position: 0,
                            at: 0,
                            old: None,
                            new: Some(facts(&t)),
                        }
                    }
                    3 if !ids.is_empty() => {
                        let id = ids[rng.random_range(0..ids.len())];
                        let old = rows.remove(&id).expect("row");
                        RowChange {
                            tenant: Uuid::nil(),
                            slot: 2,
                            id,
                            token: Token(token),
                            position: 0,
                            at: 0,
                            old: Some(facts(&old)),
                            new: None,
                        }
                    }
                    _ if !ids.is_empty() => {
                        let id = ids[rng.random_range(0..ids.len())];
                        let old = rows[&id].clone();
                        let mut t = task(&mut rng, id, version);
                        t.created_at = old.created_at;
                        rows.insert(id, t.clone());
                        RowChange {
                            tenant: Uuid::nil(),
                            slot: 2,
                            id,
                            token: Token(token),
                            position: 0,
                            at: 0,
                            old: Some(facts(&old)),
                            new: Some(facts(&t)),
                        }
                    }
                    _ => continue,
                };
                let before = newest.get(&change.id).copied();
                newest.insert(
                    change.id,
                    before.map_or(change.version(), |b| b.max(change.version())),
                );
                assert_ne!(
                    w.apply(&change, before),
                    Applied::Drop,
                    "{query} step {step}"
                );
                let all = truth(&rows, &params, now);
                assert_eq!(w.total, all.len() as i64, "{query} step {step}: total");
                let ids: Vec<Uuid> = w.rows.iter().map(|r| r.id).collect();
                assert_eq!(ids[..], all[..ids.len()], "{query} step {step}: prefix");
                if w.complete {
                    assert_eq!(ids.len(), all.len(), "{query} step {step}: complete");
                }
                // Every page the window claims to cover is the database's page.
                for page in 1..=4 {
                    if w.covers(page, 5) {
                        let body = w.page(page, 5).expect("covered");
                        let v: serde_json::Value =
                            serde_json::from_slice(&body.body()).expect("json");
                        let got: Vec<String> = v["items"]
                            .as_array()
                            .expect("items")
                            .iter()
                            .map(|i| i["id"].as_str().unwrap_or("").to_owned())
                            .collect();
                        let want: Vec<String> = all
                            .iter()
                            .skip((page as usize - 1) * 5)
                            .take(5)
                            .map(Uuid::to_string)
                            .collect();
                        assert_eq!(got, want, "{query} step {step} page {page}");
                        assert_eq!(v["total"], all.len());
                    }
                }
            }
        }
    }

    #[test]
    fn a_change_the_snapshot_saw_is_not_applied_twice_and_an_unknowable_one_drops() {
        let now = Utc::now();
        let params = parse_list(&Task::SPEC, Some("")).expect("query");
        let mut rng = StdRng::seed_from_u64(1);
        let t = task(&mut rng, Uuid::now_v7(), 5);
        let mut w = Window::new(params, now, Snapshot::Seq(7), vec![facts(&t)], 1, 10);
        let create = |token| RowChange {
            tenant: Uuid::nil(),
            slot: 2,
            id: t.id,
            token: Token(token),
            position: 0,
            at: 0,
            old: None,
            new: Some(facts(&t)),
        };
        assert_eq!(w.apply(&create(7), None), Applied::Unchanged);
        assert_eq!(w.total, 1);
        let standby = Snapshot::parse("10:20:", true).expect("snapshot");
        let mut w = Window::new(
            parse_list(&Task::SPEC, Some("")).expect("query"),
            now,
            standby,
            vec![],
            0,
            10,
        );
        assert_eq!(w.apply(&create(15), None), Applied::Drop);
        assert_eq!(w.apply(&create(25), None), Applied::Changed);
    }

    /// The rendered page is byte for byte the serialised `Page` of the same rows.
    #[test]
    fn pages_render_as_the_page_type_serialises() {
        let now = Utc::now();
        let mut rng = StdRng::seed_from_u64(3);
        let tasks: Vec<Task> = (0..3).map(|i| task(&mut rng, Uuid::now_v7(), i)).collect();
        let params = parse_list(&Task::SPEC, Some("sort=created_at")).expect("query");
        let mut w = Window::new(
            params,
            now,
            Snapshot::Seq(0),
            tasks.iter().map(facts).collect(),
            3,
            10,
        );
        let mut sorted = tasks.clone();
        sorted.sort_by_key(|t| (t.created_at, t.id));
        let expected = serde_json::to_vec(&crate::resources::Page {
            items: sorted[2..].to_vec(),
            page: 2,
            per_page: 2,
            total: 3,
        })
        .expect("json");
        assert_eq!(&w.page(2, 2).expect("covered").body()[..], &expected[..]);
    }
}
