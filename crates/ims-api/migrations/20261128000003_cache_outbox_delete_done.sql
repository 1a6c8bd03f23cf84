-- The outbox deletes a record once it has been applied, instead of marking it done and
-- pruning it later: one index update per record instead of three, and a table that holds
-- only the records still to apply. Records are recorded inside their write's transaction,
-- so a visible record is always one to apply once; the per-record state columns go.
DROP INDEX IF EXISTS cache_outbox_done_idx;
DROP INDEX IF EXISTS cache_outbox_pending_idx;
ALTER TABLE cache_outbox DROP COLUMN applied_at;
ALTER TABLE cache_outbox DROP COLUMN done_at;
CREATE INDEX cache_outbox_created_idx ON cache_outbox (created_at);
