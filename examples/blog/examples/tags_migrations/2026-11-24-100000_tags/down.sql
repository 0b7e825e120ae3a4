DROP TRIGGER IF EXISTS larder_capture_tags_insert;
DROP TRIGGER IF EXISTS larder_capture_tags_update;
DROP TRIGGER IF EXISTS larder_capture_tags_update_id;
DROP TRIGGER IF EXISTS larder_capture_tags_delete;
DROP TABLE tags;
