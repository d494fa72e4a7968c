-- Least privilege for a Factum schema on PostgreSQL: what the application's role may do, run by
-- the schema's owner after `migrate()` (`PostgresStore::application_grants` fills in {schema} and
-- {role}; `factum` refuses names that need quoting).
--
-- The owner runs the migrations; the application connects as {role}, which owns nothing, so it
-- cannot ALTER the tables, DISABLE the append-only trigger, or DROP anything. Its `migrate()` at
-- start only checks that the schema is up to date (it needs no DDL then).
GRANT USAGE ON SCHEMA {schema} TO {role};

-- The log: appended and read, never changed. No UPDATE, DELETE or TRUNCATE; the trigger refuses
-- them even for the owner.
GRANT SELECT, INSERT ON {schema}.events TO {role};

-- What the runtime reads to check the schema and the cluster it runs on.
GRANT SELECT ON {schema}.factum_migrations, {schema}.cluster_identity TO {role};
GRANT EXECUTE ON FUNCTION {schema}.feed_tx_offset() TO {role};

-- The cold tier's index (`factum::archive`): read to find archived events. Archiving and
-- restoring (which remove and put back rows of the log) are the owner's.
GRANT SELECT ON {schema}.archives, {schema}.archived_ranges TO {role};

-- Data subjects' keys: made on a subject's first event with personal data, deleted when the
-- subject is forgotten. A saga that handled a subject's data in plain locks its key `FOR SHARE`
-- until its transaction ends (so that forgetting waits, then erases what the saga wrote), which
-- PostgreSQL allows only with an UPDATE privilege: on one column no code changes.
GRANT SELECT, INSERT, DELETE ON {schema}.data_keys TO {role};
GRANT UPDATE (created_at) ON {schema}.data_keys TO {role};

-- Snapshots and the runners' bookkeeping, which they update as they go.
GRANT SELECT, INSERT, UPDATE, DELETE ON
    {schema}.snapshots,
    {schema}.projection_checkpoints,
    {schema}.projection_dead_letters,
    {schema}.projection_versions,
    {schema}.projection_side_effects,
    {schema}.projection_inline_streams,
    {schema}.sagas,
    {schema}.saga_outbox,
    {schema}.saga_timeouts,
    {schema}.saga_data_keys,
    {schema}.relay_checkpoints,
    {schema}.relay_dead_letters,
    {schema}.consumer_streams,
    {schema}.consumer_positions
TO {role};
