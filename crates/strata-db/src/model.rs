//! The rows Strata stores, which are also the objects the API returns: one
//! definition gives the columns, the JSON and the OpenAPI schema.
//! Never holds rules about what a valid row is; the service layer does.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::ToSchema;
use uuid::Uuid;

/// Defines a closed set of lowercase strings stored as TEXT in both backends.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, as it appears in JSON and in the database.
            pub const ALL: &'static [&'static str] = &[$($text),+];

            /// The value as it appears in JSON and in the database.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(format!("must be one of: {}", Self::ALL.join(", "))),
                }
            }
        }

        impl<DB: sqlx::Database> sqlx::Type<DB> for $name where str: sqlx::Type<DB> {
            fn type_info() -> DB::TypeInfo { <str as sqlx::Type<DB>>::type_info() }
            fn compatible(ty: &DB::TypeInfo) -> bool { <str as sqlx::Type<DB>>::compatible(ty) }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name where &'r str: sqlx::Decode<'r, DB> {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                Ok(<&str as sqlx::Decode<DB>>::decode(value)?.parse::<$name>()?)
            }
        }

        impl From<$name> for sea_query::Value {
            fn from(v: $name) -> Self { v.as_str().into() }
        }
    };
}

text_enum!(
    /// A user's role in their tenant.
    Role { Admin => "admin", Member => "member" }
);
text_enum!(
    /// Where a deal stands; `won` and `lost` close it.
    DealStage {
        Lead => "lead", Qualified => "qualified", Proposal => "proposal",
        Negotiation => "negotiation", Won => "won", Lost => "lost",
    }
);
text_enum!(
    /// A task's progress; `done` completes it.
    TaskStatus { Pending => "pending", InProgress => "in_progress", Done => "done" }
);
text_enum!(
    /// A task's urgency; sorts low < normal < high.
    TaskPriority { Low => "low", Normal => "normal", High => "high" }
);
text_enum!(
    /// An invoice's state.
    InvoiceStatus { Draft => "draft", Sent => "sent", Paid => "paid", Overdue => "overdue", Void => "void" }
);
text_enum!(
    /// An order's state.
    OrderStatus {
        Pending => "pending", Paid => "paid", Shipped => "shipped",
        Delivered => "delivered", Cancelled => "cancelled",
    }
);

impl DealStage {
    /// Whether the deal is still in the pipeline.
    pub fn is_open(self) -> bool {
        !matches!(self, DealStage::Won | DealStage::Lost)
    }
}

/// A tenant: the unit of isolation. Every other row belongs to one.
#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    /// ISO 4217 code of the currency every `*_cents` amount is in.
    pub currency: String,
    #[serde(skip)]
    pub created_at: DateTime<Utc>,
}

/// A user who can log in to one tenant.
#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct User {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant_id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    #[serde(skip)]
    pub password_hash: String,
    #[serde(skip)]
    pub created_at: DateTime<Utc>,
}

/// A person the tenant does business with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow, ToSchema)]
pub struct Contact {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant_id: Uuid,
    pub first_name: String,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    #[sqlx(json)]
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A sales opportunity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow, ToSchema)]
pub struct Deal {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant_id: Uuid,
    pub title: String,
    pub contact_id: Option<Uuid>,
    pub stage: DealStage,
    pub amount_cents: i64,
    pub expected_close_on: Option<NaiveDate>,
    /// Set by the server when the stage becomes `won` or `lost`.
    pub closed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Something to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow, ToSchema)]
pub struct Task {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant_id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub status: TaskStatus,
    pub priority: TaskPriority,
    pub due_at: Option<DateTime<Utc>>,
    pub contact_id: Option<Uuid>,
    pub deal_id: Option<Uuid>,
    /// Set by the server when the status becomes `done`.
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One line of an invoice or an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub description: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

/// A bill sent to a contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow, ToSchema)]
pub struct Invoice {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant_id: Uuid,
    pub number: String,
    pub contact_id: Uuid,
    pub status: InvoiceStatus,
    #[sqlx(json)]
    pub lines: Vec<Line>,
    /// The sum of the lines, computed by the server.
    pub total_cents: i64,
    pub issued_on: Option<NaiveDate>,
    pub due_on: Option<NaiveDate>,
    pub paid_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A customer's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow, ToSchema)]
pub struct Order {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant_id: Uuid,
    pub number: String,
    pub contact_id: Option<Uuid>,
    pub status: OrderStatus,
    #[sqlx(json)]
    pub lines: Vec<Line>,
    /// The sum of the lines, computed by the server.
    pub total_cents: i64,
    pub placed_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The figures of `GET /api/dashboard/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DashboardStats {
    pub contacts: ContactStats,
    pub deals: DealStats,
    pub tasks: TaskStats,
    pub invoices: InvoiceStats,
    pub orders: OrderStats,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ContactStats {
    pub total: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DealStats {
    /// Deals not won or lost.
    pub open: i64,
    /// The amount of the open deals.
    pub pipeline_cents: i64,
    pub won_this_month: i64,
    pub won_cents_this_month: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskStats {
    pub pending: i64,
    /// Not done and due in the past.
    pub overdue: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InvoiceStats {
    /// Sent or overdue: money the tenant is waiting for.
    pub outstanding: i64,
    pub outstanding_cents: i64,
    /// Marked overdue, or sent and past their due date.
    pub overdue: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderStats {
    /// Orders placed since the start of the month (UTC).
    pub this_month: i64,
    /// Their total, cancelled orders excluded.
    pub revenue_cents_this_month: i64,
}

/// Truncates a timestamp to what both databases store (microseconds), so a
/// value read back compares equal to the one written.
pub fn db_time(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::SubsecRound;
    t.trunc_subsecs(6)
}
