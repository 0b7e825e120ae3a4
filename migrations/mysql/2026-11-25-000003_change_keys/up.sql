-- The key values a change touched ("post_id=7,post_id=8": the row's key
-- columns before and after), written by triggers from
-- larder::capture_sql_with_keys, so that other processes retire only the
-- cached lists of those values. NULL from triggers that capture no keys:
-- such a change retires every keyed list of its table.
ALTER TABLE larder_changes ADD COLUMN key_values TEXT NULL;
