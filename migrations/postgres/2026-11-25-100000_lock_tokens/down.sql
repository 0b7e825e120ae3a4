DROP TABLE larder_lock_tokens;
