-- Every rotation now keeps the replaced token's hash here (one row per refresh, for
-- REFRESH_TOKEN_TTL), so the table is no longer small: revoking a user's sessions deletes
-- their rows by user, which needs an index on it (the session index alone left a scan of
-- the whole table for "revoke all").
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id, session_id);
