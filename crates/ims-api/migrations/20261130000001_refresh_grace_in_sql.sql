-- The session row also remembers the token its last rotation replaced: its hash (a replay
-- of it is reuse, also where Redis' tombstone cannot be read) and, until
-- REFRESH_REUSE_GRACE has passed, the answer that rotation gave, sealed with a key derived
-- from the replaced token itself (stored nowhere), so that a second tab presenting it gets
-- the same pair with or without Redis (docs/auth.md, "Two tabs").
ALTER TABLE sessions ADD COLUMN replaced_token_hash TEXT;
ALTER TABLE sessions ADD COLUMN replaced_answer TEXT;
ALTER TABLE sessions ADD COLUMN replaced_until TEXT;
CREATE INDEX sessions_replaced_token_hash_idx ON sessions (replaced_token_hash);
-- The purge clears answers past their window (an old rotated token and a database dump
-- together would open one); only rows still holding an answer are in this index.
CREATE INDEX sessions_replaced_until_idx ON sessions (replaced_until)
    WHERE replaced_answer IS NOT NULL;
