//! Deals: sales opportunities moving through stages.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use strata_db::model::{Deal, DealStage};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ApiResource, Errors};
use crate::http::body::{nullable, InputFields};

/// The body of `POST /api/deals` and `PATCH /api/deals/{id}`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct DealInput {
    /// Required on create; 1 to 200 characters.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub title: Option<Option<String>>,
    /// A contact of the caller's tenant.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    pub contact_id: Option<Option<Uuid>>,
    /// Default `lead`; becoming `won` or `lost` sets `closed_at`.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = DealStage)]
    pub stage: Option<Option<DealStage>>,
    /// Default 0.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = i64, minimum = 0)]
    pub amount_cents: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<NaiveDate>)]
    pub expected_close_on: Option<Option<NaiveDate>>,
}

impl InputFields for DealInput {
    const FIELDS: &'static [&'static str] = &[
        "title",
        "contact_id",
        "stage",
        "amount_cents",
        "expected_close_on",
    ];
    const READ_ONLY: &'static [&'static str] = &["id", "closed_at", "created_at", "updated_at"];
}

impl ApiResource for Deal {
    type Input = DealInput;
    const REQUIRED: &'static [&'static str] = &["title"];
    // Deleting a deal empties `deal_id` of its tasks.
    const DELETE_CHANGES: &'static [&'static str] = &["tasks"];

    fn blank(tenant: Uuid, id: Uuid, now: DateTime<Utc>) -> Self {
        Deal {
            id,
            tenant_id: tenant,
            title: String::new(),
            contact_id: None,
            stage: DealStage::Lead,
            amount_cents: 0,
            expected_close_on: None,
            closed_at: None,
            created_at: now,
            updated_at: now,
        }
    }

    fn apply(&mut self, input: DealInput, errors: &mut Errors) {
        errors.set(&mut self.title, input.title, "title");
        if let Some(v) = input.contact_id {
            self.contact_id = v;
        }
        errors.set(&mut self.stage, input.stage, "stage");
        errors.set(&mut self.amount_cents, input.amount_cents, "amount_cents");
        if let Some(v) = input.expected_close_on {
            self.expected_close_on = v;
        }
    }

    fn rules(&mut self, before: Option<&Self>, now: DateTime<Utc>, _errors: &mut Errors) {
        let stage_changed = before.is_none_or(|b| b.stage != self.stage);
        if self.stage.is_open() {
            self.closed_at = None;
        } else if stage_changed {
            self.closed_at = Some(now);
        }
    }

    fn validate(&self, errors: &mut Errors) {
        errors.required_text("title", &self.title, 200);
        errors.non_negative("amount_cents", self.amount_cents);
        errors.date("expected_close_on", self.expected_close_on);
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
