-- Network address slots (hearth-net): slot N names a VM's network
-- namespace, its host link and its transit addresses. A slot is claimed
-- before anything is made in the kernel, so every hearth-named kernel object
-- has a row here while it exists; released slots keep their row (vm_id NULL,
-- released_at set) and are claimed again only after a grace period, so a
-- late packet or a slow teardown of the old VM never meets the new one.
CREATE TABLE net_slots (
    slot        INTEGER NOT NULL PRIMARY KEY CHECK (slot >= 0),
    -- The VM holding it; NULL once released. One slot per VM.
    vm_id       TEXT    UNIQUE,
    claimed_at  INTEGER NOT NULL,
    released_at INTEGER,
    CHECK ((vm_id IS NULL) = (released_at IS NOT NULL))
) STRICT;
