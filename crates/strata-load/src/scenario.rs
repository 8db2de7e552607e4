//! What one virtual user does: which request comes next, with what body, and
//! what it learns from the answer (ids and search words for later requests).
//! Never sends anything and never measures: the runner does both.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde::Serialize;
use serde_json::{json, Value};

/// The endpoint classes the report is broken down by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Login,
    Dashboard,
    List,
    Search,
    Get,
    Create,
    Update,
}

impl Class {
    /// Every class, in report order.
    pub const ALL: [Class; 7] = [
        Class::Login,
        Class::Dashboard,
        Class::List,
        Class::Search,
        Class::Get,
        Class::Create,
        Class::Update,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Class::Login => "login",
            Class::Dashboard => "dashboard",
            Class::List => "list",
            Class::Search => "search",
            Class::Get => "get",
            Class::Create => "create",
            Class::Update => "update",
        }
    }

    /// Whether requests of this class change data.
    pub fn is_write(self) -> bool {
        matches!(self, Class::Create | Class::Update)
    }
}

/// The five resources of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resource {
    Contacts,
    Deals,
    Tasks,
    Invoices,
    Orders,
}

impl Resource {
    fn path(self) -> &'static str {
        match self {
            Resource::Contacts => "/api/contacts",
            Resource::Deals => "/api/deals",
            Resource::Tasks => "/api/tasks",
            Resource::Invoices => "/api/invoices",
            Resource::Orders => "/api/orders",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// How often a user looks at each resource: contacts and tasks are the
    /// everyday screens, invoices and orders less so.
    fn pick(rng: &mut StdRng) -> Resource {
        const WEIGHTS: [(Resource, u32); 5] = [
            (Resource::Contacts, 35),
            (Resource::Deals, 20),
            (Resource::Tasks, 25),
            (Resource::Invoices, 10),
            (Resource::Orders, 10),
        ];
        weighted(rng, &WEIGHTS)
    }

    /// The field whose words make realistic `q` searches.
    fn search_field(self) -> &'static str {
        match self {
            Resource::Contacts => "last_name",
            Resource::Deals | Resource::Tasks => "title",
            Resource::Invoices | Resource::Orders => "number",
        }
    }
}

/// One request to send.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub class: Class,
    pub method: Method,
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Value>,
    /// The resource whose ids (and search words) the answer carries.
    pub harvest: Option<Resource>,
}

impl Planned {
    fn get(class: Class, path: String, harvest: Option<Resource>) -> Planned {
        Planned {
            class,
            method: Method::GET,
            path,
            query: Vec::new(),
            body: None,
            harvest,
        }
    }

    fn with(mut self, key: &'static str, value: impl Into<String>) -> Planned {
        self.query.push((key, value.into()));
        self
    }
}

/// Ids and words seen per resource: the most recent ones, bounded.
const REMEMBER: usize = 64;

/// What one virtual user knows and how it chooses.
pub(crate) struct UserState {
    rng: StdRng,
    /// The mix this user draws from: [`MIX`], or its weights rescaled to
    /// another share of writes ([`mix_writing`]).
    mix: Vec<(Step, u32)>,
    ids: [VecDeque<String>; 5],
    words: [VecDeque<String>; 5],
    serial: u64,
    user: usize,
}

/// The mix, in percent of requests after login. Writes (create + update)
/// are 10 %. A step that needs an id the user has not seen yet falls back
/// to the list that would show it one.
#[derive(Clone, Copy, Debug)]
enum Step {
    Dashboard,
    ListFirst,
    ListLater,
    Filter,
    Search,
    Get,
    CreateContact,
    CreateTask,
    PatchDealStage,
    PatchTaskStatus,
    PatchContact,
}

const MIX: [(Step, u32); 11] = [
    (Step::Dashboard, 10),
    (Step::ListFirst, 22),
    (Step::ListLater, 8),
    (Step::Filter, 12),
    (Step::Search, 10),
    (Step::Get, 28),
    (Step::CreateContact, 3),
    (Step::CreateTask, 2),
    (Step::PatchDealStage, 2),
    (Step::PatchTaskStatus, 2),
    (Step::PatchContact, 1),
];

const FIRST_NAMES: [&str; 12] = [
    "Ada", "Grace", "Alan", "Linus", "Margaret", "Edsger", "Barbara", "Donald", "Frances", "Ken",
    "Radia", "John",
];
const LAST_NAMES: [&str; 10] = [
    "Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Dijkstra", "Liskov", "Knuth", "Allen",
    "Thompson",
];
/// Searches used before the user has seen any real words.
const FALLBACK_TERMS: [&str; 6] = ["an", "son", "er", "al", "in", "ma"];

impl UserState {
    /// User number `user` of a run seeded with `seed`, writing in
    /// `write_percent` of its steps (the mix's own 10: [`MIX`] as it is).
    pub fn new(seed: u64, user: usize, write_percent: f64) -> UserState {
        UserState {
            rng: StdRng::seed_from_u64(seed ^ (user as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            mix: mix_writing(write_percent),
            ids: Default::default(),
            words: Default::default(),
            serial: 0,
            user,
        }
    }

    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// The next request of the mix.
    pub fn next(&mut self) -> Planned {
        let step = weighted(&mut self.rng, &self.mix);
        self.plan(step)
    }

    fn known_id(&mut self, resource: Resource) -> Option<String> {
        let ids = &self.ids[resource.index()];
        if ids.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..ids.len());
        Some(ids[i].clone())
    }

    fn first_page(&mut self, resource: Resource) -> Planned {
        Planned::get(Class::List, resource.path().to_owned(), Some(resource))
    }

    fn plan(&mut self, step: Step) -> Planned {
        match step {
            Step::Dashboard => Planned::get(Class::Dashboard, "/api/dashboard/stats".into(), None),
            Step::ListFirst => {
                let resource = Resource::pick(&mut self.rng);
                let plan = self.first_page(resource);
                // A third of the first pages use a sort other than the default.
                if self.rng.random_bool(1.0 / 3.0) {
                    let sort = match resource {
                        Resource::Contacts => "last_name",
                        Resource::Deals => "-amount_cents",
                        Resource::Tasks => "due_at",
                        Resource::Invoices => "-issued_on",
                        Resource::Orders => "-placed_at",
                    };
                    plan.with("sort", sort)
                } else {
                    plan
                }
            }
            Step::ListLater => {
                let resource = Resource::pick(&mut self.rng);
                let page = self.rng.random_range(2..=5u32);
                self.first_page(resource).with("page", page.to_string())
            }
            Step::Filter => {
                const FILTERS: [(Resource, &str, &str); 8] = [
                    (Resource::Deals, "open", "true"),
                    (Resource::Deals, "stage", "negotiation"),
                    (Resource::Tasks, "overdue", "true"),
                    (Resource::Tasks, "status", "pending"),
                    (Resource::Tasks, "priority", "high"),
                    (Resource::Invoices, "status", "sent"),
                    (Resource::Invoices, "status", "overdue"),
                    (Resource::Orders, "status", "paid"),
                ];
                let (resource, key, value) = *FILTERS.choose(&mut self.rng).expect("filters");
                self.first_page(resource).with(key, value)
            }
            Step::Search => {
                const SEARCHED: [(Resource, u32); 4] = [
                    (Resource::Contacts, 55),
                    (Resource::Deals, 20),
                    (Resource::Tasks, 10),
                    (Resource::Invoices, 15),
                ];
                let resource = weighted(&mut self.rng, &SEARCHED);
                let words = &self.words[resource.index()];
                let term = if words.is_empty() {
                    FALLBACK_TERMS
                        .choose(&mut self.rng)
                        .expect("terms")
                        .to_string()
                } else {
                    words[self.rng.random_range(0..words.len())].clone()
                };
                let mut plan = self.first_page(resource).with("q", term);
                plan.class = Class::Search;
                plan
            }
            Step::Get => {
                let resource = Resource::pick(&mut self.rng);
                match self.known_id(resource) {
                    Some(id) => Planned::get(Class::Get, format!("{}/{id}", resource.path()), None),
                    None => self.first_page(resource),
                }
            }
            Step::CreateContact => {
                self.serial += 1;
                let first = *FIRST_NAMES.choose(&mut self.rng).expect("names");
                let last = *LAST_NAMES.choose(&mut self.rng).expect("names");
                let body = json!({
                    "first_name": first,
                    "last_name": last,
                    "email": format!("{}.{}.u{}n{}@load.example", first.to_lowercase(), last.to_lowercase(), self.user, self.serial),
                    "company": format!("{last} Labs"),
                    "tags": ["load-test"],
                });
                self.write(
                    Class::Create,
                    Method::POST,
                    Resource::Contacts.path().into(),
                    body,
                    Resource::Contacts,
                )
            }
            Step::CreateTask => {
                self.serial += 1;
                let priority = *["low", "normal", "high"]
                    .choose(&mut self.rng)
                    .expect("priorities");
                let mut body = json!({
                    "title": format!("Follow up call {}", self.serial),
                    "description": "Created by strata-load.",
                    "priority": priority,
                });
                if let Some(contact) = self.known_id(Resource::Contacts) {
                    body["contact_id"] = Value::String(contact);
                }
                self.write(
                    Class::Create,
                    Method::POST,
                    Resource::Tasks.path().into(),
                    body,
                    Resource::Tasks,
                )
            }
            Step::PatchDealStage => match self.known_id(Resource::Deals) {
                Some(id) => {
                    let stage = *["qualified", "proposal", "negotiation", "won", "lost"]
                        .choose(&mut self.rng)
                        .expect("stages");
                    self.write(
                        Class::Update,
                        Method::PATCH,
                        format!("{}/{id}", Resource::Deals.path()),
                        json!({"stage": stage}),
                        Resource::Deals,
                    )
                }
                None => self.first_page(Resource::Deals).with("open", "true"),
            },
            Step::PatchTaskStatus => match self.known_id(Resource::Tasks) {
                Some(id) => {
                    let status = *["in_progress", "done", "pending"]
                        .choose(&mut self.rng)
                        .expect("statuses");
                    self.write(
                        Class::Update,
                        Method::PATCH,
                        format!("{}/{id}", Resource::Tasks.path()),
                        json!({"status": status}),
                        Resource::Tasks,
                    )
                }
                None => self.first_page(Resource::Tasks),
            },
            Step::PatchContact => match self.known_id(Resource::Contacts) {
                Some(id) => {
                    let last = *LAST_NAMES.choose(&mut self.rng).expect("names");
                    self.write(
                        Class::Update,
                        Method::PATCH,
                        format!("{}/{id}", Resource::Contacts.path()),
                        json!({"company": format!("{last} & Partners")}),
                        Resource::Contacts,
                    )
                }
                None => self.first_page(Resource::Contacts),
            },
        }
    }

    fn write(
        &self,
        class: Class,
        method: Method,
        path: String,
        body: Value,
        resource: Resource,
    ) -> Planned {
        Planned {
            class,
            method,
            path,
            query: Vec::new(),
            body: Some(body),
            harvest: Some(resource),
        }
    }

    /// Learns ids (and search words) from a successful answer: a list's
    /// items, or the one object a create or update returned.
    pub fn learn(&mut self, resource: Resource, body: &[u8]) {
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        match value.get("items").and_then(Value::as_array) {
            Some(items) => {
                for item in items {
                    self.remember(resource, item);
                }
            }
            None => self.remember(resource, &value),
        }
    }

    fn remember(&mut self, resource: Resource, item: &Value) {
        let i = resource.index();
        if let Some(id) = item.get("id").and_then(Value::as_str) {
            push_bounded(&mut self.ids[i], id);
        }
        if let Some(text) = item.get(resource.search_field()).and_then(Value::as_str) {
            // A word, as a user would type it: the first one, at most 12 characters.
            let word: String = text
                .split_whitespace()
                .next()
                .unwrap_or("")
                .chars()
                .take(12)
                .collect();
            if !word.is_empty() {
                push_bounded(&mut self.words[i], &word);
            }
        }
    }
}

fn push_bounded(queue: &mut VecDeque<String>, value: &str) {
    if queue.iter().any(|v| v == value) {
        return;
    }
    if queue.len() == REMEMBER {
        queue.pop_front();
    }
    queue.push_back(value.to_owned());
}

/// Picks an item with probability proportional to its weight.
fn weighted<T: Copy>(rng: &mut StdRng, items: &[(T, u32)]) -> T {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total);
    for (item, weight) in items {
        if roll < *weight {
            return *item;
        }
        roll -= weight;
    }
    items[items.len() - 1].0
}

impl Step {
    fn writes(self) -> bool {
        matches!(
            self,
            Step::CreateContact
                | Step::CreateTask
                | Step::PatchDealStage
                | Step::PatchTaskStatus
                | Step::PatchContact
        )
    }
}

/// The share of each step that writes, in percent (the mix's design figure).
pub fn designed_write_percent() -> u32 {
    MIX.iter().filter(|(s, _)| s.writes()).map(|(_, w)| w).sum()
}

/// [`MIX`] with `write_percent` % of writes (0 to 100): the reads keep their
/// proportions among themselves, and so do the writes. The mix's own share
/// gives [`MIX`] itself, so its runs draw the same steps as before.
fn mix_writing(write_percent: f64) -> Vec<(Step, u32)> {
    let designed = f64::from(designed_write_percent());
    if write_percent == designed {
        return MIX.to_vec();
    }
    let share = write_percent.clamp(0.0, 100.0);
    MIX.iter()
        .map(|&(step, weight)| {
            let scale = if step.writes() {
                share / designed
            } else {
                (100.0 - share) / (100.0 - designed)
            };
            // In thousandths of a percent, so the shares come out exact to 1e-5.
            (step, (f64::from(weight) * scale * 1000.0).round() as u32)
        })
        .collect()
}

/// Chooses tenant numbers (from 1) with Zipf skew: tenant `i` is picked with
/// weight `1 / i^skew`, so most users land on the big tenants and a few on
/// each small one. A skew of 0 spreads users evenly.
pub(crate) fn pick_tenant(rng: &mut StdRng, tenants: u32, skew: f64) -> u32 {
    let weights: Vec<f64> = (1..=tenants).map(|i| 1.0 / (i as f64).powf(skew)).collect();
    let total: f64 = weights.iter().sum();
    let mut roll = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if roll < *w {
            return i as u32 + 1;
        }
        roll -= w;
    }
    tenants
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_writes_ten_percent() {
        assert_eq!(MIX.iter().map(|(_, w)| w).sum::<u32>(), 100);
        assert_eq!(designed_write_percent(), 10);
    }

    #[test]
    fn the_write_share_can_be_set() {
        let writes = |percent: f64| {
            let mut user = UserState::new(3, 0, percent);
            // Ids known, so that no patch falls back to a read.
            for resource in [Resource::Contacts, Resource::Deals, Resource::Tasks] {
                user.ids[resource.index()].push_back("0190-a".to_owned());
            }
            (0..20_000)
                .filter(|_| user.next().method != Method::GET)
                .count()
        };
        assert_eq!(writes(0.0), 0);
        assert_eq!(writes(100.0), 20_000);
        for percent in [2.0, 10.0, 30.0] {
            let share = writes(percent) as f64 / 20_000.0 * 100.0;
            assert!((share - percent).abs() < 1.0, "{percent} %: {share} %");
        }
        // The mix's own share is the mix itself, step for step.
        assert_eq!(mix_writing(10.0).len(), MIX.len());
        assert!(mix_writing(10.0)
            .iter()
            .zip(MIX.iter())
            .all(|(a, b)| a.1 == b.1));
    }

    #[test]
    fn tenants_are_skewed_towards_the_first() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = [0u32; 5];
        for _ in 0..10_000 {
            counts[pick_tenant(&mut rng, 5, 1.0) as usize - 1] += 1;
        }
        assert!(
            counts[0] > counts[1] && counts[1] > counts[4] && counts[4] > 0,
            "{counts:?}"
        );
    }

    #[test]
    fn learning_from_a_list_gives_gets() {
        let mut user = UserState::new(1, 0, 10.0);
        let body =
            br#"{"items":[{"id":"0190-a","last_name":"Knuth"}],"page":1,"per_page":20,"total":1}"#;
        user.learn(Resource::Contacts, body);
        assert_eq!(user.known_id(Resource::Contacts).as_deref(), Some("0190-a"));
        assert_eq!(user.words[0].front().map(String::as_str), Some("Knuth"));
    }
}
