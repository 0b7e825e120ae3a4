-- The blog schema, as in migrations/sqlite. InnoDB for foreign keys and
-- transactions; utf8mb4 so any Unicode text round-trips; DATETIME(6) keeps
-- microseconds; LONGTEXT bodies hold more than TEXT's 64 KiB.
CREATE TABLE users (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name       TEXT NOT NULL,
    email      VARCHAR(320) NOT NULL,
    created_at DATETIME(6) NOT NULL,
    CONSTRAINT users_email_key UNIQUE (email)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE posts (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    author_id  BIGINT NOT NULL,
    title      TEXT NOT NULL,
    body       LONGTEXT NOT NULL,
    published  BOOLEAN NOT NULL DEFAULT FALSE,
    version    BIGINT NOT NULL DEFAULT 1,
    created_at DATETIME(6) NOT NULL,
    updated_at DATETIME(6) NOT NULL,
    CONSTRAINT posts_version_positive CHECK (version >= 1),
    CONSTRAINT posts_author_fk FOREIGN KEY (author_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE comments (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    post_id    BIGINT NOT NULL,
    author_id  BIGINT NOT NULL,
    body       LONGTEXT NOT NULL,
    created_at DATETIME(6) NOT NULL,
    CONSTRAINT comments_post_fk FOREIGN KEY (post_id) REFERENCES posts (id) ON DELETE CASCADE,
    CONSTRAINT comments_author_fk FOREIGN KEY (author_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
