//! Change records: what one committed write did to one row (its image before and after,
//! the write's token and position), as the writer builds it, sends it on the bus and every
//! instance reads it back. Never applies anything; the store does.
//!
//! On the bus a record is JSON: `{"t": tenant, "r": resource, "id", "k": token, "p":
//! position, "a": writer's clock (µs), "o": {"row": object, "low": lowered}, "n": …}`, the
//! objects embedded as the exact bytes the API serves; or `{"t", "drop": [resources], "p",
//! "a"}` when a write changed rows it cannot describe one by one (a delete's `SET NULL`
//! cascade), which drops those resources' views of the tenant.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use strata_db::change::{Lowered, Token};
use strata_db::model::{Contact, Deal, Invoice, Order, Task};
use strata_db::repo::eval::Facts;
use strata_db::repo::Resource;
use tiered_cache::Bytes;
use uuid::Uuid;

/// The resources whose views are kept live, in slot order; the dashboard is the slot after.
pub const RESOURCES: [&str; 5] = ["contacts", "deals", "tasks", "invoices", "orders"];
/// The dashboard's slot.
pub const DASHBOARD_SLOT: usize = RESOURCES.len();

/// The slot of resource `name`.
pub fn slot(name: &str) -> Option<usize> {
    RESOURCES.iter().position(|r| *r == name)
}

/// One write of one row.
#[derive(Debug, Clone)]
pub struct RowChange {
    pub tenant: Uuid,
    pub slot: usize,
    pub id: Uuid,
    pub token: Token,
    /// The commit's position (WAL LSN, SQLite commit counter): fills read at or after it.
    pub position: u64,
    /// The writer's clock when it published, in microseconds since the epoch.
    pub at: i64,
    /// The row before the write and its JSON (`None`: created).
    pub old: Option<(Facts, Bytes)>,
    /// The row after the write and its JSON (`None`: deleted).
    pub new: Option<(Facts, Bytes)>,
}

impl RowChange {
    /// The version the row has after the change: a deletion outranks every version.
    pub fn version(&self) -> i64 {
        self.new.as_ref().map_or(i64::MAX, |(f, _)| f.version())
    }
}

/// What a bus record says.
#[derive(Debug, Clone)]
pub enum Record {
    Row(Box<RowChange>),
    /// Every view of these slots for the tenant is to be dropped.
    Drop {
        tenant: Uuid,
        slots: Vec<usize>,
        position: u64,
        at: i64,
    },
}

impl Record {
    pub fn tenant(&self) -> Uuid {
        match self {
            Record::Row(c) => c.tenant,
            Record::Drop { tenant, .. } => *tenant,
        }
    }

    pub fn position(&self) -> u64 {
        match self {
            Record::Row(c) => c.position,
            Record::Drop { position, .. } => *position,
        }
    }

    pub fn at(&self) -> i64 {
        match self {
            Record::Row(c) => c.at,
            Record::Drop { at, .. } => *at,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct WireImage<'a> {
    #[serde(borrow)]
    row: &'a RawValue,
    low: Lowered,
}

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    t: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<&'a str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    k: Option<u64>,
    p: u64,
    a: i64,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    o: Option<WireImage<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    n: Option<WireImage<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    drop: Option<Vec<&'a str>>,
}

impl Record {
    /// The record as sent on the bus (`None` if an image is not UTF-8 JSON, which
    /// serialising a row never gives).
    pub fn encode(&self) -> Option<String> {
        let boxed = |img: &Option<(Facts, Bytes)>| -> Option<Option<(Box<RawValue>, Lowered)>> {
            match img {
                None => Some(None),
                Some((facts, json)) => {
                    let text = std::str::from_utf8(json).ok()?;
                    let raw = RawValue::from_string(text.to_owned()).ok()?;
                    Some(Some((raw, facts.lowered().clone())))
                }
            }
        };
        fn wire_image(b: &Option<(Box<RawValue>, Lowered)>) -> Option<WireImage<'_>> {
            b.as_ref().map(|(raw, low)| WireImage {
                row: raw,
                low: low.clone(),
            })
        }
        let wire = match self {
            Record::Row(c) => {
                let (old, new) = (boxed(&c.old)?, boxed(&c.new)?);
                let wire = Wire {
                    t: c.tenant,
                    r: Some(RESOURCES[c.slot]),
                    id: Some(c.id),
                    k: Some(c.token.0),
                    p: c.position,
                    a: c.at,
                    o: wire_image(&old),
                    n: wire_image(&new),
                    drop: None,
                };
                return serde_json::to_string(&wire).ok();
            }
            Record::Drop {
                tenant,
                slots,
                position,
                at,
            } => Wire {
                t: *tenant,
                r: None,
                id: None,
                k: None,
                p: *position,
                a: *at,
                o: None,
                n: None,
                drop: Some(
                    slots
                        .iter()
                        .filter_map(|s| RESOURCES.get(*s).copied())
                        .collect(),
                ),
            },
        };
        serde_json::to_string(&wire).ok()
    }

    /// A record from the bus; `None` if it is not one this build understands.
    pub fn decode(payload: &str) -> Option<Record> {
        let wire: Wire<'_> = serde_json::from_str(payload).ok()?;
        if let Some(drop) = wire.drop {
            return Some(Record::Drop {
                tenant: wire.t,
                slots: drop.iter().filter_map(|r| slot(r)).collect(),
                position: wire.p,
                at: wire.a,
            });
        }
        let slot = slot(wire.r?)?;
        let image = |img: &WireImage<'_>| {
            let json = img.row.get();
            Some((
                facts(slot, json, img.low.clone())?,
                Bytes::copy_from_slice(json.as_bytes()),
            ))
        };
        Some(Record::Row(Box::new(RowChange {
            tenant: wire.t,
            slot,
            id: wire.id?,
            token: Token(wire.k?),
            position: wire.p,
            at: wire.a,
            old: match &wire.o {
                Some(img) => Some(image(img)?),
                None => None,
            },
            new: match &wire.n {
                Some(img) => Some(image(img)?),
                None => None,
            },
        })))
    }
}

/// The facts of a row of resource `slot` from its JSON.
fn facts(slot: usize, json: &str, lowered: Lowered) -> Option<Facts> {
    fn of<R: Resource + for<'de> Deserialize<'de>>(json: &str, lowered: Lowered) -> Option<Facts> {
        let row: R = serde_json::from_str(json).ok()?;
        Some(Facts::of(&row, lowered))
    }
    match *RESOURCES.get(slot)? {
        "contacts" => of::<Contact>(json, lowered),
        "deals" => of::<Deal>(json, lowered),
        "tasks" => of::<Task>(json, lowered),
        "invoices" => of::<Invoice>(json, lowered),
        "orders" => of::<Order>(json, lowered),
        _ => None,
    }
}
