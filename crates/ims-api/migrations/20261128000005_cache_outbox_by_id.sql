-- The outbox poll finds old records by their ids, which start with the writer's clock in
-- microseconds (16 hex digits), on the primary key: the created_at index was a third
-- B-tree written by every invalidating write (on SQLite a page more in the WAL per commit).
-- Ids of the UUID form (a fallback path of an earlier release) are moved before every
-- time-ordered id, so that the next poll applies them.
DROP INDEX IF EXISTS cache_outbox_created_idx;
UPDATE cache_outbox SET id = '0000000000000000' || id WHERE id LIKE '%-%';
