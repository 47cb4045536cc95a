-- Warm pools (docs/pools.md): per image, how many VMs to keep booted and
-- waiting for a configuration, and the VMs doing so. A pooled VM's row in
-- `vms` belongs to the reserved tenant `_pool` until a create takes it;
-- taking it deletes its row here and gives the VM its tenant in the same
-- transaction, so two creates never get the same VM.
CREATE TABLE pools (
    image          TEXT    NOT NULL PRIMARY KEY,
    size           INTEGER NOT NULL CHECK (size >= 0),
    max            INTEGER NOT NULL CHECK (max >= 1),
    ttl_secs       INTEGER NOT NULL CHECK (ttl_secs >= 1),
    refill_per_min INTEGER NOT NULL CHECK (refill_per_min >= 1),
    updated_at     INTEGER NOT NULL
) STRICT;

CREATE TABLE pool_vms (
    vm_id      TEXT    NOT NULL PRIMARY KEY REFERENCES vms (id),
    image      TEXT    NOT NULL,
    -- What the VM was booted from (image, kernel, hypervisor): a pooled VM
    -- whose assets changed since is replaced, never handed out.
    assets     TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX pool_vms_by_image ON pool_vms (image, created_at);
