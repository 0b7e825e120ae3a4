DROP TABLE IF EXISTS larder_changes;
