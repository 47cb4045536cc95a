-- What the guest agent tells the host, kept as long as the VM's row (so it
-- is readable after the VM is destroyed, like its events).

-- The configuration the host sends the agent after each handshake (JSON,
-- a `GuestConfig`), and the latest hello's facts.
CREATE TABLE vm_agents (
    vm_id           TEXT    NOT NULL PRIMARY KEY REFERENCES vms (id) ON DELETE CASCADE,
    config          TEXT    NOT NULL DEFAULT '{}',
    instance        TEXT,
    agent_version   TEXT,
    boot_id         TEXT,
    connected_at    INTEGER,
    -- Set when the channel dropped; cleared by the next hello.
    disconnected_at INTEGER,
    last_heartbeat  INTEGER
) STRICT;

-- Per agent process (`instance`): the highest record seq stored, which the
-- host sends back as `acked` in its welcome.
CREATE TABLE agent_instances (
    vm_id    TEXT    NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    instance TEXT    NOT NULL,
    acked    INTEGER NOT NULL,
    PRIMARY KEY (vm_id, instance)
) STRICT;

-- Every record but log lines: service lifecycles, readiness, configuration
-- and boot reports. `body` is the record as the agent sent it (JSON);
-- `at` is host time (hello's wall time - hello's uptime + the record's).
CREATE TABLE agent_records (
    id       INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    vm_id    TEXT    NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    instance TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    service  TEXT,
    body     TEXT    NOT NULL,
    UNIQUE (vm_id, instance, seq)
) STRICT;

CREATE INDEX agent_records_by_kind ON agent_records (vm_id, kind, id);

-- One line of a service's output. Capped per service (oldest dropped).
CREATE TABLE service_logs (
    id       INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    vm_id    TEXT    NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    instance TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    service  TEXT    NOT NULL,
    at       INTEGER NOT NULL,
    stream   TEXT    NOT NULL,
    line     TEXT    NOT NULL,
    UNIQUE (vm_id, instance, seq)
) STRICT;

CREATE INDEX service_logs_by_service ON service_logs (vm_id, service, id);
