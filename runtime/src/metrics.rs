//! Metrics: what the stores, repositories and runners measure, recorded through the
//! [`metrics`](https://docs.rs/metrics) facade, so that the application chooses where they go
//! (a Prometheus scrape endpoint with `metrics-exporter-prometheus`, OTLP with
//! `metrics-exporter-otel`, or nothing: without a recorder installed, recording costs a few
//! nanoseconds).
//!
//! Names follow OpenTelemetry's semantic-convention style: dot-separated, lower case, the unit
//! in the description rather than the name (Prometheus exporters write `factum_append_duration`).
//! Durations are in seconds. Each name, its kind, unit and labels are in the table of the
//! README's "Metrics" section; [`describe`] registers their descriptions and units with the
//! installed recorder.
//!
//! ```no_run
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // In the application, once: a Prometheus endpoint on :9000/metrics.
//! metrics_exporter_prometheus::PrometheusBuilder::new()
//!     .with_http_listener(([127, 0, 0, 1], 9000))
//!     .install()?;
//! factum::metrics::describe();
//! # Ok(()) }
//! ```

use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, histogram};

use crate::error::Error;

/// Appends, by outcome: a histogram of their durations (seconds).
pub const APPEND_DURATION: &str = "factum.append.duration";
/// Events appended (a counter).
pub const APPEND_EVENTS: &str = "factum.append.events";
/// Appends refused by a version conflict (a counter).
pub const APPEND_CONFLICTS: &str = "factum.append.conflicts";
/// Aggregate loads: a histogram of their durations (seconds).
pub const LOAD_DURATION: &str = "factum.load.duration";
/// Events replayed by loads (a histogram of events per load).
pub const LOAD_EVENTS: &str = "factum.load.events";
/// Loads that started from a snapshot (a counter).
pub const LOAD_SNAPSHOT_HITS: &str = "factum.load.snapshot_hits";
/// Projection batches applied: a histogram of their durations (seconds).
pub const PROJECTION_BATCH_DURATION: &str = "factum.projection.batch.duration";
/// Events a projection's runner read and applied or passed (a counter).
pub const PROJECTION_EVENTS: &str = "factum.projection.events";
/// The global position a projection has processed up to (a gauge).
pub const PROJECTION_POSITION: &str = "factum.projection.position";
/// The store's newest position, as a projection's status last read it (a gauge).
pub const PROJECTION_HEAD: &str = "factum.projection.head";
/// Events of a projection's types after its checkpoint (a gauge).
pub const PROJECTION_LAG_EVENTS: &str = "factum.projection.lag.events";
/// How long the oldest of those has waited (a gauge, seconds).
pub const PROJECTION_LAG_DURATION: &str = "factum.projection.lag.duration";
/// Streams of a projection parked in its dead-letter queue (a gauge).
pub const PROJECTION_PARKED_STREAMS: &str = "factum.projection.parked_streams";
/// Whether a runner holds its lease and runs (1), or not (0): a gauge per runner, labelled
/// with its kind (`projection`, `saga`, `relay`) and name.
pub const RUNNER_RUNNING: &str = "factum.runner.running";
/// Failures a runner retried after (a counter per runner).
pub const RUNNER_RETRIES: &str = "factum.runner.retries";
/// Whether a runner is waiting out a failure to try again (1), or not (0): a gauge per runner,
/// which tells a runner retrying from one standing by or stopped (both not running).
pub const RUNNER_RETRYING: &str = "factum.runner.retrying";
/// Commands a saga's dispatcher delivered (a counter). (A saga's event side is a projection
/// runner under the saga's name: its batches, position and lag are the `factum.projection.*`
/// metrics.)
pub const SAGA_COMMANDS: &str = "factum.saga.commands";
/// A saga's commands queued in its outbox, not yet delivered (a gauge).
pub const SAGA_OUTBOX_PENDING: &str = "factum.saga.outbox.pending";
/// A saga's instances that have not completed (a gauge).
pub const SAGA_INSTANCES_ACTIVE: &str = "factum.saga.instances.active";
/// How long the oldest open transaction has held the feed's horizon back (a gauge, seconds;
/// 0 when none does): PostgreSQL, whose feed readers wait for older transactions.
pub const FEED_HORIZON_AGE: &str = "factum.feed.horizon.age";
/// Events a relay published, acknowledged by the broker (a counter).
pub const RELAY_EVENTS: &str = "factum.relay.events";
/// Relay batches published and checkpointed: a histogram of their durations (seconds).
pub const RELAY_BATCH_DURATION: &str = "factum.relay.batch.duration";
/// The global position a relay has published up to (a gauge).
pub const RELAY_POSITION: &str = "factum.relay.position";
/// Events stored after a relay's checkpoint (a gauge, as its last status read counted them).
pub const RELAY_LAG_EVENTS: &str = "factum.relay.lag.events";
/// A relay's dead letters by `state` (a gauge, as its last status read counted them):
/// `refused`, refused by the broker for good, or `waiting`, parked behind a refused event of
/// their stream.
pub const RELAY_DEAD_LETTERS: &str = "factum.relay.dead_letters";

/// The histograms measured in seconds ([`DURATION_BOUNDS`] suits them).
pub const DURATION_HISTOGRAMS: [&str; 4] = [
    APPEND_DURATION,
    LOAD_DURATION,
    PROJECTION_BATCH_DURATION,
    RELAY_BATCH_DURATION,
];

/// Bucket bounds for [`DURATION_HISTOGRAMS`], in seconds: 0.5 ms to 10 s. OpenTelemetry's SDK
/// buckets a histogram from 0 to 10,000 by default, bounds made for milliseconds, which would
/// put every append in its first bucket; give these to the exporter instead (with
/// `metrics-exporter-otel`, `OpenTelemetryRecorder::set_histogram_bounds` for each name, before
/// the first measurement).
pub const DURATION_BOUNDS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
    7.5, 10.0,
];

/// Registers the description and unit of every Factum metric with the installed recorder (call
/// it once, after installing one: exporters show them as `# HELP` lines and use the units).
pub fn describe() {
    describe_histogram!(
        APPEND_DURATION,
        Unit::Seconds,
        "Appends to the event store, by store, aggregate type and outcome"
    );
    describe_counter!(APPEND_EVENTS, Unit::Count, "Events appended");
    describe_counter!(
        APPEND_CONFLICTS,
        Unit::Count,
        "Appends refused by a version conflict (another writer moved the stream)"
    );
    describe_histogram!(LOAD_DURATION, Unit::Seconds, "Aggregate loads");
    describe_histogram!(
        LOAD_EVENTS,
        Unit::Count,
        "Events replayed per aggregate load"
    );
    describe_counter!(
        LOAD_SNAPSHOT_HITS,
        Unit::Count,
        "Aggregate loads that started from a snapshot"
    );
    describe_histogram!(
        PROJECTION_BATCH_DURATION,
        Unit::Seconds,
        "Projection batches applied (read, handlers, checkpoint, commit)"
    );
    describe_counter!(
        PROJECTION_EVENTS,
        Unit::Count,
        "Events a projection runner processed"
    );
    describe_gauge!(
        PROJECTION_POSITION,
        Unit::Count,
        "The global position a projection has processed up to"
    );
    describe_gauge!(
        PROJECTION_HEAD,
        Unit::Count,
        "The store's newest global position, as the projection's status last read it"
    );
    describe_gauge!(
        PROJECTION_LAG_EVENTS,
        Unit::Count,
        "Events of the projection's types after its checkpoint"
    );
    describe_gauge!(
        PROJECTION_LAG_DURATION,
        Unit::Seconds,
        "How long the oldest unprocessed event of the projection's types has waited"
    );
    describe_gauge!(
        PROJECTION_PARKED_STREAMS,
        Unit::Count,
        "Streams parked in the projection's dead-letter queue"
    );
    describe_gauge!(
        RUNNER_RUNNING,
        Unit::Count,
        "1 while the runner holds its lease and runs, else 0"
    );
    describe_counter!(
        RUNNER_RETRIES,
        Unit::Count,
        "Failures the runner retried after (database or broker unavailable, handler failures)"
    );
    describe_gauge!(
        RUNNER_RETRYING,
        Unit::Count,
        "1 while the runner waits out a failure to try again, else 0"
    );
    describe_counter!(
        SAGA_COMMANDS,
        Unit::Count,
        "Saga commands delivered to their aggregates"
    );
    describe_gauge!(
        SAGA_OUTBOX_PENDING,
        Unit::Count,
        "Saga commands queued and not yet delivered"
    );
    describe_gauge!(
        SAGA_INSTANCES_ACTIVE,
        Unit::Count,
        "Saga instances that have not completed"
    );
    describe_gauge!(
        FEED_HORIZON_AGE,
        Unit::Seconds,
        "How long the oldest open transaction has held the feed's horizon back (PostgreSQL)"
    );
    describe_counter!(
        RELAY_EVENTS,
        Unit::Count,
        "Events a relay published (acknowledged by the broker)"
    );
    describe_histogram!(
        RELAY_BATCH_DURATION,
        Unit::Seconds,
        "Relay batches published and checkpointed"
    );
    describe_gauge!(
        RELAY_POSITION,
        Unit::Count,
        "The global position a relay has published up to"
    );
    describe_gauge!(
        RELAY_LAG_EVENTS,
        Unit::Count,
        "Events stored after a relay's checkpoint"
    );
    describe_gauge!(
        RELAY_DEAD_LETTERS,
        Unit::Count,
        "A relay's dead letters: refused by the broker, or waiting behind a refused event"
    );
}

/// Records an append to `store` (`postgresql`, `sqlite`, `memory`): its duration by outcome
/// (`ok`, `conflict`, `error`), the events it stored, and a conflict.
pub(crate) fn appended<T>(
    store: &'static str,
    aggregate_type: &str,
    outcome: &Result<Vec<T>, Error>,
    took: Duration,
) {
    let result = match outcome {
        Ok(events) => {
            counter!(APPEND_EVENTS, "store" => store, "aggregate" => aggregate_type.to_owned())
                .increment(events.len() as u64);
            "ok"
        }
        Err(Error::Conflict { .. }) => {
            counter!(APPEND_CONFLICTS, "store" => store, "aggregate" => aggregate_type.to_owned())
                .increment(1);
            "conflict"
        }
        Err(_) => "error",
    };
    histogram!(
        APPEND_DURATION,
        "store" => store,
        "aggregate" => aggregate_type.to_owned(),
        "outcome" => result
    )
    .record(took.as_secs_f64());
}

/// Records an aggregate load: its duration, the events it replayed, whether it started from a
/// snapshot.
pub(crate) fn loaded(
    aggregate_type: &'static str,
    replayed: u64,
    from_snapshot: bool,
    took: Duration,
) {
    histogram!(LOAD_DURATION, "aggregate" => aggregate_type).record(took.as_secs_f64());
    #[allow(clippy::cast_precision_loss)]
    histogram!(LOAD_EVENTS, "aggregate" => aggregate_type).record(replayed as f64);
    if from_snapshot {
        counter!(LOAD_SNAPSHOT_HITS, "aggregate" => aggregate_type).increment(1);
    }
}

/// Records a projection batch: its duration, its events, the position reached.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn projection_batch(
    projection: &'static str,
    events: usize,
    position: u64,
    took: Duration,
) {
    histogram!(PROJECTION_BATCH_DURATION, "projection" => projection).record(took.as_secs_f64());
    counter!(PROJECTION_EVENTS, "projection" => projection).increment(events as u64);
    #[allow(clippy::cast_precision_loss)]
    metrics::gauge!(PROJECTION_POSITION, "projection" => projection).set(position as f64);
}

/// Records what a projection's status read: its position, the store's head, its lag in
/// events and time, its parked streams.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[allow(clippy::cast_precision_loss)]
pub(crate) fn projection_status(
    projection: &'static str,
    (position, head): (u64, u64),
    (lag_events, lag): (u64, Duration),
    parked_streams: u64,
) {
    metrics::gauge!(PROJECTION_POSITION, "projection" => projection).set(position as f64);
    metrics::gauge!(PROJECTION_HEAD, "projection" => projection).set(head as f64);
    metrics::gauge!(PROJECTION_LAG_EVENTS, "projection" => projection).set(lag_events as f64);
    metrics::gauge!(PROJECTION_LAG_DURATION, "projection" => projection).set(lag.as_secs_f64());
    metrics::gauge!(PROJECTION_PARKED_STREAMS, "projection" => projection)
        .set(parked_streams as f64);
}

/// Records whether a runner (`kind`: `projection`, `saga`, `relay`) runs, and a retry when it
/// begins one (`retried`).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn runner_state(kind: &'static str, name: &str, running: bool, retried: bool) {
    metrics::gauge!(RUNNER_RUNNING, "kind" => kind, "name" => name.to_owned()).set(if running {
        1.0
    } else {
        0.0
    });
    metrics::gauge!(RUNNER_RETRYING, "kind" => kind, "name" => name.to_owned()).set(if retried {
        1.0
    } else {
        0.0
    });
    if retried {
        counter!(RUNNER_RETRIES, "kind" => kind, "name" => name.to_owned()).increment(1);
    }
}

/// Records commands a saga's dispatcher delivered.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn saga_commands(saga: &'static str, commands: u64) {
    counter!(SAGA_COMMANDS, "saga" => saga).increment(commands);
}

/// Records a saga's outbox depth and active instances, as its status read them.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[allow(clippy::cast_precision_loss)]
pub(crate) fn saga_status(saga: &'static str, pending_commands: u64, active_instances: u64) {
    metrics::gauge!(SAGA_OUTBOX_PENDING, "saga" => saga).set(pending_commands as f64);
    metrics::gauge!(SAGA_INSTANCES_ACTIVE, "saga" => saga).set(active_instances as f64);
}

/// Records how long the oldest open transaction has held `schema`'s feed back.
#[cfg(feature = "postgres")]
pub(crate) fn feed_horizon(schema: &str, age: Duration) {
    metrics::gauge!(FEED_HORIZON_AGE, "schema" => schema.to_owned()).set(age.as_secs_f64());
}

/// Records what a relay's status read counted: the events after its checkpoint, and its dead
/// letters refused and waiting.
#[cfg(feature = "postgres")]
#[allow(clippy::cast_precision_loss)]
pub(crate) fn relay_status(relay: &str, behind: u64, refused: u64, waiting: u64) {
    metrics::gauge!(RELAY_LAG_EVENTS, "relay" => relay.to_owned()).set(behind as f64);
    metrics::gauge!(RELAY_DEAD_LETTERS, "relay" => relay.to_owned(), "state" => "refused")
        .set(refused as f64);
    metrics::gauge!(RELAY_DEAD_LETTERS, "relay" => relay.to_owned(), "state" => "waiting")
        .set(waiting as f64);
}

/// Records a relay batch: its duration, its events, the position reached.
#[cfg(feature = "postgres")]
pub(crate) fn relay_batch(relay: &str, events: usize, position: u64, took: Duration) {
    histogram!(RELAY_BATCH_DURATION, "relay" => relay.to_owned()).record(took.as_secs_f64());
    counter!(RELAY_EVENTS, "relay" => relay.to_owned()).increment(events as u64);
    #[allow(clippy::cast_precision_loss)]
    metrics::gauge!(RELAY_POSITION, "relay" => relay.to_owned()).set(position as f64);
}
