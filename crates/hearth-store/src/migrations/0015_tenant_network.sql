-- A tenant's network policy (docs/networking.md), set by an admin: the
-- API's JSON (`NetworkPolicy`), merged into each of the tenant's VMs'
-- policies at their create.
CREATE TABLE tenant_network_policies (
    tenant     TEXT    NOT NULL PRIMARY KEY,
    policy     TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
