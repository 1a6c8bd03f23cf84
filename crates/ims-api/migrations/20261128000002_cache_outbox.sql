-- The invalidation outbox (docs/caching.md, "No invalidation is lost"): every invalidating
-- write records what it invalidates before it runs; the writer marks the record done once
-- Redis has applied it, and any instance re-applies records that stay undone.
CREATE TABLE cache_outbox (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    cache_groups TEXT NOT NULL,
    created_at TEXT NOT NULL,
    applied_at TEXT,
    done_at TEXT
);
CREATE INDEX cache_outbox_pending_idx ON cache_outbox (created_at) WHERE done_at IS NULL;
CREATE INDEX cache_outbox_done_idx ON cache_outbox (done_at) WHERE done_at IS NOT NULL;
