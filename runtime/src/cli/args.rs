//! The command line as clap parses it: the global options ([`Args`]) and one enum per command
//! group. The doc comments here are the tool's `--help` text.

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "factum",
    about = "Look inside a Factum event store (PostgreSQL or SQLite)"
)]
pub(super) struct Args {
    /// The store: postgres://user@host/database or sqlite://path/to/file.db.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub(super) database_url: Option<String>,
    /// The PostgreSQL schema of the store.
    #[arg(long, env = "FACTUM_SCHEMA", default_value = "factum", global = true)]
    pub(super) schema: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub(super) json: bool,
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
    /// Streams: `stream show <id>`.
    Stream {
        #[command(subcommand)]
        command: StreamCommand,
    },
    /// The state of an aggregate at a version or a time (registered aggregates only).
    State {
        /// The stream.
        id: String,
        /// After this version.
        #[arg(long, conflicts_with = "at", required_unless_present = "at")]
        at_version: Option<u64>,
        /// As of this time (RFC 3339, e.g. 2026-11-23T09:00:00Z).
        #[arg(long)]
        at: Option<DateTime<Utc>>,
    },
    /// The global feed: `feed tail`.
    Feed {
        #[command(subcommand)]
        command: FeedCommand,
    },
    /// Projections (and sagas): `projections status`.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// The dead-letter queue: `dlq list`.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// The event catalog: `catalog check` (registered catalogs only; needs no store).
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// After restoring a PostgreSQL store into another cluster (or moving it by logical
    /// replication): records this cluster and continues feed positions after every stored
    /// event, so that checkpointed readers miss nothing. Until then the store refuses reads of
    /// the feed and appends. Stop the appending applications first; run as the store's owner.
    AdoptCluster,
    /// Writes the store's events as JSON Lines (every envelope field), in feed order: the
    /// whole feed, or some streams. Load them into an empty store with `import`. Personal data
    /// (`#[pii]` fields) is written sealed, as stored: a copy without the keys reads it as
    /// erased.
    Export {
        /// Only these streams (repeat the option); the whole feed when none.
        #[arg(long = "stream")]
        streams: Vec<String>,
        /// Only this tenant's events (connecting as the application role on PostgreSQL); every
        /// tenant's when missing, each line naming its event's tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// The file to write (standard output when missing).
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// The cold tier (PostgreSQL, as the schema's owner): `archive run` moves the events
    /// recorded before a time into Parquet files (each stream keeps its newest), which every
    /// read goes on reading; `archive list` shows them; `archive restore` puts one back.
    Archive {
        #[command(subcommand)]
        command: ArchiveCommand,
    },
    /// Serves the web console (catch-up dashboard, dead letters, streams, catalog) until
    /// stopped; read-only unless `--allow-actions`, whose retries and skips need the token in
    /// FACTUM_CONSOLE_TOKEN.
    Serve {
        /// Where to listen (localhost by default: the console shows the store's events).
        #[arg(long, default_value = "127.0.0.1:7780")]
        listen: std::net::SocketAddr,
        /// Allows retrying and skipping parked streams (of projections registered in the
        /// tool), each with the token.
        #[arg(long)]
        allow_actions: bool,
        /// The actions' token (at least 16 characters): set FACTUM_CONSOLE_TOKEN rather than
        /// giving it here, where other users of the machine can read it.
        #[arg(long, env = "FACTUM_CONSOLE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The application's Prometheus endpoint (`http://host:port/metrics`), scraped for
        /// the append-latency alert (`factum.append.duration`).
        #[arg(long)]
        metrics_url: Option<String>,
        /// The console of one tenant's store, as its runners see it (PostgreSQL, connected as
        /// the application role, whose row-level security keeps the others out of every page):
        /// its events, streams, projections, sagas and dead letters; its parked streams
        /// retried and skipped in its scope.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Loads an export into an empty store (created and migrated when missing), keeping event
    /// ids, stream versions, recording times, feed order and each event's tenant; all or
    /// nothing.
    Import {
        /// The export to read (standard input when missing).
        #[arg(long, short)]
        input: Option<std::path::PathBuf>,
    },
    /// Relays to message brokers: `relay nats` and `relay rabbitmq` publish the global feed
    /// until stopped, `relay status` shows where a relay stands (PostgreSQL stores).
    #[cfg(any(feature = "nats", feature = "rabbitmq"))]
    Relay {
        #[command(subcommand)]
        command: RelayCommand,
    },
    /// Events, streams, the largest streams, events per type, the store's size.
    Stats {
        /// How many of the largest streams to list.
        #[arg(long, default_value_t = 5)]
        largest: usize,
    },
    /// Forgets a data subject (crypto-shredding): deletes its data key and the snapshots of
    /// its streams, so that the personal data (`#[pii]` fields) of its events reads as their
    /// replacements from now on. The events stay. Other commands open personal data with the
    /// key-encryption key in FACTUM_KEY_ENCRYPTION_KEY, when it is set.
    Forget {
        /// The data subject, as its events name it (the `#[pii(subject)]` field's value).
        subject: String,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum StreamCommand {
    /// Every event of a stream with its envelope (and the state after it, for registered
    /// aggregates).
    Show {
        /// The stream.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum FeedCommand {
    /// Follows the global feed: the last events, then new ones as they come (Ctrl-C stops).
    Tail {
        /// Start after this global position (default: the last 10 events).
        #[arg(long)]
        from: Option<u64>,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
        /// Stop when caught up instead of following.
        #[arg(long)]
        no_follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum ProjectionsCommand {
    /// Every projection's checkpoint, lag and parked streams.
    Status {
        /// Only this projection.
        name: Option<String>,
    },
    /// Clears a registered projection's read model and checkpoint and catches up from the
    /// start, with a progress bar. Stop its runners first.
    Rebuild {
        /// The projection.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum CatalogCommand {
    /// The schema lock, for CI: fails when a published event version changed incompatibly, or
    /// when the written catalog is not what the code generates; with `--consumer`, also when
    /// the catalog breaks a consumer's contract.
    Check {
        /// The catalog directory (default: the one registered).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// A consumer's contract file (JSON: the events, versions and fields it reads), checked
        /// against the registered catalog, or against the catalog written in `--dir` when none
        /// is registered (a consumer checking a producer's published catalog). Repeatable.
        #[arg(long = "consumer", value_name = "FILE")]
        consumers: Vec<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum DlqCommand {
    /// The parked streams of every projection.
    List,
    /// Handles a parked stream's events again, in order, after a fix (registered projections).
    Retry {
        /// The projection.
        projection: String,
        /// The parked stream.
        stream: String,
    },
    /// Skips a parked stream's first event, kept on record (registered projections).
    Skip {
        /// The projection.
        projection: String,
        /// The parked stream.
        stream: String,
    },
}

#[cfg(any(feature = "nats", feature = "rabbitmq"))]
#[derive(Debug, Subcommand)]
pub(super) enum RelayCommand {
    /// Publishes the global feed to a NATS JetStream stream, on subjects
    /// `<prefix>.<aggregate type>.<event type>`, until Ctrl-C or SIGTERM: one relay of a name at
    /// a time (others wait on standby), its checkpoint moved after JetStream's acknowledgements,
    /// retried through broker and database outages.
    #[cfg(feature = "nats")]
    Nats {
        /// The relay's name: its checkpoint, lease and dead letters are kept under it.
        #[arg(long)]
        name: String,
        /// The NATS server.
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        url: String,
        /// The JetStream stream; its subjects must include `<prefix>.>`.
        #[arg(long)]
        stream: String,
        /// The subjects' first token.
        #[arg(long, default_value = "factum")]
        prefix: String,
        /// Only events of this aggregate type (repeat the option); all when none.
        #[arg(long = "aggregate-type")]
        aggregate_types: Vec<String>,
        /// Only events of this type (repeat the option); all when none.
        #[arg(long = "event-type")]
        event_types: Vec<String>,
        /// Events read and published per batch.
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
    },
    /// Publishes the global feed to a RabbitMQ topic exchange (declared when missing), with
    /// routing keys `<prefix>.<aggregate type>.<event type>`, until Ctrl-C or SIGTERM: its
    /// checkpoint moved after the broker's publisher confirms; at least once (bind the
    /// consumers' queues first).
    #[cfg(feature = "rabbitmq")]
    Rabbitmq {
        /// The relay's name: its checkpoint, lease and dead letters are kept under it.
        #[arg(long)]
        name: String,
        /// The broker.
        #[arg(
            long,
            env = "AMQP_URL",
            default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
        )]
        url: String,
        /// The exchange.
        #[arg(long)]
        exchange: String,
        /// The routing keys' first token.
        #[arg(long, default_value = "factum")]
        prefix: String,
        /// Only events of this aggregate type (repeat the option); all when none.
        #[arg(long = "aggregate-type")]
        aggregate_types: Vec<String>,
        /// Only events of this type (repeat the option); all when none.
        #[arg(long = "event-type")]
        event_types: Vec<String>,
        /// Events read and published per batch.
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
    },
    /// A relay's checkpoint, the events behind it and its dead letters.
    Status {
        /// The relay.
        name: String,
    },
    /// Has the running relay publish a parked stream again, from its refused event, once the
    /// broker takes it (within a second; an event refused again parks it again).
    Retry {
        /// The relay.
        name: String,
        /// The parked stream.
        #[arg(long)]
        stream: String,
    },
    /// Has the running relay drop a parked stream's refused event (never published) and
    /// publish the events parked behind it.
    Skip {
        /// The relay.
        name: String,
        /// The parked stream.
        #[arg(long)]
        stream: String,
    },
}

/// `archive` subcommands.
#[derive(Debug, Subcommand)]
pub(super) enum ArchiveCommand {
    /// Archives the events recorded before `--before` into Parquet files in `--dir`.
    Run {
        /// The cut-off (RFC 3339, e.g. 2025-01-01T00:00:00Z).
        #[arg(long)]
        before: chrono::DateTime<chrono::Utc>,
        /// The directory of the files: every process reading archived events needs it at
        /// this path.
        #[arg(long)]
        dir: std::path::PathBuf,
        /// Events per file.
        #[arg(long, default_value_t = 100_000)]
        events_per_file: usize,
    },
    /// Lists the archives.
    List,
    /// Puts an archive's events back into the table and removes its file.
    Restore {
        /// The archive's id (`archive list`).
        id: i64,
    },
}
