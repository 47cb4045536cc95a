-- Snapshots of VMs (docs/snapshots.md): one row per snapshot, its files in
-- `snapshots/<name>/` of the data directory; `manifest` is the JSON of
-- what a restore must match. `state` is `creating` until the files are
-- complete, then `ready`.
CREATE TABLE snapshots (
    name       TEXT    NOT NULL PRIMARY KEY,
    tenant     TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    manifest   TEXT,
    created_at INTEGER NOT NULL
) STRICT;

-- The VMs made from snapshots, and the template VMs booted to make one:
-- a restored VM's link greets its agent as restored, a template's sends
-- no configuration.
CREATE TABLE snapshot_vms (
    vm_id    TEXT NOT NULL PRIMARY KEY,
    snapshot TEXT NOT NULL,
    role     TEXT NOT NULL
) STRICT;
CREATE INDEX snapshot_vms_by_snapshot ON snapshot_vms (snapshot);
