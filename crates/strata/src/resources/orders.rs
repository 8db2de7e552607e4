//! Orders: what customers bought, totalled by the server from their lines.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use strata_db::model::{Line, Order, OrderStatus};
use utoipa::ToSchema;
use uuid::Uuid;

use super::invoices::apply_lines;
use super::validate::lines_total;
use super::{ApiResource, Errors};
use crate::http::body::{nullable, InputFields};

/// The body of `POST /api/orders` and `PATCH /api/orders/{id}`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct OrderInput {
    /// Required on create; 1 to 50 characters, unique in the tenant (409).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = String, min_length = 1, max_length = 50)]
    pub number: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    pub contact_id: Option<Option<Uuid>>,
    /// Default `pending`.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = OrderStatus)]
    pub status: Option<Option<OrderStatus>>,
    /// 1 to 200 lines when given; the total is computed from them.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Vec<Line>, min_items = 1, max_items = 200)]
    pub lines: Option<Option<Vec<Line>>>,
    /// Default: the time of creation.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = DateTime<Utc>)]
    pub placed_at: Option<Option<DateTime<Utc>>>,
}

impl InputFields for OrderInput {
    const FIELDS: &'static [&'static str] =
        &["number", "contact_id", "status", "lines", "placed_at"];
    const READ_ONLY: &'static [&'static str] = &["id", "total_cents", "created_at", "updated_at"];
}

impl ApiResource for Order {
    type Input = OrderInput;
    const REQUIRED: &'static [&'static str] = &["number"];

    fn blank(tenant: Uuid, id: Uuid, now: DateTime<Utc>) -> Self {
        Order {
            id,
            tenant_id: tenant,
            number: String::new(),
            contact_id: None,
            status: OrderStatus::Pending,
            lines: Vec::new(),
            total_cents: 0,
            placed_at: now,
            created_at: now,
            updated_at: now,
        }
    }

    fn apply(&mut self, input: OrderInput, errors: &mut Errors) {
        errors.set(&mut self.number, input.number, "number");
        if let Some(v) = input.contact_id {
            self.contact_id = v;
        }
        errors.set(&mut self.status, input.status, "status");
        apply_lines(&mut self.lines, input.lines, errors);
        if let Some(v) = input.placed_at {
            errors.set(
                &mut self.placed_at,
                Some(v.map(strata_db::model::db_time)),
                "placed_at",
            );
        }
    }

    fn rules(&mut self, _before: Option<&Self>, _now: DateTime<Utc>, errors: &mut Errors) {
        self.total_cents = lines_total(&self.lines, errors);
    }

    fn validate(&self, errors: &mut Errors) {
        errors.required_text("number", &self.number, 50);
        errors.timestamp("placed_at", Some(self.placed_at));
    }

    fn references(&self) -> Vec<(&'static str, &'static str, Uuid)> {
        self.contact_id
            .map(|id| ("contact_id", "contacts", id))
            .into_iter()
            .collect()
    }

    fn touch(&mut self, at: DateTime<Utc>) {
        self.updated_at = at;
    }
}
