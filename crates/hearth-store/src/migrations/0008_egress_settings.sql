-- What a tenant's login sessions may reach besides their provider's
-- domains, and the upstream proxy they go through: per tenant (user_name
-- '') or per user (the old controller's per-user proxy). An upstream
-- proxy's password is not here: the vault seals it as the credential of
-- the pseudo-provider `egress-proxy`; `upstream_credentials` says there is
-- one.
CREATE TABLE egress_settings (
    tenant               TEXT    NOT NULL,
    user_name            TEXT    NOT NULL,
    -- JSON array of domain patterns.
    domains              TEXT    NOT NULL,
    upstream             TEXT,
    upstream_credentials INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    PRIMARY KEY (tenant, user_name)
) STRICT;
