//! Invoices: bills to a contact, totalled by the server from their lines.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use strata_db::model::{Invoice, InvoiceStatus, Line};
use utoipa::ToSchema;
use uuid::Uuid;

use super::validate::lines_total;
use super::{ApiResource, Errors};
use crate::http::body::{nullable, InputFields};

/// The body of `POST /api/invoices` and `PATCH /api/invoices/{id}`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct InvoiceInput {
    /// Required on create; 1 to 50 characters, unique in the tenant (409).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = String, min_length = 1, max_length = 50)]
    pub number: Option<Option<String>>,
    /// Required on create: a contact of the caller's tenant.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Uuid)]
    pub contact_id: Option<Option<Uuid>>,
    /// Default `draft`; becoming `paid` sets `paid_at` when it is not given.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = InvoiceStatus)]
    pub status: Option<Option<InvoiceStatus>>,
    /// 1 to 200 lines when given; the total is computed from them.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Vec<Line>, min_items = 1, max_items = 200)]
    pub lines: Option<Option<Vec<Line>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<NaiveDate>)]
    pub issued_on: Option<Option<NaiveDate>>,
    /// Not before `issued_on`.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<NaiveDate>)]
    pub due_on: Option<Option<NaiveDate>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub paid_at: Option<Option<DateTime<Utc>>>,
}

impl InputFields for InvoiceInput {
    const FIELDS: &'static [&'static str] = &[
        "number",
        "contact_id",
        "status",
        "lines",
        "issued_on",
        "due_on",
        "paid_at",
    ];
    const READ_ONLY: &'static [&'static str] = &["id", "total_cents", "created_at", "updated_at"];
}

/// Applies a `lines` input: present lines must number at least one.
pub(super) fn apply_lines(
    slot: &mut Vec<Line>,
    input: Option<Option<Vec<Line>>>,
    errors: &mut Errors,
) {
    match input {
        Some(Some(lines)) if lines.is_empty() => errors.add("lines", "must have at least 1 line"),
        other => errors.set(slot, other, "lines"),
    }
}

impl ApiResource for Invoice {
    type Input = InvoiceInput;
    const REQUIRED: &'static [&'static str] = &["number", "contact_id"];

    fn blank(tenant: Uuid, id: Uuid, now: DateTime<Utc>) -> Self {
        Invoice {
            id,
            tenant_id: tenant,
            number: String::new(),
            contact_id: Uuid::nil(),
            status: InvoiceStatus::Draft,
            lines: Vec::new(),
            total_cents: 0,
            issued_on: None,
            due_on: None,
            paid_at: None,
            created_at: now,
            updated_at: now,
        }
    }

    fn apply(&mut self, input: InvoiceInput, errors: &mut Errors) {
        errors.set(&mut self.number, input.number, "number");
        errors.set(&mut self.contact_id, input.contact_id, "contact_id");
        errors.set(&mut self.status, input.status, "status");
        apply_lines(&mut self.lines, input.lines, errors);
        if let Some(v) = input.issued_on {
            self.issued_on = v;
        }
        if let Some(v) = input.due_on {
            self.due_on = v;
        }
        if let Some(v) = input.paid_at {
            self.paid_at = v.map(strata_db::model::db_time);
        }
    }

    fn rules(&mut self, before: Option<&Self>, now: DateTime<Utc>, errors: &mut Errors) {
        self.total_cents = lines_total(&self.lines, errors);
        let became_paid = self.status == InvoiceStatus::Paid
            && before.is_none_or(|b| b.status != InvoiceStatus::Paid);
        if became_paid && self.paid_at.is_none() {
            self.paid_at = Some(now);
        }
    }

    fn validate(&self, errors: &mut Errors) {
        errors.required_text("number", &self.number, 50);
        if self.contact_id.is_nil() {
            errors.add("contact_id", "is required");
        }
        errors.date("issued_on", self.issued_on);
        errors.date("due_on", self.due_on);
        errors.not_before("due_on", self.due_on, "issued_on", self.issued_on);
        errors.timestamp("paid_at", self.paid_at);
    }

    fn references(&self) -> Vec<(&'static str, &'static str, Uuid)> {
        if self.contact_id.is_nil() {
            return Vec::new();
        }
        vec![("contact_id", "contacts", self.contact_id)]
    }

    fn touch(&mut self, at: DateTime<Utc>) {
        self.updated_at = at;
    }
}
