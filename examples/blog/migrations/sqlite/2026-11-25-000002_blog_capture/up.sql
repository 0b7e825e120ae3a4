-- Change capture on the blog's tables: what larder::capture_sql writes for
-- each, feeding larder's change log (larder's own migration creates it).
-- Rows removed by ON DELETE CASCADE fire their own table's delete trigger.
SELECT "users"."id" FROM "users" WHERE 1 = 0;
CREATE TRIGGER larder_capture_users_insert AFTER INSERT ON "users" FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('users', NEW.id, 'I'); END;
CREATE TRIGGER larder_capture_users_update AFTER UPDATE ON "users" FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('users', OLD.id, 'U'); END;
CREATE TRIGGER larder_capture_users_update_id AFTER UPDATE OF id ON "users" FOR EACH ROW WHEN NEW.id <> OLD.id BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('users', NEW.id, 'U'); END;
CREATE TRIGGER larder_capture_users_delete AFTER DELETE ON "users" FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('users', OLD.id, 'D'); END;
SELECT "posts"."id" FROM "posts" WHERE 1 = 0;
CREATE TRIGGER larder_capture_posts_insert AFTER INSERT ON "posts" FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('posts', NEW.id, 'I'); END;
CREATE TRIGGER larder_capture_posts_update AFTER UPDATE ON "posts" FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('posts', OLD.id, 'U'); END;
CREATE TRIGGER larder_capture_posts_update_id AFTER UPDATE OF id ON "posts" FOR EACH ROW WHEN NEW.id <> OLD.id BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('posts', NEW.id, 'U'); END;
CREATE TRIGGER larder_capture_posts_delete AFTER DELETE ON "posts" FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('posts', OLD.id, 'D'); END;
SELECT "comments"."id" FROM "comments" WHERE 1 = 0;
CREATE TRIGGER larder_capture_comments_insert AFTER INSERT ON "comments" FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('comments', NEW.id, 'I'); END;
CREATE TRIGGER larder_capture_comments_update AFTER UPDATE ON "comments" FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('comments', OLD.id, 'U'); END;
CREATE TRIGGER larder_capture_comments_update_id AFTER UPDATE OF id ON "comments" FOR EACH ROW WHEN NEW.id <> OLD.id BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('comments', NEW.id, 'U'); END;
CREATE TRIGGER larder_capture_comments_delete AFTER DELETE ON "comments" FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('comments', OLD.id, 'D'); END;
