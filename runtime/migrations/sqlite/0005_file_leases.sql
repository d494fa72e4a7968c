-- Factum on SQLite, version 5: runners hold their leases as locks on files beside the database
-- (released by the operating system when a runner's process dies, so another takes over at
-- once), not as rows waiting to expire.

DROP TABLE projection_leases;
