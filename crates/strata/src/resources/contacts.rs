//! Contacts: people the tenant does business with.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use strata_db::model::Contact;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ApiResource, Errors};
use crate::http::body::{nullable, InputFields};

/// The body of `POST /api/contacts` and `PATCH /api/contacts/{id}`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct ContactInput {
    /// Required on create; 1 to 100 characters.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = String, min_length = 1, max_length = 100)]
    pub first_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 100)]
    pub last_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, format = Email)]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 40)]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 200)]
    pub company: Option<Option<String>>,
    /// At most 20 tags of 1 to 40 characters; duplicates are dropped.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Vec<String>, max_items = 20)]
    pub tags: Option<Option<Vec<String>>>,
}

impl InputFields for ContactInput {
    const FIELDS: &'static [&'static str] = &[
        "first_name",
        "last_name",
        "email",
        "phone",
        "company",
        "tags",
    ];
    const READ_ONLY: &'static [&'static str] = &["id", "created_at", "updated_at"];
}

impl ApiResource for Contact {
    type Input = ContactInput;
    const REQUIRED: &'static [&'static str] = &["first_name"];
    // Deleting a contact empties `contact_id` of its deals, tasks and orders.
    const DELETE_CHANGES: &'static [&'static str] = &["deals", "tasks", "orders"];

    fn blank(tenant: Uuid, id: Uuid, now: DateTime<Utc>) -> Self {
        Contact {
            id,
            tenant_id: tenant,
            first_name: String::new(),
            last_name: None,
            email: None,
            phone: None,
            company: None,
            tags: Vec::new(),
            created_at: now,
            updated_at: now,
        }
    }

    fn apply(&mut self, input: ContactInput, errors: &mut Errors) {
        errors.set(&mut self.first_name, input.first_name, "first_name");
        if let Some(v) = input.last_name {
            self.last_name = v;
        }
        if let Some(v) = input.email {
            self.email = v;
        }
        if let Some(v) = input.phone {
            self.phone = v;
        }
        if let Some(v) = input.company {
            self.company = v;
        }
        errors.set(&mut self.tags, input.tags, "tags");
    }

    fn rules(&mut self, _before: Option<&Self>, _now: DateTime<Utc>, _errors: &mut Errors) {
        // Tags are a set: keep the first of each, in the client's order.
        let mut seen = std::collections::HashSet::new();
        self.tags.retain(|t| seen.insert(t.clone()));
    }

    fn validate(&self, errors: &mut Errors) {
        errors.required_text("first_name", &self.first_name, 100);
        errors.optional_text("last_name", self.last_name.as_deref(), 100);
        errors.email("email", self.email.as_deref());
        errors.optional_text("phone", self.phone.as_deref(), 40);
        errors.optional_text("company", self.company.as_deref(), 200);
        if self.tags.len() > 20 {
            errors.add("tags", "must have at most 20 tags");
        }
        for (i, tag) in self.tags.iter().enumerate() {
            if tag.trim().is_empty() || tag.chars().count() > 40 {
                errors.add(
                    format!("tags[{i}]"),
                    "must be 1 to 40 characters, not blank",
                );
            }
        }
    }

    fn references(&self) -> Vec<(&'static str, &'static str, Uuid)> {
        Vec::new()
    }

    fn touch(&mut self, at: DateTime<Utc>) {
        self.updated_at = at;
    }
}
