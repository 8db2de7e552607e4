//! The five resources described for the generic repository: their columns,
//! sort fields, search columns and filters, and how a row becomes values.
//! Never holds business rules (defaults, computed fields): the service does.

use chrono::{DateTime, Utc};
use sea_query::Value;
use uuid::Uuid;

use super::{FilterKind, FilterSpec, Resource, SortField, Spec};
use crate::model::{
    Contact, Deal, DealStage, Invoice, InvoiceStatus, Line, Order, OrderStatus, Task, TaskPriority,
    TaskStatus,
};

const fn sort(field: &'static str, column: &'static str, nullable: bool) -> SortField {
    SortField {
        field,
        column,
        nullable,
        text: false,
    }
}

/// A name sort: by the database's `lower()` of the column, as bytes.
const fn text_sort(field: &'static str, column: &'static str, nullable: bool) -> SortField {
    SortField {
        text: true,
        ..sort(field, column, nullable)
    }
}

const fn filter(name: &'static str, kind: FilterKind) -> FilterSpec {
    FilterSpec { name, kind }
}

const CREATED: SortField = sort("created_at", "created_at", false);
const UPDATED: SortField = sort("updated_at", "updated_at", false);

fn json_value<T: serde::Serialize>(v: &T) -> Value {
    // Serialising plain strings and integers cannot fail.
    Value::Json(serde_json::to_value(v).ok().map(Box::new))
}

impl Resource for Contact {
    const SPEC: Spec = Spec {
        name: "contacts",
        columns: &[
            "id",
            "tenant_id",
            "first_name",
            "last_name",
            "email",
            "phone",
            "company",
            "tags",
            "created_at",
            "updated_at",
        ],
        sorts: &[
            CREATED,
            UPDATED,
            text_sort("first_name", "first_name", false),
            text_sort("last_name", "last_name", true),
        ],
        search: &["first_name", "last_name", "email", "company"],
        filters: &[
            filter("company", FilterKind::TextCi("company")),
            filter("tag", FilterKind::Tag),
        ],
    };
    fn id(&self) -> Uuid {
        self.id
    }
    fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
    fn values(&self) -> Vec<Value> {
        vec![
            self.id.into(),
            self.tenant_id.into(),
            self.first_name.clone().into(),
            self.last_name.clone().into(),
            self.email.clone().into(),
            self.phone.clone().into(),
            self.company.clone().into(),
            json_value(&self.tags),
            self.created_at.into(),
            self.updated_at.into(),
        ]
    }
    fn tags(&self) -> Option<&[String]> {
        Some(&self.tags)
    }
}

impl Resource for Deal {
    const SPEC: Spec = Spec {
        name: "deals",
        columns: &[
            "id",
            "tenant_id",
            "title",
            "contact_id",
            "stage",
            "amount_cents",
            "expected_close_on",
            "closed_at",
            "created_at",
            "updated_at",
        ],
        sorts: &[
            CREATED,
            UPDATED,
            sort("amount_cents", "amount_cents", false),
            sort("expected_close_on", "expected_close_on", true),
        ],
        search: &["title"],
        filters: &[
            filter("stage", FilterKind::OneOf("stage", DealStage::ALL)),
            filter("contact_id", FilterKind::Id("contact_id")),
            filter("open", FilterKind::Open),
        ],
    };
    fn id(&self) -> Uuid {
        self.id
    }
    fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
    fn values(&self) -> Vec<Value> {
        vec![
            self.id.into(),
            self.tenant_id.into(),
            self.title.clone().into(),
            self.contact_id.into(),
            self.stage.into(),
            self.amount_cents.into(),
            self.expected_close_on.into(),
            self.closed_at.into(),
            self.created_at.into(),
            self.updated_at.into(),
        ]
    }
}

impl Resource for Task {
    const SPEC: Spec = Spec {
        name: "tasks",
        columns: &[
            "id",
            "tenant_id",
            "title",
            "description",
            "status",
            "priority",
            "due_at",
            "contact_id",
            "deal_id",
            "completed_at",
            "created_at",
            "updated_at",
        ],
        sorts: &[
            CREATED,
            UPDATED,
            sort("due_at", "due_at", true),
            sort("priority", "priority_rank", false),
        ],
        search: &["title"],
        filters: &[
            filter("status", FilterKind::OneOf("status", TaskStatus::ALL)),
            filter("priority", FilterKind::OneOf("priority", TaskPriority::ALL)),
            filter("contact_id", FilterKind::Id("contact_id")),
            filter("deal_id", FilterKind::Id("deal_id")),
            filter("overdue", FilterKind::Overdue),
            filter("due_before", FilterKind::Before("due_at")),
        ],
    };
    fn id(&self) -> Uuid {
        self.id
    }
    fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
    fn values(&self) -> Vec<Value> {
        vec![
            self.id.into(),
            self.tenant_id.into(),
            self.title.clone().into(),
            self.description.clone().into(),
            self.status.into(),
            self.priority.into(),
            self.due_at.into(),
            self.contact_id.into(),
            self.deal_id.into(),
            self.completed_at.into(),
            self.created_at.into(),
            self.updated_at.into(),
        ]
    }
}

impl Resource for Invoice {
    const SPEC: Spec = Spec {
        name: "invoices",
        columns: &[
            "id",
            "tenant_id",
            "number",
            "contact_id",
            "status",
            "lines",
            "total_cents",
            "issued_on",
            "due_on",
            "paid_at",
            "created_at",
            "updated_at",
        ],
        sorts: &[
            CREATED,
            UPDATED,
            sort("issued_on", "issued_on", true),
            sort("due_on", "due_on", true),
            sort("total_cents", "total_cents", false),
        ],
        search: &["number"],
        filters: &[
            filter("status", FilterKind::OneOf("status", InvoiceStatus::ALL)),
            filter("contact_id", FilterKind::Id("contact_id")),
        ],
    };
    fn id(&self) -> Uuid {
        self.id
    }
    fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
    fn values(&self) -> Vec<Value> {
        vec![
            self.id.into(),
            self.tenant_id.into(),
            self.number.clone().into(),
            self.contact_id.into(),
            self.status.into(),
            json_value::<Vec<Line>>(&self.lines),
            self.total_cents.into(),
            self.issued_on.into(),
            self.due_on.into(),
            self.paid_at.into(),
            self.created_at.into(),
            self.updated_at.into(),
        ]
    }
}

impl Resource for Order {
    const SPEC: Spec = Spec {
        name: "orders",
        columns: &[
            "id",
            "tenant_id",
            "number",
            "contact_id",
            "status",
            "lines",
            "total_cents",
            "placed_at",
            "created_at",
            "updated_at",
        ],
        sorts: &[
            CREATED,
            UPDATED,
            sort("placed_at", "placed_at", false),
            sort("total_cents", "total_cents", false),
        ],
        search: &["number"],
        filters: &[
            filter("status", FilterKind::OneOf("status", OrderStatus::ALL)),
            filter("contact_id", FilterKind::Id("contact_id")),
        ],
    };
    fn id(&self) -> Uuid {
        self.id
    }
    fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
    fn values(&self) -> Vec<Value> {
        vec![
            self.id.into(),
            self.tenant_id.into(),
            self.number.clone().into(),
            self.contact_id.into(),
            self.status.into(),
            json_value::<Vec<Line>>(&self.lines),
            self.total_cents.into(),
            self.placed_at.into(),
            self.created_at.into(),
            self.updated_at.into(),
        ]
    }
}
