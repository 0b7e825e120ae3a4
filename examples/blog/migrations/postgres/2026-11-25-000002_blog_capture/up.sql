-- Change capture, for cross-process cache coherence: each committed insert,
-- update and delete of a cached table sends a notification on the channel
-- larder_changes ("table op id"). PostgreSQL delivers notifications only when
-- the transaction commits, so a rollback sends nothing. Rows removed by ON
-- DELETE CASCADE fire their own table's trigger. No sequence is touched, so
-- lastval() after an insert still names the inserted row.
-- The triggers are what larder::capture_sql writes for each table.
SELECT "users"."id" FROM "users" WHERE 1 = 0;
CREATE FUNCTION larder_capture_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('larder_changes', 'users I ' || NEW.id);
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM pg_notify('larder_changes', 'users U ' || OLD.id);
        IF NEW.id <> OLD.id THEN
            PERFORM pg_notify('larder_changes', 'users U ' || NEW.id);
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('larder_changes', 'users D ' || OLD.id);
    ELSE
        PERFORM pg_notify('larder_changes', 'users T 0');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER larder_capture_users AFTER INSERT OR UPDATE OR DELETE ON "users"
    FOR EACH ROW EXECUTE FUNCTION larder_capture_users();
CREATE TRIGGER larder_capture_users_truncate AFTER TRUNCATE ON "users"
    FOR EACH STATEMENT EXECUTE FUNCTION larder_capture_users();
ALTER TABLE "users" ENABLE ALWAYS TRIGGER larder_capture_users;
ALTER TABLE "users" ENABLE ALWAYS TRIGGER larder_capture_users_truncate;
SELECT "posts"."id" FROM "posts" WHERE 1 = 0;
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
CREATE TRIGGER larder_capture_posts AFTER INSERT OR UPDATE OR DELETE ON "posts"
    FOR EACH ROW EXECUTE FUNCTION larder_capture_posts();
CREATE TRIGGER larder_capture_posts_truncate AFTER TRUNCATE ON "posts"
    FOR EACH STATEMENT EXECUTE FUNCTION larder_capture_posts();
ALTER TABLE "posts" ENABLE ALWAYS TRIGGER larder_capture_posts;
ALTER TABLE "posts" ENABLE ALWAYS TRIGGER larder_capture_posts_truncate;
SELECT "comments"."id" FROM "comments" WHERE 1 = 0;
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
CREATE TRIGGER larder_capture_comments AFTER INSERT OR UPDATE OR DELETE ON "comments"
    FOR EACH ROW EXECUTE FUNCTION larder_capture_comments();
CREATE TRIGGER larder_capture_comments_truncate AFTER TRUNCATE ON "comments"
    FOR EACH STATEMENT EXECUTE FUNCTION larder_capture_comments();
ALTER TABLE "comments" ENABLE ALWAYS TRIGGER larder_capture_comments;
ALTER TABLE "comments" ENABLE ALWAYS TRIGGER larder_capture_comments_truncate;
