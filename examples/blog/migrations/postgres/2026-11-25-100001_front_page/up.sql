-- The rendered front page, rebuilt under the named lock "front-page" by one
-- process at a time. `token` is the fencing token of the rebuild that wrote
-- it: a write carrying a smaller one (a holder that lost its lock while
-- paused) is refused. One row, seeded so every write is an UPDATE.
CREATE TABLE front_page (
    id BIGINT PRIMARY KEY NOT NULL,
    html TEXT NOT NULL,
    token BIGINT NOT NULL
);
INSERT INTO front_page (id, html, token) VALUES (1, '', 0);
