-- hearth's first schema. Times are INTEGER milliseconds since the Unix
-- epoch; states, failure codes, backends and job kinds are their API words
-- (`ready`, `boot_timeout`, `qemu`, `destroy`), checked by the code that
-- reads them, so that adding a word never needs a table rebuild.
-- STRICT: SQLite refuses a value of the wrong type instead of storing it.

CREATE TABLE vms (
    id              TEXT    NOT NULL PRIMARY KEY,
    tenant          TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    failure_code    TEXT,
    failure_message TEXT,
    held            INTEGER NOT NULL DEFAULT 0 CHECK (held IN (0, 1)),
    image           TEXT    NOT NULL,
    backend         TEXT    NOT NULL,
    vcpus           INTEGER NOT NULL,
    memory_mib      INTEGER NOT NULL,
    -- A JSON array of strings: the guest's command line, word by word.
    command         TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    ready_at        INTEGER,
    ready_deadline  INTEGER NOT NULL,
    cleanup_after   INTEGER,
    -- The hypervisor process: its pid and start time (clock ticks since
    -- boot), so that a reused pid is not taken for it.
    pid             INTEGER,
    pid_start_ticks INTEGER,
    CHECK ((failure_code IS NULL) = (failure_message IS NULL)),
    CHECK ((pid IS NULL) = (pid_start_ticks IS NULL))
) STRICT;

CREATE INDEX vms_by_tenant ON vms (tenant, created_at, id);
CREATE INDEX vms_by_state ON vms (state, created_at, id);

CREATE TABLE vm_events (
    seq     INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    vm_id   TEXT    NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    at      INTEGER NOT NULL,
    -- The VM's state after the event.
    state   TEXT    NOT NULL,
    message TEXT    NOT NULL
) STRICT;

CREATE INDEX vm_events_by_vm ON vm_events (vm_id, seq);

CREATE TABLE tokens (
    id            TEXT    NOT NULL PRIMARY KEY,
    -- Hex SHA-256 of the secret; the secret itself is never stored.
    secret_sha256 TEXT    NOT NULL UNIQUE,
    tenant        TEXT    NOT NULL,
    admin         INTEGER NOT NULL CHECK (admin IN (0, 1)),
    created_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE jobs (
    id          INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    kind        TEXT    NOT NULL,
    vm_id       TEXT    NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    due         INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    lease_owner TEXT,
    lease_until INTEGER,
    done        INTEGER NOT NULL DEFAULT 0 CHECK (done IN (0, 1))
) STRICT;

-- What a worker scans for: pending jobs by due time.
CREATE INDEX jobs_due ON jobs (done, due);
CREATE INDEX jobs_by_vm ON jobs (vm_id);
-- At most one pending job of a kind per VM: enqueueing is idempotent.
CREATE UNIQUE INDEX jobs_one_pending ON jobs (kind, vm_id) WHERE done = 0;

-- Not tied to `vms` by a foreign key: an archive is a directory on disk,
-- and stays listable (so that it can be pruned) whatever becomes of the row.
CREATE TABLE archives (
    vm_id      TEXT    NOT NULL PRIMARY KEY,
    tenant     TEXT    NOT NULL,
    path       TEXT    NOT NULL,
    bytes      INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX archives_by_age ON archives (created_at, vm_id);
