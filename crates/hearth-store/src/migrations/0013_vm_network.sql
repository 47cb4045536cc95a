-- A VM's NIC as asked for at create (docs/networking.md): its policy as
-- the API's JSON (`NetworkPolicy`), NULL for a VM without a NIC. Kept so
-- a persistent VM's network is made again with the same policy at every
-- boot.
ALTER TABLE vms ADD COLUMN network_policy TEXT;
