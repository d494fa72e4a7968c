-- Factum relays, version 13: an operator asks a relay to publish a parked stream again
-- (`factum relay retry`, `factum::relay::retry`) or to skip its refused event (`factum relay
-- skip`): the stream's dead letters are marked, and the relay holding the lease publishes them,
-- in stream order, before the stream flows again.
ALTER TABLE {schema}.relay_dead_letters
    ADD COLUMN retry_requested boolean NOT NULL DEFAULT false;
