//! Factum's benchmark binary: every figure is measured against a baseline in the same run.
//!
//! ```sh
//! cargo run --release -p factum-bench -- postgres            # human-readable
//! cargo run --release -p factum-bench -- postgres --json     # machine-readable
//! cargo run --release -p factum-bench -- projections         # catch-up and live lag
//! cargo run --release -p factum-bench -- sagas               # order flow completion time
//! cargo run --release -p factum-bench -- sqlite              # the embedded store vs raw SQLite
//! cargo run --release -p factum-bench -- group               # group commit vs single-row INSERTs
//! cargo run --release -p factum-bench -- relay               # relay to JetStream vs plain async-nats
//! cargo run --release -p factum-bench -- pii                 # events with #[pii] fields vs without
//! cargo run --release -p factum-bench -- tenants             # row-level security vs none
//! cargo run --release -p factum-bench -- archive             # the cold tier vs all hot
//! ```

mod archive;
mod group;
mod hot;
mod pii;
mod postgres;
mod projections;
mod relay;
mod sagas;
mod sqlite;
mod stats;
mod tenants;
mod transfer;
mod versioning;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Factum benchmarks, each against a baseline measured in the same run")]
struct Cli {
    #[command(subcommand)]
    suite: Suite,
}

#[derive(Debug, Subcommand)]
enum Suite {
    /// The PostgreSQL event store: commands vs raw INSERTs, long streams, feed machinery cost.
    Postgres {
        /// The database to use (schemas are created and dropped in it).
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        database_url: String,
        /// Runs of each measurement (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Accounts in the bank workload.
        #[arg(long, default_value_t = 200)]
        accounts: usize,
        /// Deposits per account.
        #[arg(long, default_value_t = 20)]
        deposits: usize,
        /// Concurrency levels.
        #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
        concurrency: Vec<usize>,
        /// Events in the long stream.
        #[arg(long, default_value_t = 10_000)]
        long_stream: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Projections: catch-up of the generated bank projection vs a hand-written batched loop,
    /// and live lag at a steady append rate.
    Projections {
        /// The database to use (a schema is created and dropped in it).
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        database_url: String,
        /// Catch-up runs (medians are reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Events in the history.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Accounts they are spread over.
        #[arg(long, default_value_t = 1_000)]
        accounts: u64,
        /// Events per batch (both sides; where the growing runner's batches start).
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
        /// The size the growing runner's batches reach while it is behind (the runner's
        /// default), and the hand-written loop's batches beside it.
        #[arg(long, default_value_t = 5_000)]
        max_batch_size: usize,
        /// Live append rate, events per second.
        #[arg(long, default_value_t = 1_000)]
        live_rate: u64,
        /// Live phase duration, seconds.
        #[arg(long, default_value_t = 10)]
        live_seconds: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sagas: completion time of the order fulfillment flow driven by the saga, live, vs the
    /// same commands back to back. Uses `DATABASE_URL` (a schema is created and dropped).
    Sagas {
        /// Runs (each: the saga phase and the direct phase, alternating which goes first).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Orders per phase.
        #[arg(long, default_value_t = 200)]
        orders: usize,
        /// Orders placed per second.
        #[arg(long, default_value_t = 50)]
        rate: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The SQLite store: appends and commands vs raw single-row INSERTs, on a file.
    Sqlite {
        /// Runs (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Events per measurement.
        #[arg(long, default_value_t = 2_000)]
        events: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Bulk import (`PostgresStore::import` of a JSON Lines export) vs a raw `COPY` of the same
    /// rows, each into a fresh store.
    Transfer {
        /// The database to use (schemas are created and dropped in it).
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        database_url: String,
        /// Runs (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Events exported and imported.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Group commit: bank deposits from many clients vs raw single-row INSERTs (PostgreSQL),
    /// appends and deposits vs raw INSERT transactions (SQLite), with and without grouping.
    Group {
        /// The database to use (schemas are created and dropped in it).
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        database_url: String,
        /// Runs of each measurement (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Accounts in the PostgreSQL workload.
        #[arg(long, default_value_t = 256)]
        accounts: usize,
        /// Deposits per account.
        #[arg(long, default_value_t = 20)]
        deposits: usize,
        /// PostgreSQL concurrency levels.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        concurrency: Vec<usize>,
        /// SQLite clients.
        #[arg(long, default_value_t = 16)]
        sqlite_clients: usize,
        /// SQLite operations per measurement.
        #[arg(long, default_value_t = 4_000)]
        sqlite_events: usize,
        /// Appends or groups at PostgreSQL at once (default: the store's default).
        #[arg(long)]
        in_flight: Option<usize>,
        /// Below how many appends at PostgreSQL an append goes alone beside the slot (default:
        /// the store's default).
        #[arg(long)]
        alone_up_to: Option<usize>,
        /// How long a PostgreSQL group waits for more appends, in microseconds (default: the
        /// store's default).
        #[arg(long)]
        linger_us: Option<u64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A hot aggregate: many clients on ONE stream, the optimistic retry loop vs
    /// `Repository::serialize_streams`. Uses `DATABASE_URL` (a schema is created and dropped).
    Hot {
        /// Runs (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Commands per run.
        #[arg(long, default_value_t = 2_560)]
        commands: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The relay to NATS JetStream (a nats-server of its own) vs a plain async-nats publish
    /// loop of the same messages, and the append-to-subscriber latency at a steady rate. Uses
    /// `DATABASE_URL` (schemas are created and dropped).
    Relay {
        /// Runs (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Events per run.
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        /// Events per batch (the relay's and the baseline's).
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
        /// Appends per second in the latency measurement.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Seconds of the latency measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Crypto-shredding's cost: appends and loads of an event with two `#[pii]` fields vs the
    /// same event without, on PostgreSQL.
    Pii {
        /// The database to use (schemas are created and dropped in it).
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        database_url: String,
        /// Runs of the appends (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Data subjects (each with a stream).
        #[arg(long, default_value_t = 200)]
        subjects: usize,
        /// Appends per run and side.
        #[arg(long, default_value_t = 2_000)]
        appends: usize,
        /// Events of the loaded stream.
        #[arg(long, default_value_t = 10_000)]
        stream_events: u64,
        /// Load rounds (each loads every subject's stream, then the long stream, on both sides).
        #[arg(long, default_value_t = 25)]
        load_rounds: usize,
        /// Data subjects' keys the sealed store keeps in memory (the provider's default,
        /// 10,000, when not given).
        #[arg(long)]
        cached_keys: Option<std::num::NonZeroUsize>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The cold tier (PostgreSQL): archive and restore throughput, and a rebuild's read of the
    /// whole feed with its older events archived vs all hot. Uses `DATABASE_URL` (a schema is
    /// created and dropped).
    Archive {
        /// Runs (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Events in the store.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Events per feed read.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Tenant isolation's cost: appends and feed reads of a tenant's store through PostgreSQL's
    /// row-level security vs the same store on a schema with it off, both as an application
    /// role, and the feed reads vs an untenanted store's. Uses
    /// `DATABASE_URL` (roles and schemas are created and dropped).
    Tenants {
        /// Runs (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Appends per run and side.
        #[arg(long, default_value_t = 2000)]
        appends: usize,
        /// Streams the appends go to.
        #[arg(long, default_value_t = 100)]
        streams: usize,
        /// Events per feed read.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reading old event versions through upcasters vs the current version, in memory.
    Versioning {
        /// Events of each kind.
        #[arg(long, default_value_t = 10_000)]
        events: usize,
        /// Rounds (the median is reported).
        #[arg(long, default_value_t = 21)]
        rounds: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().suite {
        Suite::Postgres {
            database_url,
            runs,
            accounts,
            deposits,
            concurrency,
            long_stream,
            json,
        } => {
            let config = postgres::Config {
                url: database_url,
                runs: runs.max(1),
                accounts,
                deposits,
                concurrency,
                long_stream: long_stream.max(2),
            };
            eprintln!(
                "measuring (runs: {}, {accounts} accounts x {deposits} deposits)...",
                config.runs
            );
            let report = postgres::run(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&report);
            }
        }
        Suite::Projections {
            database_url,
            runs,
            events,
            accounts,
            batch_size,
            max_batch_size,
            live_rate,
            live_seconds,
            json,
        } => {
            let config = projections::Config {
                url: database_url,
                runs: runs.max(1),
                accounts: accounts.max(1),
                events: events.max(accounts.max(1)),
                batch_size: batch_size.max(1),
                max_batch_size: max_batch_size.max(batch_size).max(1),
                live_rate: live_rate.max(4),
                live_seconds: live_seconds.max(1),
            };
            let report = projections::run(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_projections(&report);
            }
            if report.live.missing > 0 {
                return Err(format!(
                    "{} live events were never applied (must be 0): the figures are void",
                    report.live.missing
                )
                .into());
            }
        }
        Suite::Sagas {
            runs,
            orders,
            rate,
            json,
        } => {
            let config = sagas::Config {
                runs: runs.max(1),
                orders: orders.max(1),
                rate: rate.max(1),
            };
            let report = sagas::run(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "\norder fulfillment, {} orders per phase at {}/s, {} runs: OrderPlaced -> OrderCompleted",
                    report.orders_per_run, report.rate, report.runs
                );
                for (label, p) in [
                    ("saga (live runner)", &report.saga),
                    ("direct (5 commands)", &report.direct),
                ] {
                    println!(
                        "  {label:<20} p50 {:>7.1} ms  p95 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
                        p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms
                    );
                }
                println!(
                    "  saga/direct p50 ratio {:.2} (median of runs); incomplete orders: {}",
                    report.p50_ratio, report.incomplete
                );
            }
            if report.incomplete > 0 {
                return Err(format!(
                    "{} orders did not complete (must be 0): the percentiles are void",
                    report.incomplete
                )
                .into());
            }
        }
        Suite::Sqlite { runs, events, json } => {
            let config = sqlite::Config {
                runs: runs.max(1),
                events: events.max(100),
            };
            let report = sqlite::run(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "\nSQLite file (WAL, synchronous=FULL), {} single-event appends per measurement, median of {} runs",
                    report.events_per_run, report.runs
                );
                println!(
                    "  raw INSERT transactions: {:>8.0} events/s",
                    report.raw_insert_per_second
                );
                println!(
                    "  store.append:            {:>8.0} events/s  (ratio {:.2})",
                    report.append_per_second, report.append_ratio
                );
                println!(
                    "  commands, hot cache:     {:>8.0} events/s  (ratio {:.2})",
                    report.command_per_second, report.command_ratio
                );
            }
        }
        Suite::Group {
            database_url,
            runs,
            accounts,
            deposits,
            concurrency,
            sqlite_clients,
            sqlite_events,
            in_flight,
            alone_up_to,
            linger_us,
            json,
        } => {
            let config = group::Config {
                url: database_url,
                runs: runs.max(1),
                accounts: accounts.max(1),
                deposits: deposits.max(1),
                concurrency,
                sqlite_clients,
                sqlite_events: sqlite_events.max(1),
                in_flight,
                alone_up_to,
                linger: linger_us.map(std::time::Duration::from_micros),
            };
            let report = group::run(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "\ngroup commit, {} accounts x {} deposits, median of {} runs",
                    report.accounts, report.deposits_per_account, report.runs
                );
                for at in &report.postgres {
                    println!(
                        "  PostgreSQL, {:>2} clients: raw INSERT {:>7.0}/s p99 {:.2} ms | deposits grouped {:>7.0}/s ({:.2}x) p99 {:.2} ms ({:.2}x) | alone {:>7.0}/s ({:.2}x)",
                        at.concurrency,
                        at.raw_insert.per_second,
                        at.raw_insert.p99_ms,
                        at.grouped.per_second,
                        at.ratio,
                        at.grouped.p99_ms,
                        at.p99_ratio,
                        at.alone.per_second,
                        at.alone_ratio
                    );
                }
                let sqlite = &report.sqlite;
                println!(
                    "  SQLite, {} clients: raw INSERT transactions {:.0}/s | append grouped {:.0}/s ({:.2}x, {} groups, mean {:.1}) | alone {:.0}/s ({:.2}x) | deposits grouped {:.0}/s ({:.2}x)",
                    sqlite.clients,
                    sqlite.raw_insert_per_second,
                    sqlite.append_grouped_per_second,
                    sqlite.append_ratio,
                    sqlite.groups,
                    sqlite.mean_group,
                    sqlite.append_alone_per_second,
                    sqlite.append_alone_ratio,
                    sqlite.commands_grouped_per_second,
                    sqlite.commands_ratio
                );
                println!(
                    "  missing {}, duplicated {}",
                    report.missing, report.duplicated
                );
            }
            group::check(&report)?;
        }
        Suite::Relay {
            runs,
            events,
            batch_size,
            rate,
            seconds,
            json,
        } => {
            let config = relay::Config {
                runs: runs.max(1),
                events: events.max(1),
                batch_size: batch_size.max(1),
                rate: rate.max(1),
                seconds: seconds.max(1),
            };
            let report = relay::run(&config).await.map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "\nrelay to NATS JetStream (file storage), {} events per run in batches of {}, median of {} runs",
                    report.events_per_run, report.batch_size, report.runs
                );
                println!(
                    "  relay (reads PostgreSQL, checkpoints):        {:>8.0} events/s",
                    report.relay_per_second
                );
                println!(
                    "  async-nats, the same messages pre-built:      {:>8.0} events/s  (relay ratio {:.2})",
                    report.prebuilt_per_second, report.ratio_prebuilt
                );
                println!(
                    "  async-nats, building them from the events:    {:>8.0} events/s  (relay ratio {:.2})",
                    report.handwritten_per_second, report.ratio_handwritten
                );
                println!(
                    "  append -> subscriber at {}/s ({} events): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    report.latency.rate,
                    report.latency.events,
                    report.latency.p50_ms,
                    report.latency.p99_ms,
                    report.latency.max_ms
                );
                println!(
                    "  append -> a consumer's read model (another schema) committed it: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    report.latency.consumer_p50_ms,
                    report.latency.consumer_p99_ms,
                    report.latency.consumer_max_ms
                );
                println!(
                    "  missing {}, duplicated {}, never received {}, never in the read model {}, read model rows {} of {} (each must match)",
                    report.missing,
                    report.duplicated,
                    report.latency.missing,
                    report.latency.consumer_missing,
                    report.latency.consumer_rows,
                    report.latency.events
                );
            }
            let wrong_rows = (report.latency.consumer_rows
                - i64::try_from(report.latency.events).unwrap_or(i64::MAX))
            .unsigned_abs();
            let faults = report.missing
                + report.duplicated
                + report.latency.missing as u64
                + report.latency.consumer_missing as u64
                + wrong_rows;
            if faults > 0 {
                return Err(format!(
                    "{} events missing, duplicated or never received (must be 0): the figures are void",
                    faults
                )
                .into());
            }
        }
        Suite::Hot {
            runs,
            clients,
            commands,
            json,
        } => {
            let config = hot::Config {
                runs: runs.max(1),
                clients: clients.max(1),
                commands: commands.max(clients.max(1)),
            };
            let report = hot::run(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "\n{} clients, {} deposits into ONE account per run, median of {} runs",
                    report.clients, report.commands_per_run, report.runs
                );
                println!(
                    "  optimistic retry loop: {:>8.0} commands/s  ({} conflicts retried)",
                    report.retry_loop_per_second, report.retry_loop_conflicts
                );
                println!(
                    "  serialize_streams:     {:>8.0} commands/s  ({} conflicts; ratio {:.2})",
                    report.serialized_per_second, report.serialized_conflicts, report.ratio
                );
            }
            if report.serialized_conflicts > 0 {
                return Err(format!(
                    "{} conflicts reached serialized commands (must be 0)",
                    report.serialized_conflicts
                )
                .into());
            }
        }
        Suite::Archive {
            runs,
            events,
            batch,
            json,
        } => {
            let config = archive::Config {
                runs: runs.max(1),
                events: events.max(2),
                batch: batch.max(1),
            };
            let report = archive::run(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "\ncold tier, PostgreSQL: {} events, {} archived into {} files ({} bytes), median of {} runs",
                    report.events, report.archived, report.files, report.bytes, report.runs
                );
                println!(
                    "  archive {:.0} events/s, restore {:.0} events/s",
                    report.archive_per_s, report.restore_per_s
                );
                println!(
                    "  rebuild read of the whole feed: all hot {:.0} events/s, archived {:.0} events/s (cold/hot rate {:.3})",
                    report.hot_rebuild_per_s, report.cold_rebuild_per_s, report.cold_vs_hot
                );
                println!("  mismatched: {} (must be 0)", report.mismatched);
            }
            if report.mismatched > 0 {
                return Err(format!(
                    "{} events of the cold read were missing, extra or out of place",
                    report.mismatched
                )
                .into());
            }
        }
        Suite::Transfer {
            database_url,
            runs,
            events,
            json,
        } => {
            let config = transfer::Config {
                url: database_url,
                runs: runs.max(1),
                events: events.max(1),
            };
            let report = transfer::run(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "\nimport of {} events ({} bytes of JSON Lines; export {:.0} events/s), median of {} runs",
                    report.events, report.export_bytes, report.export_per_second, report.runs
                );
                println!(
                    "  raw COPY of the same rows: {:>9.0} events/s",
                    report.raw_copy_per_second
                );
                println!(
                    "  PostgresStore::import:     {:>9.0} events/s  (ratio {:.2})",
                    report.import_per_second, report.ratio
                );
            }
            if report.mismatched > 0 {
                return Err(format!(
                    "{} events missing or extra after an import (must be 0)",
                    report.mismatched
                )
                .into());
            }
        }
        Suite::Pii {
            database_url,
            runs,
            subjects,
            appends,
            stream_events,
            load_rounds,
            cached_keys,
            json,
        } => {
            let config = pii::Config {
                url: database_url,
                runs: runs.max(1),
                subjects: subjects.max(1),
                appends: appends.max(1),
                stream_events: stream_events.max(1),
                load_rounds: load_rounds.max(1),
                cached_keys,
            };
            let report = pii::run(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "events with two #[pii] fields vs the same event without, PostgreSQL, {} runs",
                    report.runs
                );
                println!(
                    "  appends (1 client, {} subjects with keys): plain {:.0}/s, pii {:.0}/s, time ratio {:.2} (target 1.2)",
                    report.subjects,
                    report.append_plain_per_s,
                    report.append_pii_per_s,
                    report.append_ratio
                );
                println!(
                    "  a new subject's first event (its key made): {:.0}/s, time ratio {:.2}",
                    report.first_event_per_s, report.first_event_ratio
                );
                println!(
                    "  loads of the {} subjects' streams ({:.0} events each), {} rounds: plain {:.1} ms, pii {:.1} ms, ratio {:.2} [{:.2}–{:.2}] (target 1.2)",
                    report.subjects,
                    report.events_per_subject_stream,
                    report.load_rounds,
                    report.load_subjects_plain_ms,
                    report.load_subjects_pii_ms,
                    report.load_subjects_ratio,
                    report.load_subjects_ratio_range[0],
                    report.load_subjects_ratio_range[1]
                );
                println!(
                    "  load of one {}-event stream, {} rounds: plain {:.2} ms, pii {:.2} ms, ratio {:.2} [{:.2}–{:.2}]",
                    report.stream_events,
                    report.load_rounds,
                    report.load_plain_ms,
                    report.load_pii_ms,
                    report.load_ratio,
                    report.load_ratio_range[0],
                    report.load_ratio_range[1]
                );
                println!(
                    "  its rows fetched, nothing decoded ({:.0} vs {:.0} stored bytes a row): plain {:.2} ms, pii {:.2} ms, ratio {:.2} [{:.2}–{:.2}]",
                    report.row_bytes_plain,
                    report.row_bytes_pii,
                    report.transfer_plain_ms,
                    report.transfer_pii_ms,
                    report.transfer_ratio,
                    report.transfer_ratio_range[0],
                    report.transfer_ratio_range[1]
                );
            }
            if report.plaintext_rows > 0 || report.mismatched_loads > 0 {
                return Err(format!(
                    "{} rows hold personal data in plain and {} loads differ (both must be 0): the figures are void",
                    report.plaintext_rows, report.mismatched_loads
                )
                .into());
            }
        }
        Suite::Tenants {
            runs,
            appends,
            streams,
            batch,
            json,
        } => {
            let config = tenants::Config {
                runs: runs.max(1),
                appends: appends.max(1),
                streams: streams.max(1),
                batch: batch.max(1),
            };
            let report = tenants::run(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "row-level security (a tenant's store) vs none, PostgreSQL, as an application role, {} runs",
                    report.runs
                );
                println!(
                    "  appends (1 client, {} per run): none {:.0}/s, rls {:.0}/s, time ratio {:.3} (target 1.05)",
                    report.appends_per_run,
                    report.append_plain_per_s,
                    report.append_rls_per_s,
                    report.append_ratio
                );
                println!(
                    "  feed reads of all {} events in batches of {}: none {:.0}/s, rls {:.0}/s, time ratio {:.3} (target 1.05)",
                    report.feed_events,
                    report.feed_batch,
                    report.feed_plain_per_s,
                    report.feed_rls_per_s,
                    report.feed_ratio
                );
                println!(
                    "  the same reads by an untenanted store without row-level security {:.0}/s: the tenant's under it, time ratio {:.3} (all of tenancy's cost)",
                    report.feed_untenanted_per_s, report.feed_tenancy_ratio
                );
                let many = &report.many;
                println!(
                    "  {} tenants, {} events, the tenant feed index with vs without:",
                    many.tenants, many.events
                );
                println!(
                    "    appends: with {:.0}/s, without {:.0}/s, time ratio {:.3}",
                    many.append_indexed_per_s, many.append_unindexed_per_s, many.append_ratio
                );
                println!(
                    "    one tenant's feed ({} events): with {:.0}/s ({}), without {:.0}/s ({}), {:.2}x faster",
                    many.tenant_events,
                    many.feed_indexed_per_s,
                    many.plan_indexed,
                    many.feed_unindexed_per_s,
                    many.plan_unindexed,
                    many.feed_speedup
                );
            }
            if report.missing > 0 {
                return Err(format!(
                    "{} events missing or extra in the feed reads (must be 0): the figures are void",
                    report.missing
                )
                .into());
            }
        }
        Suite::Versioning {
            events,
            rounds,
            json,
        } => {
            let report = versioning::run(events, rounds.max(1)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "reading {} MoneyWithdrawn events stored at v1 (two upcasters) vs at v3, median of {} rounds",
                    report.events, report.rounds
                );
                println!(
                    "  decode:             native {:.2} ms, upcast {:.2} ms, ratio {:.2}",
                    report.decode_native_ms, report.decode_upcast_ms, report.decode_ratio
                );
                println!(
                    "  the chain alone:    v1 decoded as v1 {:.2} ms, through two upcasters {:.2} ms, ratio {:.2}",
                    report.decode_v1_only_ms, report.decode_upcast_ms, report.chain_ratio
                );
                println!(
                    "  load an aggregate:  native {:.2} ms, upcast {:.2} ms, ratio {:.2}",
                    report.load_native_ms, report.load_upcast_ms, report.load_ratio
                );
            }
        }
    }
    Ok(())
}

fn print_report(report: &postgres::Report) {
    println!(
        "\n(a) raw INSERT vs (b) Factum commands: {} accounts x {} deposits, median of {} runs (b/a: median of per-run ratios)",
        report.accounts, report.deposits_per_account, report.runs
    );
    println!(
        "{:>5} | {:>10} | {:>10} {:>6} | {:>10} {:>6} | {:>23} | {:>23}",
        "conc",
        "raw/s",
        "factum/s",
        "b/a",
        "cached/s",
        "b/a",
        "factum p50/p95/p99 ms",
        "cached p50/p95/p99 ms"
    );
    for row in &report.commands {
        println!(
            "{:>5} | {:>10.0} | {:>10.0} {:>6.2} | {:>10.0} {:>6.2} | {:>7.2}/{:>7.2}/{:>7.2} | {:>7.2}/{:>7.2}/{:>7.2}",
            row.concurrency,
            row.raw_insert.per_second,
            row.factum.per_second,
            row.ratio,
            row.factum_cached.per_second,
            row.ratio_cached,
            row.factum.p50_ms,
            row.factum.p95_ms,
            row.factum.p99_ms,
            row.factum_cached.p50_ms,
            row.factum_cached.p95_ms,
            row.factum_cached.p99_ms,
        );
    }
    let long = &report.long_stream;
    println!(
        "\n(c) one command on a {}-event stream (median)",
        long.events
    );
    println!(
        "  cold (no snapshot, no cache): {:.2} ms (p95 {:.2} ms)",
        long.cold_ms, long.cold_p95_ms
    );
    println!("  from a snapshot:              {:.2} ms", long.snapshot_ms);
    println!("  from the hot cache:           {:.2} ms", long.cached_ms);
    println!(
        "  Repository::load, whole stream: {:.2} ms vs a hand-written loader {:.2} ms (ratio {:.2})",
        long.load_ms, long.raw_load_ms, long.load_ratio
    );
    println!(
        "\n(d) single-event appends: raw INSERTs into the event table vs the same INSERTs into a copy without the tx column and its (tx, position) index (their cost), and store.append (the whole path: head check, transaction-order check, notification) vs the raw INSERT"
    );
    println!(
        "{:>5} | {:>12} | {:>12} | {:>6} | {:>16} {:>6}",
        "conc", "raw/s", "without tx/s", "cost", "store.append/s", "ratio"
    );
    for row in &report.feed_machinery {
        println!(
            "{:>5} | {:>12.0} | {:>12.0} | {:>5.1}% | {:>16.0} {:>6.2}",
            row.concurrency,
            row.with_machinery.per_second,
            row.without.per_second,
            row.cost * 100.0,
            row.store_appends.per_second,
            row.store_ratio
        );
    }
    let one = &report.interleaved;
    println!(
        "\n(e) one client, the appends of (d) interleaved one by one ({} of each): mean / p50 / p99 latency, us",
        one.appends_each
    );
    for (name, latency) in [
        ("raw INSERT", &one.raw_insert),
        ("without tx column and index", &one.without),
        ("store.append", &one.store_append),
    ] {
        println!(
            "  {name:<28} {:>7.1} / {:>7.1} / {:>7.1}",
            latency.mean_us, latency.p50_us, latency.p99_us
        );
    }
    println!(
        "  store.append / raw INSERT throughput: {:.3} ({:.2}-{:.2} in blocks of 500); tx column and index cost {:.1}%",
        one.store_ratio,
        one.store_ratio_blocks[0],
        one.store_ratio_blocks[1],
        one.cost * 100.0
    );
}

fn print_projections(report: &projections::Report) {
    let catch_up = &report.catch_up;
    println!(
        "\ncatch-up over {} events ({} accounts, batches of {}), median of {} runs",
        report.events, report.accounts, report.batch_size, report.runs
    );
    println!(
        "  generated projection:  {:>9.0} events/s  (runs: {})",
        catch_up.generated_per_second,
        rounded(&catch_up.generated_runs)
    );
    println!(
        "  hand-written loop:     {:>9.0} events/s  (runs: {})",
        catch_up.hand_written_per_second,
        rounded(&catch_up.hand_written_runs)
    );
    println!(
        "  generated / hand-written: {:.2} (median of per-run ratios)",
        catch_up.ratio
    );
    let growing = &report.growing;
    println!(
        "\ncatch-up with the runner's batches growing from {} to {} while behind, against the loop at {}",
        report.batch_size, report.max_batch_size, report.max_batch_size
    );
    println!(
        "  generated projection:  {:>9.0} events/s  (runs: {})",
        growing.generated_per_second,
        rounded(&growing.generated_runs)
    );
    println!(
        "  hand-written loop:     {:>9.0} events/s  (runs: {})",
        growing.hand_written_per_second,
        rounded(&growing.hand_written_runs)
    );
    println!(
        "  generated / hand-written: {:.2} (median of per-run ratios)",
        growing.ratio
    );
    let live = &report.live;
    println!(
        "\nlive lag at {} events/s (achieved {:.0}/s, {} events, {} missing): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        live.target_rate,
        live.achieved_rate,
        live.events,
        live.missing,
        live.p50_ms,
        live.p95_ms,
        live.p99_ms,
        live.max_ms
    );
}

fn rounded(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}
