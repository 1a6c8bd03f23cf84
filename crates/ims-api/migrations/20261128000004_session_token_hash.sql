-- The session knows the hash of its live refresh token, so a token whose Redis key was
-- evicted (a Redis under maxmemory with an evicting policy) still refreshes: Redis stays
-- the fast path, SQL the durable record (docs/auth.md, "Eviction").
ALTER TABLE sessions ADD COLUMN token_hash TEXT;
CREATE INDEX sessions_token_hash_idx ON sessions (token_hash);
