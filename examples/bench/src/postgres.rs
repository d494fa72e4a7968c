//! The PostgreSQL benchmarks. Every figure is measured in the same run as its baseline, against
//! the same database, each run in fresh schemas.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bank::{AccountEvent, BankAccount, Deposit, MoneyDeposited, OpenAccount, dollars};
use factum::store::PostgresStore;
use factum::{Aggregate as _, CommandContext, EventStore, ExpectedVersion, NewEvent, Repository};
use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor as _, Row as _};

use crate::stats::{Run, Summary, median, median_duration, millis, percentile};

pub struct Config {
    pub url: String,
    pub runs: usize,
    pub accounts: usize,
    pub deposits: usize,
    pub concurrency: Vec<usize>,
    pub long_stream: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub accounts: usize,
    pub deposits_per_account: usize,
    pub runs: usize,
    pub commands: Vec<CommandsAt>,
    pub long_stream: LongStream,
    pub feed_machinery: Vec<FeedMachineryAt>,
    pub interleaved: InterleavedAppends,
}

/// (a) and (b) at one concurrency.
#[derive(Debug, Serialize)]
pub struct CommandsAt {
    pub concurrency: usize,
    /// (a) raw single-row autocommit INSERTs of equivalent rows into an equivalent table.
    pub raw_insert: Summary,
    /// (b) Factum commands, default repository (load + append: two round trips).
    pub factum: Summary,
    /// (b) Factum commands with the hot aggregate cache (append only: one round trip).
    pub factum_cached: Summary,
    /// b / a, default repository: the median over runs of the ratio within each run.
    pub ratio: f64,
    /// b / a, with the cache: the median over runs of the ratio within each run.
    pub ratio_cached: f64,
}

/// (c) one command on a long stream.
#[derive(Debug, Serialize)]
pub struct LongStream {
    pub events: u64,
    /// No snapshot, no cache: the whole stream is read and replayed (median, ms).
    pub cold_ms: f64,
    pub cold_p95_ms: f64,
    /// From a snapshot (median, ms).
    pub snapshot_ms: f64,
    /// From the hot cache (median, ms).
    pub cached_ms: f64,
    /// `Repository::load` of the whole stream, no snapshot, no cache (median, ms).
    pub load_ms: f64,
    /// The baseline of `load_ms`: a hand-written loader in the same run, reading what loading
    /// an aggregate needs and nothing more, with one `fetch_all`: each event's stream version
    /// (the next append's expected version), type, schema version and payload (the `json`
    /// column's text, uncast, as the store reads it), decoding each payload with serde_json by
    /// its type and version and applying it (median, ms). It does not check the stream's
    /// aggregate type, as the store does.
    pub raw_load_ms: f64,
    /// raw_load / load (median of the ratios of interleaved pairs): 1.0 is as fast as the
    /// hand-written loader.
    pub load_ratio: f64,
}

/// (d) append throughput with and without the global-feed machinery.
#[derive(Debug, Serialize)]
pub struct FeedMachineryAt {
    pub concurrency: usize,
    /// Single-row INSERTs into the store's event table: with the `tx` column and its
    /// `(tx, position)` index.
    pub with_machinery: Summary,
    /// The same INSERTs, same client code, into a copy of the table without them.
    pub without: Summary,
    /// For information: appends through `PostgresStore::append` (the store's whole append path:
    /// head check, transaction-order check, notifications) into the store's table.
    pub store_appends: Summary,
    /// 1 - with / without: the share of throughput the `tx` column and its index cost (the
    /// median over runs of the cost within each run). Only that: the rest of the store's append
    /// path is in `store_ratio`.
    pub cost: f64,
    /// store.append / the raw INSERT of the same row into the same table (`with_machinery`):
    /// the whole append path against the single-row INSERT (median of per-run ratios).
    pub store_ratio: f64,
}

/// Schemas created by this process, dropped on the way out.
pub(crate) struct Schemas {
    pool: PgPool,
    created: Vec<String>,
}

impl Schemas {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            created: Vec::new(),
        }
    }

    pub(crate) async fn store(
        &mut self,
        label: &str,
    ) -> Result<PostgresStore, Box<dyn std::error::Error>> {
        let name = self.name(label);
        let store = PostgresStore::with_schema(self.pool.clone(), &name)?;
        store.migrate().await?;
        Ok(store)
    }

    fn name(&mut self, label: &str) -> String {
        let name = format!(
            "factum_bench_{}_{}_{}",
            std::process::id(),
            label,
            self.created.len()
        );
        self.created.push(name.clone());
        name
    }

    pub(crate) async fn drop_all(&mut self) {
        for schema in self.created.drain(..) {
            let drop = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
            if let Err(error) = self.pool.execute(AssertSqlSafe(drop)).await {
                eprintln!("could not drop schema {schema}: {error}");
            }
        }
    }
}

pub async fn run(config: &Config) -> Result<Report, Box<dyn std::error::Error>> {
    let max = config.concurrency.iter().copied().max().unwrap_or(1);
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(max + 4)?)
        .connect(&config.url)
        .await?;
    let mut schemas = Schemas::new(pool.clone());
    let report = measure(config, &mut schemas).await;
    schemas.drop_all().await;
    report
}

async fn measure(
    config: &Config,
    schemas: &mut Schemas,
) -> Result<Report, Box<dyn std::error::Error>> {
    let mut commands = Vec::new();
    for &concurrency in &config.concurrency {
        let (mut raw, mut plain, mut cached) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..config.runs {
            // Each run measures all three, in an order that alternates between runs, so that
            // drift on a shared machine hits baseline and candidates alike; ratios are taken
            // within a run.
            let order: [u8; 3] = if run % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
            for workload in order {
                match workload {
                    0 => {
                        let store = schemas.store("raw").await?;
                        raw.push(raw_inserts(&store, config, concurrency).await?);
                    }
                    1 => {
                        let store = schemas.store("cmd").await?;
                        plain.push(
                            bank_commands(Repository::new(store), config, concurrency).await?,
                        );
                    }
                    _ => {
                        let store = schemas.store("cached").await?;
                        let capacity =
                            NonZeroUsize::new(config.accounts).unwrap_or(NonZeroUsize::MIN);
                        let repository = Repository::new(store).cache(capacity);
                        cached.push(bank_commands(repository, config, concurrency).await?);
                    }
                }
            }
            schemas.drop_all().await;
        }
        let ratio = paired_median(&plain, &raw, |candidate, baseline| candidate / baseline);
        let ratio_cached = paired_median(&cached, &raw, |candidate, baseline| candidate / baseline);
        let (raw, factum, factum_cached) =
            (Summary::of(&raw), Summary::of(&plain), Summary::of(&cached));
        eprintln!(
            "  concurrency {concurrency}: raw {:.0}/s, factum {:.0}/s ({ratio:.2}), cached {:.0}/s ({ratio_cached:.2})",
            raw.per_second, factum.per_second, factum_cached.per_second
        );
        commands.push(CommandsAt {
            concurrency,
            ratio,
            ratio_cached,
            raw_insert: raw,
            factum,
            factum_cached,
        });
    }
    let long_stream = long_stream(config, schemas).await?;
    schemas.drop_all().await;
    let mut feed_machinery = Vec::new();
    for &concurrency in &config.concurrency {
        let (mut with, mut without, mut store_appends) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..config.runs {
            let order: [u8; 3] = if run % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
            for variant in order {
                let store = schemas.store("feed").await?;
                let target = match variant {
                    0 => Target::table(&store, "events").await?,
                    1 => Target::table(&store, "plain_events").await?,
                    _ => Target::Store(store),
                };
                let run = appends(target, config, concurrency).await?;
                match variant {
                    0 => with.push(run),
                    1 => without.push(run),
                    _ => store_appends.push(run),
                }
            }
            schemas.drop_all().await;
        }
        let cost = paired_median(&with, &without, |with, without| 1.0 - with / without);
        let store_ratio = paired_median(&store_appends, &with, |store, raw| store / raw);
        let (with_machinery, without, store_appends) = (
            Summary::of(&with),
            Summary::of(&without),
            Summary::of(&store_appends),
        );
        eprintln!(
            "  appends at concurrency {concurrency}: raw INSERT {:.0}/s, without tx column and index {:.0}/s (their cost {:.1}%); store.append {:.0}/s ({store_ratio:.2} of the raw INSERT)",
            with_machinery.per_second,
            without.per_second,
            cost * 100.0,
            store_appends.per_second
        );
        feed_machinery.push(FeedMachineryAt {
            concurrency,
            cost,
            store_ratio,
            with_machinery,
            without,
            store_appends,
        });
    }
    let interleaved = interleaved(config, schemas).await;
    schemas.drop_all().await;
    let interleaved = interleaved?;
    eprintln!(
        "  one client, appends interleaved one by one: raw INSERT {:.0} us, without tx column and index {:.0} us (their cost {:.1}%), store.append {:.0} us (mean; {:.2} of the raw INSERT's throughput, {:.2}-{:.2} in blocks of 500)",
        interleaved.raw_insert.mean_us,
        interleaved.without.mean_us,
        interleaved.cost * 100.0,
        interleaved.store_append.mean_us,
        interleaved.store_ratio,
        interleaved.store_ratio_blocks[0],
        interleaved.store_ratio_blocks[1],
    );
    Ok(Report {
        accounts: config.accounts,
        deposits_per_account: config.deposits,
        runs: config.runs,
        commands,
        long_stream,
        feed_machinery,
        interleaved,
    })
}

/// The median over runs of `f(candidate, baseline)` taken within each run.
pub(crate) fn paired_median(
    candidates: &[Run],
    baselines: &[Run],
    f: impl Fn(f64, f64) -> f64,
) -> f64 {
    let values: Vec<f64> = candidates
        .iter()
        .zip(baselines)
        .map(|(candidate, baseline)| f(candidate.per_second(), baseline.per_second()))
        .collect();
    median(&values)
}

/// Which accounts each worker drives: worker `w` of `n` takes every `n`-th account.
fn share(accounts: usize, workers: usize, worker: usize) -> Vec<usize> {
    (0..accounts)
        .filter(|account| account % workers == worker)
        .collect()
}

/// (a): the same rows a deposit appends, inserted one autocommit INSERT each, into a table
/// created `LIKE` the event table (same columns, defaults, keys and indexes).
pub(crate) async fn raw_inserts(
    store: &PostgresStore,
    config: &Config,
    concurrency: usize,
) -> Result<Run, Box<dyn std::error::Error>> {
    let schema = store.schema();
    store
        .pool()
        .execute(AssertSqlSafe(format!(
            "CREATE TABLE \"{schema}\".raw_events (LIKE \"{schema}\".events INCLUDING ALL)"
        )))
        .await?;
    let insert: Arc<str> = format!(
        "INSERT INTO \"{schema}\".raw_events (stream_id, stream_version, aggregate_type, event_id, event_type,
             schema_version, payload, metadata, correlation_id, causation_id, actor, recorded_at)
         VALUES ($1, $2, 'BankAccount', $3, 'MoneyDeposited', 1, $4::json, $5::json, $6, $7, NULL, clock_timestamp())"
    )
    .into();
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let (pool, insert) = (store.pool().clone(), insert.clone());
        let accounts = share(config.accounts, concurrency, worker);
        let deposits = config.deposits;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(accounts.len() * deposits);
            for round in 0..deposits {
                for &account in &accounts {
                    let payload =
                        serde_json::json!({ "amount": 100, "balance_after": 100 * (round + 1) })
                            .to_string();
                    let id = uuid::Uuid::now_v7();
                    let began = Instant::now();
                    sqlx::query(AssertSqlSafe(insert.clone()))
                        .bind(format!("acc-{account}"))
                        .bind(i64::try_from(round + 1)?)
                        .bind(id)
                        .bind(payload)
                        .bind("{}")
                        .bind(id)
                        .bind(id)
                        .execute(&pool)
                        .await?;
                    latencies.push(began.elapsed());
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(latencies)
        }));
    }
    collect(workers, started).await
}

/// (b): deposits through the command executor, on accounts opened beforehand (not timed).
pub(crate) async fn bank_commands(
    accounts: Repository<BankAccount, PostgresStore>,
    config: &Config,
    concurrency: usize,
) -> Result<Run, Box<dyn std::error::Error>> {
    for account in 0..config.accounts {
        let open = OpenAccount {
            owner: format!("owner {account}"),
            initial_deposit: 0,
        };
        accounts.execute(&format!("acc-{account}"), open).await?;
    }
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let repository = accounts.clone();
        let mine = share(config.accounts, concurrency, worker);
        let deposits = config.deposits;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(mine.len() * deposits);
            for _ in 0..deposits {
                for &account in &mine {
                    let began = Instant::now();
                    repository
                        .execute(&format!("acc-{account}"), Deposit { amount: dollars(1) })
                        .await?;
                    latencies.push(began.elapsed());
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(latencies)
        }));
    }
    collect(workers, started).await
}

type Worker =
    tokio::task::JoinHandle<Result<Vec<Duration>, Box<dyn std::error::Error + Send + Sync>>>;

async fn collect(
    workers: Vec<Worker>,
    started: Instant,
) -> Result<Run, Box<dyn std::error::Error>> {
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await?.map_err(|e| e.to_string())?);
    }
    Ok(Run {
        operations: latencies.len(),
        elapsed: started.elapsed(),
        latencies,
    })
}

/// (c): one deposit on an account with a long history: cold, from a snapshot, from the cache.
async fn long_stream(
    config: &Config,
    schemas: &mut Schemas,
) -> Result<LongStream, Box<dyn std::error::Error>> {
    let store = schemas.store("long").await?;
    let id = "acc-long";
    let context = CommandContext::new();
    let opened = AccountEvent::from(bank::AccountOpened {
        owner: "Long".into(),
        initial_deposit: 0,
    });
    let mut batch = vec![NewEvent::from_event(&opened, &context)?];
    for version in 2..=config.long_stream {
        let deposit = AccountEvent::from(MoneyDeposited {
            amount: 1,
            balance_after: version - 1,
        });
        batch.push(NewEvent::from_event(&deposit, &context)?);
        if batch.len() == 1000 || version == config.long_stream {
            store
                .append(
                    id,
                    "BankAccount",
                    ExpectedVersion::Any,
                    std::mem::take(&mut batch),
                )
                .await?;
        }
    }
    store
        .pool()
        .execute(AssertSqlSafe(format!(
            "ANALYZE \"{}\".events",
            store.schema()
        )))
        .await?;
    let samples = 5 * config.runs.max(1);

    let cold_repository = Repository::<BankAccount, _>::new(store.clone());
    cold_repository.execute(id, Deposit { amount: 1 }).await?; // warm the connection, not the data
    let cold = time_commands(&cold_repository, id, samples).await?;

    // A snapshot at the current head; the timed commands replay only what follows it.
    let head = cold_repository.load(id).await?;
    store
        .save_snapshot(factum::Snapshot::new(
            id,
            "BankAccount",
            head.version,
            1,
            factum::Payload::encode(&head.state)?,
        ))
        .await?;
    let snapshot_repository =
        Repository::<BankAccount, _>::new(store.clone()).snapshot_every(u64::MAX);
    let snapshot = time_commands(&snapshot_repository, id, samples).await?;

    let cached_repository =
        Repository::<BankAccount, _>::new(store.clone()).cache(NonZeroUsize::MIN);
    cached_repository.execute(id, Deposit { amount: 1 }).await?; // fills the cache
    let cached = time_commands(&cached_repository, id, samples).await?;

    let (load, raw_load, load_ratio) = time_loads(&cold_repository, id, samples).await?;

    let mut cold_sorted = cold.clone();
    cold_sorted.sort_unstable();
    let p95 = cold_sorted[(cold_sorted.len() * 95)
        .div_ceil(100)
        .clamp(1, cold_sorted.len())
        - 1];
    let report = LongStream {
        events: config.long_stream,
        cold_ms: millis(median_duration(&cold)),
        cold_p95_ms: millis(p95),
        snapshot_ms: millis(median_duration(&snapshot)),
        cached_ms: millis(median_duration(&cached)),
        load_ms: millis(median_duration(&load)),
        raw_load_ms: millis(median_duration(&raw_load)),
        load_ratio,
    };
    eprintln!(
        "  one command on a {}-event stream: cold {:.2} ms, snapshot {:.2} ms, cached {:.2} ms; \
         load {:.2} ms vs hand-written {:.2} ms ({:.2})",
        report.events,
        report.cold_ms,
        report.snapshot_ms,
        report.cached_ms,
        report.load_ms,
        report.raw_load_ms,
        report.load_ratio
    );
    Ok(report)
}

/// `Repository::load` (no snapshot, no cache) and the hand-written loader, interleaved; each
/// pair's states must be equal.
async fn time_loads(
    repository: &Repository<BankAccount, PostgresStore>,
    id: &str,
    samples: usize,
) -> Result<(Vec<Duration>, Vec<Duration>, f64), Box<dyn std::error::Error>> {
    let store = repository.store();
    let sql = format!(
        "SELECT e.stream_version, e.event_type, e.schema_version, e.payload
         FROM \"{}\".events e WHERE e.stream_id = $1 ORDER BY e.stream_version",
        store.schema()
    );
    raw_load(store.pool(), &sql, id).await?; // prepares the statement
    let (mut loads, mut raw_loads, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..samples {
        let began = Instant::now();
        let loaded = repository.load(id).await?;
        let load = began.elapsed();
        let began = Instant::now();
        let raw = raw_load(store.pool(), &sql, id).await?;
        let raw_time = began.elapsed();
        if raw != (loaded.state, loaded.version) {
            return Err("the hand-written loader and Repository::load disagree".into());
        }
        ratios.push(raw_time.as_secs_f64() / load.as_secs_f64());
        loads.push(load);
        raw_loads.push(raw_time);
    }
    Ok((loads, raw_loads, median(&ratios)))
}

/// What an application would write by hand to load an account: its events' types and payloads,
/// each decoded by its type and applied.
async fn raw_load(
    pool: &PgPool,
    sql: &str,
    id: &str,
) -> Result<(BankAccount, u64), Box<dyn std::error::Error>> {
    let rows = sqlx::query(AssertSqlSafe(sql.to_owned()))
        .bind(id)
        .fetch_all(pool)
        .await?;
    let (mut state, mut version) = (BankAccount::default(), 0);
    for row in &rows {
        version = u64::try_from(row.try_get::<i64, _>(0)?)?;
        let event_type: &str = row.try_get(1)?;
        let schema_version: i32 = row.try_get(2)?;
        // The `json` column's text as sent, uncast, as the store reads it.
        let payload: &str = row.try_get_unchecked(3)?;
        let event = match (event_type, schema_version) {
            ("AccountOpened", 1) => {
                AccountEvent::from(serde_json::from_str::<bank::AccountOpened>(payload)?)
            }
            ("MoneyDeposited", 1) => {
                AccountEvent::from(serde_json::from_str::<MoneyDeposited>(payload)?)
            }
            other => return Err(format!("the long stream holds an unexpected {other:?}").into()),
        };
        state.apply(&event);
    }
    Ok((state, version))
}

async fn time_commands(
    repository: &Repository<BankAccount, PostgresStore>,
    id: &str,
    samples: usize,
) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let began = Instant::now();
        repository.execute(id, Deposit { amount: 1 }).await?;
        times.push(began.elapsed());
    }
    Ok(times)
}

/// Where the appends of (d) go.
enum Target {
    /// Single-row INSERTs (the statement of (a)) into a table.
    Table { pool: PgPool, insert: Arc<str> },
    /// `PostgresStore::append`.
    Store(PostgresStore),
}

impl Target {
    /// The `i`-th deposit of a writer (`owner`) to its ten streams, round robin: its event
    /// appended to `<owner>-<i % 10>` (as version `i / 10 + 1` by the raw INSERTs; the store
    /// finds its own): how long the append took.
    async fn deposit(
        &self,
        owner: &str,
        i: usize,
        context: &CommandContext,
    ) -> Result<Duration, Box<dyn std::error::Error + Send + Sync>> {
        let stream = &format!("{owner}-{}", i % 10);
        let event = AccountEvent::from(MoneyDeposited {
            amount: 1,
            balance_after: i as u64,
        });
        let new = NewEvent::from_event(&event, context)?;
        let version = i64::try_from(i / 10 + 1)?;
        let began = Instant::now();
        match self {
            Target::Store(store) => {
                store
                    .append(stream, "BankAccount", ExpectedVersion::Any, vec![new])
                    .await?;
            }
            Target::Table { pool, insert } => {
                sqlx::query(AssertSqlSafe(insert.clone()))
                    .bind(stream)
                    .bind(version)
                    .bind(new.event_id)
                    .bind(new.payload.as_str())
                    .bind(new.correlation_id)
                    .bind(new.causation_id)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(began.elapsed())
    }

    /// INSERTs into `table` of the store's schema; `plain_events` is created as a copy of the
    /// event table without the `tx` column (and so without its index).
    async fn table(store: &PostgresStore, table: &str) -> Result<Self, Box<dyn std::error::Error>> {
        let s = format!("\"{}\"", store.schema());
        if table == "plain_events" {
            let ddl = format!(
                "CREATE TABLE {s}.plain_events (LIKE {s}.events INCLUDING ALL);
                 ALTER TABLE {s}.plain_events DROP COLUMN tx;"
            );
            sqlx::raw_sql(AssertSqlSafe(ddl))
                .execute(store.pool())
                .await?;
        }
        let insert = format!(
            "INSERT INTO {s}.{table} (stream_id, stream_version, aggregate_type, event_id, event_type,
                 schema_version, payload, metadata, correlation_id, causation_id, actor, recorded_at)
             VALUES ($1, $2, 'BankAccount', $3, 'MoneyDeposited', 1, $4::json, '{{}}'::json, $5, $6,
                     NULL, clock_timestamp())"
        );
        Ok(Self::Table {
            pool: store.pool().clone(),
            insert: insert.into(),
        })
    }
}

/// (d): single-event appends, each worker to streams of its own.
async fn appends(
    target: Target,
    config: &Config,
    concurrency: usize,
) -> Result<Run, Box<dyn std::error::Error>> {
    let target = Arc::new(target);
    // Twice the command workload: the difference measured is small, so runs are longer.
    let total = 2 * config.accounts * config.deposits;
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let target = target.clone();
        let count = total / concurrency;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            let context = CommandContext::new();
            for i in 0..count {
                latencies.push(target.deposit(&format!("w{worker}"), i, &context).await?);
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(latencies)
        }));
    }
    collect(workers, started).await
}

/// (e) One client, the three appends of (d) interleaved append by append (the order rotating
/// each round), so that every drift of a shared machine (its disk's flush time above all) hits
/// the three alike: at one client, throughput is the inverse of the mean latency.
#[derive(Debug, Serialize)]
pub struct InterleavedAppends {
    /// Appends of each kind.
    pub appends_each: usize,
    /// The raw INSERT into the store's event table (as `with_machinery`).
    pub raw_insert: Latency,
    /// The same INSERT into the copy without the `tx` column and its index (as `without`).
    pub without: Latency,
    /// `PostgresStore::append` into the store's table.
    pub store_append: Latency,
    /// mean(raw INSERT) / mean(store.append): store.append's throughput over the raw INSERT's.
    pub store_ratio: f64,
    /// The same ratio within each block of 500 rounds, lowest and highest: how much it moved.
    pub store_ratio_blocks: [f64; 2],
    /// 1 - mean(without) / mean(raw INSERT): the share the `tx` column and its index cost.
    pub cost: f64,
}

/// The latencies of one kind of append, in microseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Latency {
    fn of(latencies: &[Duration]) -> Self {
        let mut sorted = latencies.to_vec();
        sorted.sort_unstable();
        let micros = |p: f64| percentile(&sorted, p).as_secs_f64() * 1e6;
        Self {
            mean_us: mean_us(latencies),
            p50_us: micros(0.50),
            p99_us: micros(0.99),
        }
    }
}

fn mean_us(latencies: &[Duration]) -> f64 {
    let total: Duration = latencies.iter().sum();
    total.as_secs_f64() * 1e6 / latencies.len().max(1) as f64
}

/// (e): as many appends of each kind as a run of (d) makes.
async fn interleaved(
    config: &Config,
    schemas: &mut Schemas,
) -> Result<InterleavedAppends, Box<dyn std::error::Error>> {
    let store = schemas.store("interleaved").await?;
    let targets = [
        Target::table(&store, "events").await?,
        Target::table(&store, "plain_events").await?,
        Target::Store(store),
    ];
    let rounds = 2 * config.accounts * config.deposits;
    let mut latencies: [Vec<Duration>; 3] = Default::default();
    let context = CommandContext::new();
    for i in 0..rounds {
        for k in 0..3 {
            let which = (i + k) % 3;
            let took = targets[which]
                .deposit(&format!("i{which}"), i, &context)
                .await
                .map_err(|e| e.to_string())?;
            latencies[which].push(took);
        }
    }
    let [raw, without, store] = &latencies;
    let blocks: Vec<f64> = raw
        .chunks(500)
        .zip(store.chunks(500))
        .map(|(raw, store)| mean_us(raw) / mean_us(store))
        .collect();
    let lowest = blocks.iter().copied().fold(f64::INFINITY, f64::min);
    let highest = blocks.iter().copied().fold(0.0, f64::max);
    Ok(InterleavedAppends {
        appends_each: rounds,
        store_ratio: mean_us(raw) / mean_us(store),
        store_ratio_blocks: [lowest, highest],
        cost: 1.0 - mean_us(without) / mean_us(raw),
        raw_insert: Latency::of(raw),
        without: Latency::of(without),
        store_append: Latency::of(store),
    })
}
