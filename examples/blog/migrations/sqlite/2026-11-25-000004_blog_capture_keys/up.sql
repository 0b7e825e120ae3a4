-- The capture of posts and comments again, now reporting their key columns
-- (what larder::capture_sql_with_keys writes, `larder migrate generate NAME
-- --capture comments:post_id --capture posts:author_id`): other processes then
-- retire only the cached lists of the post (or author) a change touched, not
-- every list of the table.
DROP TRIGGER IF EXISTS larder_capture_posts_insert;
DROP TRIGGER IF EXISTS larder_capture_posts_update;
DROP TRIGGER IF EXISTS larder_capture_posts_update_id;
DROP TRIGGER IF EXISTS larder_capture_posts_delete;
DROP TRIGGER IF EXISTS larder_capture_comments_insert;
DROP TRIGGER IF EXISTS larder_capture_comments_update;
DROP TRIGGER IF EXISTS larder_capture_comments_update_id;
DROP TRIGGER IF EXISTS larder_capture_comments_delete;
CREATE TRIGGER larder_capture_comments_insert AFTER INSERT ON comments FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op, key_values) VALUES ('comments', NEW.id, 'I', 'post_id=' || COALESCE(CAST(NEW.post_id AS TEXT), '')); END;
CREATE TRIGGER larder_capture_comments_update AFTER UPDATE ON comments FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op, key_values) VALUES ('comments', OLD.id, 'U', 'post_id=' || COALESCE(CAST(OLD.post_id AS TEXT), '') || ',post_id=' || COALESCE(CAST(NEW.post_id AS TEXT), '')); END;
CREATE TRIGGER larder_capture_comments_update_id AFTER UPDATE OF id ON comments FOR EACH ROW WHEN NEW.id <> OLD.id BEGIN INSERT INTO larder_changes (table_name, row_id, op, key_values) VALUES ('comments', NEW.id, 'U', 'post_id=' || COALESCE(CAST(OLD.post_id AS TEXT), '') || ',post_id=' || COALESCE(CAST(NEW.post_id AS TEXT), '')); END;
CREATE TRIGGER larder_capture_comments_delete AFTER DELETE ON comments FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op, key_values) VALUES ('comments', OLD.id, 'D', 'post_id=' || COALESCE(CAST(OLD.post_id AS TEXT), '')); END;
CREATE TRIGGER larder_capture_posts_insert AFTER INSERT ON posts FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op, key_values) VALUES ('posts', NEW.id, 'I', 'author_id=' || COALESCE(CAST(NEW.author_id AS TEXT), '')); END;
CREATE TRIGGER larder_capture_posts_update AFTER UPDATE ON posts FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op, key_values) VALUES ('posts', OLD.id, 'U', 'author_id=' || COALESCE(CAST(OLD.author_id AS TEXT), '') || ',author_id=' || COALESCE(CAST(NEW.author_id AS TEXT), '')); END;
CREATE TRIGGER larder_capture_posts_update_id AFTER UPDATE OF id ON posts FOR EACH ROW WHEN NEW.id <> OLD.id BEGIN INSERT INTO larder_changes (table_name, row_id, op, key_values) VALUES ('posts', NEW.id, 'U', 'author_id=' || COALESCE(CAST(OLD.author_id AS TEXT), '') || ',author_id=' || COALESCE(CAST(NEW.author_id AS TEXT), '')); END;
CREATE TRIGGER larder_capture_posts_delete AFTER DELETE ON posts FOR EACH ROW BEGIN INSERT INTO larder_changes (table_name, row_id, op, key_values) VALUES ('posts', OLD.id, 'D', 'author_id=' || COALESCE(CAST(OLD.author_id AS TEXT), '')); END;
