CREATE TABLE tags (
    id      INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    post_id INTEGER NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    label   TEXT NOT NULL
);
CREATE INDEX tags_post_id ON tags (post_id);

-- Change capture, so other processes' caches hear about tag changes:
-- what larder::capture_sql(Backend::Sqlite, "tags") writes.
SELECT "tags"."id" FROM "tags" WHERE 1 = 0;
CREATE TRIGGER larder_capture_tags_insert AFTER INSERT ON "tags" FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('tags', NEW.id, 'I'); END;
CREATE TRIGGER larder_capture_tags_update AFTER UPDATE ON "tags" FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('tags', OLD.id, 'U'); END;
CREATE TRIGGER larder_capture_tags_update_id AFTER UPDATE OF id ON "tags" FOR EACH ROW WHEN NEW.id <> OLD.id BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('tags', NEW.id, 'U'); END;
CREATE TRIGGER larder_capture_tags_delete AFTER DELETE ON "tags" FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('tags', OLD.id, 'D'); END;
