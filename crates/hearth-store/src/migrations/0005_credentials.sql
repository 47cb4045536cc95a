-- Credentials: an AI CLI tool's login files for one (tenant, user,
-- provider), sealed by hearth-vault. The four BLOBs are the envelope
-- (wrapped data key and its nonce, the files' nonce and ciphertext); every
-- other column is metadata that is not secret (file paths, modes and sizes
-- are listed by the API, contents never). Each capture or refresh is a new
-- version; the highest is the current one, and the insert keeps the
-- previous one and deletes older ones in the same transaction.
CREATE TABLE credentials (
    tenant      TEXT    NOT NULL,
    user_name   TEXT    NOT NULL,
    provider    TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    file_count  INTEGER NOT NULL,
    -- JSON array of {"path", "mode", "size"}.
    files       TEXT    NOT NULL,
    kek_version INTEGER NOT NULL,
    wrapped_key BLOB    NOT NULL,
    key_nonce   BLOB    NOT NULL,
    nonce       BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    PRIMARY KEY (tenant, user_name, provider, version)
) STRICT;

-- Counting and rewrapping by key-encryption key version.
CREATE INDEX credentials_by_kek ON credentials (kek_version);
