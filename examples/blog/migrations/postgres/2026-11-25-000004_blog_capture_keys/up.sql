-- The capture of posts and comments again, now reporting their key columns
-- (what larder::capture_sql_with_keys writes, `larder migrate generate NAME
-- --capture comments:post_id --capture posts:author_id`): other processes then
-- retire only the cached lists of the post (or author) a change touched, not
-- every list of the table.
DROP TRIGGER IF EXISTS larder_capture_posts_truncate ON posts;
DROP TRIGGER IF EXISTS larder_capture_posts ON posts;
DROP FUNCTION IF EXISTS larder_capture_posts();
DROP TRIGGER IF EXISTS larder_capture_comments_truncate ON comments;
DROP TRIGGER IF EXISTS larder_capture_comments ON comments;
DROP FUNCTION IF EXISTS larder_capture_comments();
CREATE FUNCTION larder_capture_comments() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('larder_changes', 'comments I ' || NEW.id || ' ' || 'post_id=' || COALESCE(CAST(NEW.post_id AS TEXT), ''));
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM pg_notify('larder_changes', 'comments U ' || OLD.id || ' ' || 'post_id=' || COALESCE(CAST(OLD.post_id AS TEXT), '') || ',post_id=' || COALESCE(CAST(NEW.post_id AS TEXT), ''));
        IF NEW.id <> OLD.id THEN
            PERFORM pg_notify('larder_changes', 'comments U ' || NEW.id || ' ' || 'post_id=' || COALESCE(CAST(OLD.post_id AS TEXT), '') || ',post_id=' || COALESCE(CAST(NEW.post_id AS TEXT), ''));
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('larder_changes', 'comments D ' || OLD.id || ' ' || 'post_id=' || COALESCE(CAST(OLD.post_id AS TEXT), ''));
    ELSE
        PERFORM pg_notify('larder_changes', 'comments T 0');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER larder_capture_comments AFTER INSERT OR UPDATE OR DELETE ON comments
    FOR EACH ROW EXECUTE FUNCTION larder_capture_comments();
CREATE TRIGGER larder_capture_comments_truncate AFTER TRUNCATE ON comments
    FOR EACH STATEMENT EXECUTE FUNCTION larder_capture_comments();
ALTER TABLE comments ENABLE ALWAYS TRIGGER larder_capture_comments;
ALTER TABLE comments ENABLE ALWAYS TRIGGER larder_capture_comments_truncate;
CREATE FUNCTION larder_capture_posts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('larder_changes', 'posts I ' || NEW.id || ' ' || 'author_id=' || COALESCE(CAST(NEW.author_id AS TEXT), ''));
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM pg_notify('larder_changes', 'posts U ' || OLD.id || ' ' || 'author_id=' || COALESCE(CAST(OLD.author_id AS TEXT), '') || ',author_id=' || COALESCE(CAST(NEW.author_id AS TEXT), ''));
        IF NEW.id <> OLD.id THEN
            PERFORM pg_notify('larder_changes', 'posts U ' || NEW.id || ' ' || 'author_id=' || COALESCE(CAST(OLD.author_id AS TEXT), '') || ',author_id=' || COALESCE(CAST(NEW.author_id AS TEXT), ''));
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('larder_changes', 'posts D ' || OLD.id || ' ' || 'author_id=' || COALESCE(CAST(OLD.author_id AS TEXT), ''));
    ELSE
        PERFORM pg_notify('larder_changes', 'posts T 0');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER larder_capture_posts AFTER INSERT OR UPDATE OR DELETE ON posts
    FOR EACH ROW EXECUTE FUNCTION larder_capture_posts();
CREATE TRIGGER larder_capture_posts_truncate AFTER TRUNCATE ON posts
    FOR EACH STATEMENT EXECUTE FUNCTION larder_capture_posts();
ALTER TABLE posts ENABLE ALWAYS TRIGGER larder_capture_posts;
ALTER TABLE posts ENABLE ALWAYS TRIGGER larder_capture_posts_truncate;
