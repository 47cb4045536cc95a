-- Tokens may expire, and remember when they were last used (written by the
-- server at most once a minute per token, not on every request). Revoking
-- a token deletes its row: nothing is left that could authenticate.
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;
