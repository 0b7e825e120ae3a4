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
DROP TRIGGER IF EXISTS larder_capture_posts_cascade;
DROP TRIGGER IF EXISTS larder_capture_users_cascade;
CREATE TRIGGER larder_capture_comments_insert AFTER INSERT ON comments FOR EACH ROW INSERT INTO larder_changes (table_name, row_id, op, key_values) VALUES ('comments', NEW.id, 'I', CONCAT('post_id=', COALESCE(CAST(NEW.post_id AS CHAR), '')));
CREATE TRIGGER larder_capture_comments_update AFTER UPDATE ON comments FOR EACH ROW INSERT INTO larder_changes (table_name, row_id, op, key_values) VALUES ('comments', OLD.id, 'U', CONCAT('post_id=', COALESCE(CAST(OLD.post_id AS CHAR), ''), ',post_id=', COALESCE(CAST(NEW.post_id AS CHAR), '')));
CREATE TRIGGER larder_capture_comments_update_id AFTER UPDATE ON comments FOR EACH ROW INSERT INTO larder_changes (table_name, row_id, op, key_values) SELECT 'comments', NEW.id, 'U', CONCAT('post_id=', COALESCE(CAST(OLD.post_id AS CHAR), ''), ',post_id=', COALESCE(CAST(NEW.post_id AS CHAR), '')) FROM (SELECT 1) AS one WHERE NEW.id <> OLD.id;
CREATE TRIGGER larder_capture_comments_delete AFTER DELETE ON comments FOR EACH ROW INSERT INTO larder_changes (table_name, row_id, op, key_values) VALUES ('comments', OLD.id, 'D', CONCAT('post_id=', COALESCE(CAST(OLD.post_id AS CHAR), '')));
CREATE TRIGGER larder_capture_posts_insert AFTER INSERT ON posts FOR EACH ROW INSERT INTO larder_changes (table_name, row_id, op, key_values) VALUES ('posts', NEW.id, 'I', CONCAT('author_id=', COALESCE(CAST(NEW.author_id AS CHAR), '')));
CREATE TRIGGER larder_capture_posts_update AFTER UPDATE ON posts FOR EACH ROW INSERT INTO larder_changes (table_name, row_id, op, key_values) VALUES ('posts', OLD.id, 'U', CONCAT('author_id=', COALESCE(CAST(OLD.author_id AS CHAR), ''), ',author_id=', COALESCE(CAST(NEW.author_id AS CHAR), '')));
CREATE TRIGGER larder_capture_posts_update_id AFTER UPDATE ON posts FOR EACH ROW INSERT INTO larder_changes (table_name, row_id, op, key_values) SELECT 'posts', NEW.id, 'U', CONCAT('author_id=', COALESCE(CAST(OLD.author_id AS CHAR), ''), ',author_id=', COALESCE(CAST(NEW.author_id AS CHAR), '')) FROM (SELECT 1) AS one WHERE NEW.id <> OLD.id;
CREATE TRIGGER larder_capture_posts_delete AFTER DELETE ON posts FOR EACH ROW INSERT INTO larder_changes (table_name, row_id, op, key_values) VALUES ('posts', OLD.id, 'D', CONCAT('author_id=', COALESCE(CAST(OLD.author_id AS CHAR), '')));
-- MySQL fires no trigger for rows an ON DELETE CASCADE foreign key removes, so
-- deleting a user or a post records the rows its delete is about to cascade to
-- (BEFORE DELETE: they still exist; if the delete fails, so do these inserts),
-- now with their key values, so that only their own lists are retired.
CREATE TRIGGER larder_capture_users_cascade BEFORE DELETE ON users FOR EACH ROW
    INSERT INTO larder_changes (table_name, row_id, op, key_values)
    SELECT 'posts', id, 'D', CONCAT('author_id=', COALESCE(CAST(author_id AS CHAR), ''))
    FROM posts WHERE author_id = OLD.id
    UNION ALL
    SELECT 'comments', id, 'D', CONCAT('post_id=', COALESCE(CAST(post_id AS CHAR), '')) FROM comments
    WHERE author_id = OLD.id OR post_id IN (SELECT id FROM posts WHERE author_id = OLD.id);
CREATE TRIGGER larder_capture_posts_cascade BEFORE DELETE ON posts FOR EACH ROW
    INSERT INTO larder_changes (table_name, row_id, op, key_values)
    SELECT 'comments', id, 'D', CONCAT('post_id=', COALESCE(CAST(post_id AS CHAR), ''))
    FROM comments WHERE post_id = OLD.id;
