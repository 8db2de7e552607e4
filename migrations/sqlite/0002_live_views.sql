-- Every write transaction moves this counter on by one and reports its new
-- value: the write's token. A read that reports the counter in the same
-- statement says exactly which writes it saw (SQLite has one writer, so the
-- counter and the rows change together). PostgreSQL uses transaction ids
-- and snapshots instead, and has no such table.
CREATE TABLE change_seq (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO change_seq (id, n) VALUES (1, 0);

-- Name sorts compare lower() of the name as bytes (SQLite's BINARY), with
-- the id breaking ties: the same order as PostgreSQL's, which compares the
-- same values COLLATE "C". These replace the indexes on the raw names.
CREATE INDEX contacts_first_name_key ON contacts (tenant_id, lower(first_name), id);
CREATE INDEX contacts_last_name_key ON contacts (tenant_id, lower(last_name), id);
DROP INDEX contacts_first_name;
DROP INDEX contacts_last_name;
