-- Viewer links: a URL that lets a person without an API token watch and
-- click one VM's screen, for a limited time. Like tokens, only the SHA-256
-- of the secret is kept. A revoked link keeps its row (revoked_at set), so
-- a listing can say what was revoked and when.
CREATE TABLE viewer_links (
    id            TEXT    NOT NULL PRIMARY KEY,
    secret_sha256 TEXT    NOT NULL UNIQUE,
    vm_id         TEXT    NOT NULL REFERENCES vms (id),
    tenant        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER
) STRICT;

CREATE INDEX viewer_links_by_vm ON viewer_links (vm_id, created_at);
