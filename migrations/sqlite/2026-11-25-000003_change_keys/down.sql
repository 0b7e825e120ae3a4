ALTER TABLE larder_changes DROP COLUMN key_values;
