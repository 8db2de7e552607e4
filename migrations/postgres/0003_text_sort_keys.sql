-- Name sorts compare the database's lower() of the name as bytes
-- (COLLATE "C"), with the id breaking ties: the same order on PostgreSQL
-- and SQLite whatever the database's locale, and one that a cache can
-- reproduce exactly from the lowered values the database returns (see
-- docs/architecture.md, "Cached lists kept exact under writes"). These
-- indexes replace the ones on the raw names, which no query uses now.
CREATE INDEX contacts_first_name_key ON contacts (tenant_id, (lower(first_name) COLLATE "C"), id);
CREATE INDEX contacts_last_name_key ON contacts (tenant_id, (lower(last_name) COLLATE "C"), id);
DROP INDEX contacts_first_name;
DROP INDEX contacts_last_name;
