-- Back to the capture without key values.
DROP TRIGGER IF EXISTS larder_capture_posts_insert;
DROP TRIGGER IF EXISTS larder_capture_posts_update;
DROP TRIGGER IF EXISTS larder_capture_posts_update_id;
DROP TRIGGER IF EXISTS larder_capture_posts_delete;
DROP TRIGGER IF EXISTS larder_capture_comments_insert;
DROP TRIGGER IF EXISTS larder_capture_comments_update;
DROP TRIGGER IF EXISTS larder_capture_comments_update_id;
DROP TRIGGER IF EXISTS larder_capture_comments_delete;
CREATE TRIGGER larder_capture_posts_insert AFTER INSERT ON posts FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('posts', NEW.id, 'I'); END;
CREATE TRIGGER larder_capture_posts_update AFTER UPDATE ON posts FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('posts', OLD.id, 'U'); END;
CREATE TRIGGER larder_capture_posts_update_id AFTER UPDATE OF id ON posts FOR EACH ROW WHEN NEW.id <> OLD.id BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('posts', NEW.id, 'U'); END;
CREATE TRIGGER larder_capture_posts_delete AFTER DELETE ON posts FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('posts', OLD.id, 'D'); END;
CREATE TRIGGER larder_capture_comments_insert AFTER INSERT ON comments FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('comments', NEW.id, 'I'); END;
CREATE TRIGGER larder_capture_comments_update AFTER UPDATE ON comments FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('comments', OLD.id, 'U'); END;
CREATE TRIGGER larder_capture_comments_update_id AFTER UPDATE OF id ON comments FOR EACH ROW WHEN NEW.id <> OLD.id BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('comments', NEW.id, 'U'); END;
CREATE TRIGGER larder_capture_comments_delete AFTER DELETE ON comments FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op) VALUES ('comments', OLD.id, 'D'); END;
