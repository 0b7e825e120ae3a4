DROP TRIGGER IF EXISTS larder_capture_users_truncate ON users;
DROP TRIGGER IF EXISTS larder_capture_users ON users;
DROP FUNCTION IF EXISTS larder_capture_users();
DROP TRIGGER IF EXISTS larder_capture_posts_truncate ON posts;
DROP TRIGGER IF EXISTS larder_capture_posts ON posts;
DROP FUNCTION IF EXISTS larder_capture_posts();
DROP TRIGGER IF EXISTS larder_capture_comments_truncate ON comments;
DROP TRIGGER IF EXISTS larder_capture_comments ON comments;
DROP FUNCTION IF EXISTS larder_capture_comments();
