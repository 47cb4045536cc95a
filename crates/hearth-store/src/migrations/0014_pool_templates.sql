-- A pool may be filled from a template snapshot (docs/pools.md): its VMs
-- are restored from it instead of booted cold. NULL: cold boots.
ALTER TABLE pools ADD COLUMN template TEXT;
