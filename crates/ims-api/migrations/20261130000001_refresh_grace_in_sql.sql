-- A token rotated through SQL (Redis away, or its Redis key gone) keeps the answer its
-- rotation gave, sealed with a key derived from the token itself (stored nowhere), until
-- REFRESH_REUSE_GRACE has passed: a second tab presenting it again gets the same pair, as it
-- does through Redis (docs/auth.md, "Two tabs").
ALTER TABLE refresh_tokens ADD COLUMN successor TEXT;
ALTER TABLE refresh_tokens ADD COLUMN successor_until TEXT;
