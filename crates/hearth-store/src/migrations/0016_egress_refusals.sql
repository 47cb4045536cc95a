-- What a networked VM's resolver and web proxy refused (docs/networking.md),
-- kept so the counts survive a controller restart: the totals since the
-- VM's network was first served, written by the controller now and then
-- (never per query or connection).
CREATE TABLE vm_egress_refusals (
    vm_id               TEXT    NOT NULL PRIMARY KEY,
    refused_queries     INTEGER NOT NULL,
    refused_connections INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
) STRICT;
