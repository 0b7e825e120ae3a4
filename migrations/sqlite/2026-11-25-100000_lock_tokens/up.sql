-- Fencing tokens of named locks (Store::lock): one counter per lock key, the
-- FNV-1a hash of the lock's name, incremented on every acquisition.
CREATE TABLE larder_lock_tokens (
    lock_key BIGINT PRIMARY KEY NOT NULL,
    token BIGINT NOT NULL
);
