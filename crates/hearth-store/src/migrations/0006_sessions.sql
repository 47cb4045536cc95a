-- Login sessions: a user of a tenant logs in to an AI CLI tool in a
-- browser VM; the captured credential goes to the `credentials` table (by
-- the vault). No column holds a secret: the login output kept here is what
-- the login command printed to its terminal (a URL, a code to paste).
CREATE TABLE sessions (
    id                 TEXT    NOT NULL PRIMARY KEY,
    tenant             TEXT    NOT NULL,
    user_name          TEXT    NOT NULL,
    provider           TEXT    NOT NULL,
    state              TEXT    NOT NULL,
    vm_id              TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL,
    message            TEXT,
    -- The failed VM's diagnosis (JSON), when there is one.
    diagnosis          TEXT,
    credential_version INTEGER
) STRICT;

-- At most one live session per tenant, user and provider: a second start
-- breaks this index and is refused.
CREATE UNIQUE INDEX sessions_one_live ON sessions (tenant, user_name, provider)
    WHERE state IN ('starting', 'waiting_for_user', 'captured');
CREATE INDEX sessions_by_tenant ON sessions (tenant, created_at);

CREATE TABLE session_events (
    session_id TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    state      TEXT    NOT NULL,
    message    TEXT    NOT NULL,
    PRIMARY KEY (session_id, seq)
) STRICT;

-- What a session's VM reached through the egress proxy: host, port,
-- outcome and bytes; never a path, a header or a byte of the contents.
CREATE TABLE egress_connections (
    session_id TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    kind       TEXT,
    host       TEXT,
    port       INTEGER,
    outcome    TEXT    NOT NULL,
    reason     TEXT,
    bytes_up   INTEGER NOT NULL,
    bytes_down INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
) STRICT;
