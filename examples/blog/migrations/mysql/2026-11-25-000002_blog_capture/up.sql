-- Change capture on the blog's tables: what larder::capture_sql writes for
-- each, feeding larder's change log (larder's own migration creates it).
CREATE TRIGGER larder_capture_users_insert AFTER INSERT ON `users` FOR EACH ROW INSERT INTO larder_changes (table_name, row_id, op) VALUES ('users', NEW.id, 'I');
CREATE TRIGGER larder_capture_users_update AFTER UPDATE ON `users` FOR EACH ROW INSERT INTO larder_changes (table_name, row_id, op) VALUES ('users', OLD.id, 'U');
CREATE TRIGGER larder_capture_users_update_id AFTER UPDATE ON `users` FOR EACH ROW INSERT INTO larder_changes (table_name, row_id, op) SELECT 'users', NEW.id, 'U' FROM (SELECT 1) AS one WHERE NEW.id <> OLD.id;
CREATE TRIGGER larder_capture_users_delete AFTER DELETE ON `users` FOR EACH ROW INSERT INTO larder_changes (table_name, row_id, op) VALUES ('users', OLD.id, 'D');
CREATE TRIGGER larder_capture_posts_insert AFTER INSERT ON `posts` FOR EACH ROW INSERT INTO larder_changes (table_name, row_id, op) VALUES ('posts', NEW.id, 'I');
CREATE TRIGGER larder_capture_posts_update AFTER UPDATE ON `posts` FOR EACH ROW INSERT INTO larder_changes (table_name, row_id, op) VALUES ('posts', OLD.id, 'U');
CREATE TRIGGER larder_capture_posts_update_id AFTER UPDATE ON `posts` FOR EACH ROW INSERT INTO larder_changes (table_name, row_id, op) SELECT 'posts', NEW.id, 'U' FROM (SELECT 1) AS one WHERE NEW.id <> OLD.id;
CREATE TRIGGER larder_capture_posts_delete AFTER DELETE ON `posts` FOR EACH ROW INSERT INTO larder_changes (table_name, row_id, op) VALUES ('posts', OLD.id, 'D');
CREATE TRIGGER larder_capture_comments_insert AFTER INSERT ON `comments` FOR EACH ROW INSERT INTO larder_changes (table_name, row_id, op) VALUES ('comments', NEW.id, 'I');
CREATE TRIGGER larder_capture_comments_update AFTER UPDATE ON `comments` FOR EACH ROW INSERT INTO larder_changes (table_name, row_id, op) VALUES ('comments', OLD.id, 'U');
CREATE TRIGGER larder_capture_comments_update_id AFTER UPDATE ON `comments` FOR EACH ROW INSERT INTO larder_changes (table_name, row_id, op) SELECT 'comments', NEW.id, 'U' FROM (SELECT 1) AS one WHERE NEW.id <> OLD.id;
CREATE TRIGGER larder_capture_comments_delete AFTER DELETE ON `comments` FOR EACH ROW INSERT INTO larder_changes (table_name, row_id, op) VALUES ('comments', OLD.id, 'D');

-- MySQL fires no trigger for rows an ON DELETE CASCADE foreign key removes, so
-- deleting a user or a post records the rows its delete is about to cascade to
-- (BEFORE DELETE: they still exist; if the delete fails, so do these inserts).
CREATE TRIGGER larder_capture_users_cascade BEFORE DELETE ON users FOR EACH ROW
    INSERT INTO larder_changes (table_name, row_id, op)
    SELECT 'posts', id, 'D' FROM posts WHERE author_id = OLD.id
    UNION ALL
    SELECT 'comments', id, 'D' FROM comments
    WHERE author_id = OLD.id OR post_id IN (SELECT id FROM posts WHERE author_id = OLD.id);
CREATE TRIGGER larder_capture_posts_cascade BEFORE DELETE ON posts FOR EACH ROW
    INSERT INTO larder_changes (table_name, row_id, op)
    SELECT 'comments', id, 'D' FROM comments WHERE post_id = OLD.id;
