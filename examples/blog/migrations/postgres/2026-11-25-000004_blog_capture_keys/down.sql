-- Back to the capture without key values.
DROP TRIGGER IF EXISTS larder_capture_posts_truncate ON posts;
DROP TRIGGER IF EXISTS larder_capture_posts ON posts;
DROP FUNCTION IF EXISTS larder_capture_posts();
DROP TRIGGER IF EXISTS larder_capture_comments_truncate ON comments;
DROP TRIGGER IF EXISTS larder_capture_comments ON comments;
DROP FUNCTION IF EXISTS larder_capture_comments();
CREATE FUNCTION larder_capture_posts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('larder_changes', 'posts I ' || NEW.id);
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM pg_notify('larder_changes', 'posts U ' || OLD.id);
        IF NEW.id <> OLD.id THEN
            PERFORM pg_notify('larder_changes', 'posts U ' || NEW.id);
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('larder_changes', 'posts D ' || OLD.id);
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
CREATE FUNCTION larder_capture_comments() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('larder_changes', 'comments I ' || NEW.id);
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM pg_notify('larder_changes', 'comments U ' || OLD.id);
        IF NEW.id <> OLD.id THEN
            PERFORM pg_notify('larder_changes', 'comments U ' || NEW.id);
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('larder_changes', 'comments D ' || OLD.id);
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
