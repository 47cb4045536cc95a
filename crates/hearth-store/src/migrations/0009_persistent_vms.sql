-- Persistent VMs (docs/architecture.md, "Persistent VMs"): a VM that keeps
-- its own writable disk across stop and start. The restart policy is its
-- API word (`never`, `on-failure`, `always`), checked by the code that
-- reads it. `readiness_secs` is the boot deadline every start gets again;
-- `restarts` counts restarts since the last healthy run (the backoff's
-- exponent); `restart_at` is when the reconciler starts it again (NULL:
-- no restart planned).
ALTER TABLE vms ADD COLUMN persistent INTEGER NOT NULL DEFAULT 0 CHECK (persistent IN (0, 1));
ALTER TABLE vms ADD COLUMN disk_mib INTEGER;
ALTER TABLE vms ADD COLUMN restart_policy TEXT NOT NULL DEFAULT 'never';
ALTER TABLE vms ADD COLUMN idle_stop_secs INTEGER;
ALTER TABLE vms ADD COLUMN readiness_secs INTEGER;
ALTER TABLE vms ADD COLUMN restarts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE vms ADD COLUMN restart_at INTEGER;

-- What the restart reconciler scans for.
CREATE INDEX vms_restart_due ON vms (restart_at) WHERE restart_at IS NOT NULL;
