-- Change capture, for cross-process cache coherence: every committed insert,
-- update and delete of a cached table appends a row here, in the writing
-- transaction, and every larder process polls it. Concurrent transactions may
-- commit their ids out of order; the poller keeps track of skipped ids.
-- Rows are pruned after 5 minutes (oldest ids first, so no index on
-- changed_at is needed). Applications install the triggers that
-- feed it with larder::capture_sql (or `larder migrate generate --capture`).
CREATE TABLE larder_changes (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    table_name VARCHAR(64) NOT NULL,
    row_id     BIGINT NOT NULL,
    op         CHAR(1) NOT NULL,
    changed_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
