-- Strata schema, SQLite dialect. Keep in step with ../postgres/0001_init.sql:
-- same tables, columns and indexes; only the types differ.
-- Every list filter and sort has an index that starts with tenant_id, ending
-- in id so that the (sort column, id) tie-break order is read straight off it.

CREATE TABLE tenants (
    id         BLOB PRIMARY KEY,
    name       TEXT NOT NULL,
    currency   TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE users (
    id            BLOB PRIMARY KEY,
    tenant_id     BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX users_tenant ON users (tenant_id);

-- Sessions are stored by the SHA-256 of their token: a leaked table cannot
-- be replayed.
CREATE TABLE sessions (
    id_hash    BLOB PRIMARY KEY,
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tenant_id  BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    -- The primary's WAL position after the session's latest write: its
    -- reads go only to a replica that has replayed it (read-your-writes).
    last_write_lsn INTEGER
);
CREATE INDEX sessions_expires ON sessions (expires_at);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE contacts (
    id         BLOB PRIMARY KEY,
    tenant_id  BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    first_name TEXT NOT NULL,
    last_name  TEXT,
    email      TEXT,
    phone      TEXT,
    company    TEXT,
    tags       TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX contacts_created ON contacts (tenant_id, created_at, id);
CREATE INDEX contacts_updated ON contacts (tenant_id, updated_at, id);
CREATE INDEX contacts_first_name ON contacts (tenant_id, first_name, id);
CREATE INDEX contacts_last_name ON contacts (tenant_id, last_name, id);
CREATE INDEX contacts_company ON contacts (tenant_id, lower(company));

-- The tag filter's index: tags are also kept as JSON on the contact for reads.
CREATE TABLE contact_tags (
    tenant_id  BLOB NOT NULL,
    contact_id BLOB NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    tag        TEXT NOT NULL,
    PRIMARY KEY (contact_id, tag)
);
CREATE INDEX contact_tags_tag ON contact_tags (tenant_id, tag, contact_id);

CREATE TABLE deals (
    id                BLOB PRIMARY KEY,
    tenant_id         BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    title             TEXT NOT NULL,
    contact_id        BLOB REFERENCES contacts (id) ON DELETE SET NULL,
    stage             TEXT NOT NULL,
    amount_cents      INTEGER NOT NULL DEFAULT 0,
    expected_close_on TEXT,
    closed_at         TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX deals_created ON deals (tenant_id, created_at, id);
CREATE INDEX deals_updated ON deals (tenant_id, updated_at, id);
CREATE INDEX deals_amount ON deals (tenant_id, amount_cents, id);
CREATE INDEX deals_expected_close ON deals (tenant_id, expected_close_on, id);
CREATE INDEX deals_stage ON deals (tenant_id, stage, created_at);
CREATE INDEX deals_contact ON deals (tenant_id, contact_id);
CREATE INDEX deals_contact_fk ON deals (contact_id);

CREATE TABLE tasks (
    id            BLOB PRIMARY KEY,
    tenant_id     BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    title         TEXT NOT NULL,
    description   TEXT,
    status        TEXT NOT NULL,
    priority      TEXT NOT NULL,
    -- Sorting by priority means low < normal < high, not alphabetical order.
    priority_rank INTEGER GENERATED ALWAYS AS (
        CASE priority WHEN 'low' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END
    ) VIRTUAL,
    due_at        TEXT,
    contact_id    BLOB REFERENCES contacts (id) ON DELETE SET NULL,
    deal_id       BLOB REFERENCES deals (id) ON DELETE SET NULL,
    completed_at  TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX tasks_created ON tasks (tenant_id, created_at, id);
CREATE INDEX tasks_updated ON tasks (tenant_id, updated_at, id);
CREATE INDEX tasks_due ON tasks (tenant_id, due_at, id);
CREATE INDEX tasks_priority_rank ON tasks (tenant_id, priority_rank, id);
CREATE INDEX tasks_status ON tasks (tenant_id, status, due_at);
CREATE INDEX tasks_priority ON tasks (tenant_id, priority);
CREATE INDEX tasks_contact ON tasks (tenant_id, contact_id);
CREATE INDEX tasks_deal ON tasks (tenant_id, deal_id);
CREATE INDEX tasks_contact_fk ON tasks (contact_id);
CREATE INDEX tasks_deal_fk ON tasks (deal_id);

CREATE TABLE invoices (
    id          BLOB PRIMARY KEY,
    tenant_id   BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    number      TEXT NOT NULL,
    -- An invoice must keep its customer: deleting a contact that has
    -- invoices is refused (409), not silently orphaning them.
    contact_id  BLOB NOT NULL REFERENCES contacts (id) ON DELETE RESTRICT,
    status      TEXT NOT NULL,
    lines       TEXT NOT NULL DEFAULT '[]',
    total_cents INTEGER NOT NULL,
    issued_on   TEXT,
    due_on      TEXT,
    paid_at     TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    CONSTRAINT invoices_number_unique UNIQUE (tenant_id, number)
);
CREATE INDEX invoices_created ON invoices (tenant_id, created_at, id);
CREATE INDEX invoices_updated ON invoices (tenant_id, updated_at, id);
CREATE INDEX invoices_issued ON invoices (tenant_id, issued_on, id);
CREATE INDEX invoices_due ON invoices (tenant_id, due_on, id);
CREATE INDEX invoices_total ON invoices (tenant_id, total_cents, id);
CREATE INDEX invoices_status ON invoices (tenant_id, status, due_on);
CREATE INDEX invoices_contact ON invoices (tenant_id, contact_id);
CREATE INDEX invoices_contact_fk ON invoices (contact_id);

CREATE TABLE orders (
    id          BLOB PRIMARY KEY,
    tenant_id   BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    number      TEXT NOT NULL,
    contact_id  BLOB REFERENCES contacts (id) ON DELETE SET NULL,
    status      TEXT NOT NULL,
    lines       TEXT NOT NULL DEFAULT '[]',
    total_cents INTEGER NOT NULL,
    placed_at   TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    CONSTRAINT orders_number_unique UNIQUE (tenant_id, number)
);
CREATE INDEX orders_created ON orders (tenant_id, created_at, id);
CREATE INDEX orders_updated ON orders (tenant_id, updated_at, id);
CREATE INDEX orders_placed ON orders (tenant_id, placed_at, id);
CREATE INDEX orders_total ON orders (tenant_id, total_cents, id);
CREATE INDEX orders_status ON orders (tenant_id, status, placed_at);
CREATE INDEX orders_contact ON orders (tenant_id, contact_id);
CREATE INDEX orders_contact_fk ON orders (contact_id);
