//! Tasks: things to do, optionally about a contact or a deal.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use strata_db::model::{Task, TaskPriority, TaskStatus};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ApiResource, Errors};
use crate::http::body::{nullable, InputFields};

/// The body of `POST /api/tasks` and `PATCH /api/tasks/{id}`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct TaskInput {
    /// Required on create; 1 to 200 characters.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub title: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub description: Option<Option<String>>,
    /// Default `pending`; becoming `done` sets `completed_at`.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = TaskStatus)]
    pub status: Option<Option<TaskStatus>>,
    /// Default `normal`.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = TaskPriority)]
    pub priority: Option<Option<TaskPriority>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub due_at: Option<Option<DateTime<Utc>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    pub contact_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    pub deal_id: Option<Option<Uuid>>,
}

impl InputFields for TaskInput {
    const FIELDS: &'static [&'static str] = &[
        "title",
        "description",
        "status",
        "priority",
        "due_at",
        "contact_id",
        "deal_id",
    ];
    const READ_ONLY: &'static [&'static str] = &["id", "completed_at", "created_at", "updated_at"];
}

impl ApiResource for Task {
    type Input = TaskInput;
    const REQUIRED: &'static [&'static str] = &["title"];

    fn blank(tenant: Uuid, id: Uuid, now: DateTime<Utc>) -> Self {
        Task {
            id,
            tenant_id: tenant,
            title: String::new(),
            description: None,
            status: TaskStatus::Pending,
            priority: TaskPriority::Normal,
            due_at: None,
            contact_id: None,
            deal_id: None,
            completed_at: None,
            created_at: now,
            updated_at: now,
        }
    }

    fn apply(&mut self, input: TaskInput, errors: &mut Errors) {
        errors.set(&mut self.title, input.title, "title");
        if let Some(v) = input.description {
            self.description = v;
        }
        errors.set(&mut self.status, input.status, "status");
        errors.set(&mut self.priority, input.priority, "priority");
        if let Some(v) = input.due_at {
            self.due_at = v.map(strata_db::model::db_time);
        }
        if let Some(v) = input.contact_id {
            self.contact_id = v;
        }
        if let Some(v) = input.deal_id {
            self.deal_id = v;
        }
    }

    fn rules(&mut self, before: Option<&Self>, now: DateTime<Utc>, _errors: &mut Errors) {
        let status_changed = before.is_none_or(|b| b.status != self.status);
        if self.status != TaskStatus::Done {
            self.completed_at = None;
        } else if status_changed {
            self.completed_at = Some(now);
        }
    }

    fn validate(&self, errors: &mut Errors) {
        errors.required_text("title", &self.title, 200);
        errors.optional_text("description", self.description.as_deref(), 10_000);
        errors.timestamp("due_at", self.due_at);
    }

    fn references(&self) -> Vec<(&'static str, &'static str, Uuid)> {
        let contact = self.contact_id.map(|id| ("contact_id", "contacts", id));
        let deal = self.deal_id.map(|id| ("deal_id", "deals", id));
        contact.into_iter().chain(deal).collect()
    }

    fn touch(&mut self, at: DateTime<Utc>) {
        self.updated_at = at;
    }
}
