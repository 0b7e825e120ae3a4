-- Change capture, for cross-process cache coherence: every committed insert,
-- update and delete of a cached table appends a row here, in the writing
-- transaction, and every larder process polls the rows past the last one it
-- read. Pruning (rows older than 5 minutes) always keeps the newest row, so a
-- new id is always above every id ever read; no AUTOINCREMENT or index on
-- changed_at, which would make each captured write cost two more b-tree writes.
--
-- Applications install the triggers that feed it with larder::capture_sql
-- (or `larder migrate generate --capture TABLE`).
CREATE TABLE larder_changes (
    id         INTEGER PRIMARY KEY NOT NULL,
    table_name TEXT NOT NULL,
    row_id     BIGINT NOT NULL,
    op         TEXT NOT NULL,
    changed_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
