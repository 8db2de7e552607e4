-- Strata schema, PostgreSQL dialect. Keep in step with ../sqlite/0001_init.sql:
-- same tables, columns and indexes; only the types differ.
-- Every list filter and sort has an index that starts with tenant_id, ending
-- in id so that the (sort column, id) tie-break order is read straight off it.

CREATE TABLE tenants (
    id         UUID PRIMARY KEY,
    name       TEXT NOT NULL,
    currency   TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE users (
    id            UUID PRIMARY KEY,
    tenant_id     UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX users_tenant ON users (tenant_id);

-- Sessions are stored by the SHA-256 of their token: a leaked table cannot
-- be replayed.
CREATE TABLE sessions (
    id_hash    BYTEA PRIMARY KEY,
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tenant_id  UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    -- The primary's WAL position after the session's latest write: its
    -- reads go only to a replica that has replayed it (read-your-writes).
    last_write_lsn BIGINT
);
CREATE INDEX sessions_expires ON sessions (expires_at);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE contacts (
    id         UUID PRIMARY KEY,
    tenant_id  UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    first_name TEXT NOT NULL,
    last_name  TEXT,
    email      TEXT,
    phone      TEXT,
    company    TEXT,
    tags       JSONB NOT NULL DEFAULT '[]',
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX contacts_created ON contacts (tenant_id, created_at, id);
CREATE INDEX contacts_updated ON contacts (tenant_id, updated_at, id);
CREATE INDEX contacts_first_name ON contacts (tenant_id, first_name, id);
CREATE INDEX contacts_last_name ON contacts (tenant_id, last_name, id);
CREATE INDEX contacts_company ON contacts (tenant_id, lower(company));

-- The tag filter's index: tags are also kept as JSON on the contact for reads.
CREATE TABLE contact_tags (
    tenant_id  UUID NOT NULL,
    contact_id UUID NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    tag        TEXT NOT NULL,
    PRIMARY KEY (contact_id, tag)
);
CREATE INDEX contact_tags_tag ON contact_tags (tenant_id, tag, contact_id);

CREATE TABLE deals (
    id                UUID PRIMARY KEY,
    tenant_id         UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    title             TEXT NOT NULL,
    contact_id        UUID REFERENCES contacts (id) ON DELETE SET NULL,
    stage             TEXT NOT NULL,
    amount_cents      BIGINT NOT NULL DEFAULT 0,
    expected_close_on DATE,
    closed_at         TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX deals_created ON deals (tenant_id, created_at, id);
CREATE INDEX deals_updated ON deals (tenant_id, updated_at, id);
CREATE INDEX deals_amount ON deals (tenant_id, amount_cents, id);
CREATE INDEX deals_expected_close ON deals (tenant_id, expected_close_on, id);
CREATE INDEX deals_stage ON deals (tenant_id, stage, created_at);
CREATE INDEX deals_contact ON deals (tenant_id, contact_id);
CREATE INDEX deals_contact_fk ON deals (contact_id);

CREATE TABLE tasks (
    id            UUID PRIMARY KEY,
    tenant_id     UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    title         TEXT NOT NULL,
    description   TEXT,
    status        TEXT NOT NULL,
    priority      TEXT NOT NULL,
    -- Sorting by priority means low < normal < high, not alphabetical order.
    priority_rank SMALLINT GENERATED ALWAYS AS (
        CASE priority WHEN 'low' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END
    ) STORED,
    due_at        TIMESTAMPTZ,
    contact_id    UUID REFERENCES contacts (id) ON DELETE SET NULL,
    deal_id       UUID REFERENCES deals (id) ON DELETE SET NULL,
    completed_at  TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
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
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    number      TEXT NOT NULL,
    -- An invoice must keep its customer: deleting a contact that has
    -- invoices is refused (409), not silently orphaning them.
    contact_id  UUID NOT NULL REFERENCES contacts (id) ON DELETE RESTRICT,
    status      TEXT NOT NULL,
    lines       JSONB NOT NULL DEFAULT '[]',
    total_cents BIGINT NOT NULL,
    issued_on   DATE,
    due_on      DATE,
    paid_at     TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
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
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    number      TEXT NOT NULL,
    contact_id  UUID REFERENCES contacts (id) ON DELETE SET NULL,
    status      TEXT NOT NULL,
    lines       JSONB NOT NULL DEFAULT '[]',
    total_cents BIGINT NOT NULL,
    placed_at   TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    CONSTRAINT orders_number_unique UNIQUE (tenant_id, number)
);
CREATE INDEX orders_created ON orders (tenant_id, created_at, id);
CREATE INDEX orders_updated ON orders (tenant_id, updated_at, id);
CREATE INDEX orders_placed ON orders (tenant_id, placed_at, id);
CREATE INDEX orders_total ON orders (tenant_id, total_cents, id);
CREATE INDEX orders_status ON orders (tenant_id, status, placed_at);
CREATE INDEX orders_contact ON orders (tenant_id, contact_id);
CREATE INDEX orders_contact_fk ON orders (contact_id);
