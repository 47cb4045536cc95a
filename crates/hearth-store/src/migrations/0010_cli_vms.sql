-- Each user's CLI VM (docs/cli-vms.md): one per tenant and user, the VM
-- it is now, and per provider the credential version its files were last
-- brought to (injected at boot, pushed from a login, or sealed from a
-- refresh inside it). A refresh is sealed only over that version, so a
-- stale one loses instead of overwriting a newer login.
CREATE TABLE cli_vms (
    tenant     TEXT    NOT NULL,
    user_name  TEXT    NOT NULL,
    vm_id      TEXT    NOT NULL,
    image      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    -- JSON object: provider -> credential version.
    bases      TEXT    NOT NULL,
    PRIMARY KEY (tenant, user_name)
) STRICT;
