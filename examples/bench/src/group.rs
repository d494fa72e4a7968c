//! Group commit: many clients appending at once, against the single-row limit, in the same run.
//!
//! PostgreSQL, at each concurrency: (a) raw single-row autocommit INSERTs of the deposit rows
//! (the statement and table of the `postgres` suite's baseline: prepared, same columns, keys,
//! indexes and casts), (b) bank deposits through a `Repository` with the hot cache on a store
//! with group commit (the default), (c) the same on a store without it. SQLite, at one
//! concurrency, on a file (WAL, synchronous=FULL): (a) raw single-row INSERTs, each in its own
//! `BEGIN IMMEDIATE` transaction, (b) `store.append` of one event with group commit, (c)
//! without, (d) bank deposits with the hot cache and group commit. Variants alternate their order
//! between runs; ratios are medians of per-run ratios.
//!
//! Correctness: after every Factum run the stored events are counted; a missing or an extra
//! event fails the suite.

use std::sync::Arc;
use std::time::Instant;

use bank::{BankAccount, Deposit};
use factum::store::{GroupCommitStats, PostgresStore, SqliteStore};
use factum::{EventStore, ExpectedVersion, Repository};
use serde::Serialize;
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgPoolOptions;

use crate::postgres::{Schemas, bank_commands, paired_median, raw_inserts};
use crate::sqlite::{TempDir, deposit_event, opened_accounts};
use crate::stats::{Summary, median};

pub struct Config {
    pub url: String,
    pub runs: usize,
    pub accounts: usize,
    pub deposits: usize,
    pub concurrency: Vec<usize>,
    pub sqlite_clients: usize,
    pub sqlite_events: usize,
    /// Appends or groups at PostgreSQL at once (`None`: the store's default).
    pub in_flight: Option<usize>,
    /// Below how many appends at PostgreSQL an append goes alone (`None`: the store's default).
    pub alone_up_to: Option<usize>,
    /// How long a PostgreSQL group waits for more (`None`: the store's default).
    pub linger: Option<std::time::Duration>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub runs: usize,
    pub accounts: usize,
    pub deposits_per_account: usize,
    pub postgres: Vec<PostgresAt>,
    pub sqlite: SqliteReport,
    /// Events missing or stored more than once after Factum runs, over every run: must be 0.
    pub missing: u64,
    pub duplicated: u64,
}

/// PostgreSQL at one concurrency.
#[derive(Debug, Serialize)]
pub struct PostgresAt {
    pub concurrency: usize,
    /// (a) raw single-row autocommit INSERTs.
    pub raw_insert: Summary,
    /// (b) deposits, hot cache, group commit (the default).
    pub grouped: Summary,
    /// (c) deposits, hot cache, without group commit.
    pub alone: Summary,
    /// b / a and c / a (medians of per-run ratios).
    pub ratio: f64,
    pub alone_ratio: f64,
    /// b / c: what grouping changes against the same commands without it (median of per-run
    /// ratios; at 1 client nothing waits, so every append goes alone either way).
    pub vs_alone: f64,
    /// b's p99 latency / a's.
    pub p99_ratio: f64,
    /// Groups formed in the grouped runs.
    pub groups: u64,
    pub largest_group: usize,
    pub mean_group: f64,
}

#[derive(Debug, Serialize)]
pub struct SqliteReport {
    pub clients: usize,
    pub events_per_run: usize,
    /// Operations per second, medians of runs.
    pub raw_insert_per_second: f64,
    pub append_grouped_per_second: f64,
    pub append_alone_per_second: f64,
    pub commands_grouped_per_second: f64,
    /// Every run's figures, in the order above.
    pub runs: Vec<[f64; 4]>,
    /// Over raw INSERT transactions (medians of per-run ratios).
    pub append_ratio: f64,
    pub append_alone_ratio: f64,
    pub commands_ratio: f64,
    /// Groups formed in the grouped appends' runs, and their mean size.
    pub groups: u64,
    pub mean_group: f64,
}

pub async fn run(config: &Config) -> Result<Report, Box<dyn std::error::Error>> {
    let max = config.concurrency.iter().copied().max().unwrap_or(1);
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(max + 4)?)
        .connect(&config.url)
        .await?;
    let mut schemas = Schemas::new(pool);
    let mut counters = Counters::default();
    let postgres = measure_postgres(config, &mut schemas, &mut counters).await;
    schemas.drop_all().await;
    let postgres = postgres?;
    let sqlite = measure_sqlite(config, &mut counters).await?;
    Ok(Report {
        runs: config.runs,
        accounts: config.accounts,
        deposits_per_account: config.deposits,
        postgres,
        sqlite,
        missing: counters.missing,
        duplicated: counters.duplicated,
    })
}

#[derive(Default)]
struct Counters {
    missing: u64,
    duplicated: u64,
}

impl Counters {
    fn check(&mut self, label: &str, expected: u64, stored: u64) {
        if stored < expected {
            eprintln!("  {label}: {} events missing", expected - stored);
            self.missing += expected - stored;
        } else if stored > expected {
            eprintln!("  {label}: {} events too many", stored - expected);
            self.duplicated += stored - expected;
        }
    }
}

async fn stored_events(store: &PostgresStore) -> Result<u64, Box<dyn std::error::Error>> {
    let count: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{}\".events",
        store.schema()
    )))
    .fetch_one(store.pool())
    .await?;
    Ok(u64::try_from(count)?)
}

async fn measure_postgres(
    config: &Config,
    schemas: &mut Schemas,
    counters: &mut Counters,
) -> Result<Vec<PostgresAt>, Box<dyn std::error::Error>> {
    let workload = crate::postgres::Config {
        url: config.url.clone(),
        runs: config.runs,
        accounts: config.accounts,
        deposits: config.deposits,
        concurrency: config.concurrency.clone(),
        long_stream: 0,
    };
    let expected = (config.accounts * (config.deposits + 1)) as u64;
    let capacity = std::num::NonZeroUsize::new(config.accounts).ok_or("no accounts")?;
    let mut report = Vec::new();
    for &concurrency in &config.concurrency {
        let (mut raw, mut grouped, mut alone) = (Vec::new(), Vec::new(), Vec::new());
        let mut stats = GroupCommitStats::default();
        for run in 0..config.runs {
            let order: [u8; 3] = if run % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
            for variant in order {
                let store = schemas.store("group").await?;
                match variant {
                    0 => raw.push(raw_inserts(&store, &workload, concurrency).await?),
                    1 => {
                        let mut group = store.group_commit().ok_or("group commit is off")?;
                        if let Some(in_flight) = config.in_flight {
                            group = group.in_flight(in_flight);
                        }
                        if let Some(alone_up_to) = config.alone_up_to {
                            group = group.alone_up_to(alone_up_to);
                        }
                        if let Some(linger) = config.linger {
                            group = group.linger(linger);
                        }
                        let store = store.with_group_commit(group);
                        let repository =
                            Repository::<BankAccount, _>::new(store.clone()).cache(capacity);
                        grouped.push(bank_commands(repository, &workload, concurrency).await?);
                        counters.check("grouped", expected, stored_events(&store).await?);
                        let run_stats = store.group_commit_stats().ok_or("group commit is off")?;
                        stats.groups += run_stats.groups;
                        stats.grouped_appends += run_stats.grouped_appends;
                        stats.largest_group = stats.largest_group.max(run_stats.largest_group);
                    }
                    _ => {
                        let store = store.without_group_commit();
                        let repository =
                            Repository::<BankAccount, _>::new(store.clone()).cache(capacity);
                        alone.push(bank_commands(repository, &workload, concurrency).await?);
                        counters.check("alone", expected, stored_events(&store).await?);
                    }
                }
            }
            schemas.drop_all().await;
        }
        let ratio = paired_median(&grouped, &raw, |candidate, baseline| candidate / baseline);
        let alone_ratio = paired_median(&alone, &raw, |candidate, baseline| candidate / baseline);
        let vs_alone = paired_median(&grouped, &alone, |grouped, alone| grouped / alone);
        let (raw, grouped, alone) = (
            Summary::of(&raw),
            Summary::of(&grouped),
            Summary::of(&alone),
        );
        let p99_ratio = grouped.p99_ms / raw.p99_ms;
        let mean_group = if stats.groups == 0 {
            0.0
        } else {
            stats.grouped_appends as f64 / stats.groups as f64
        };
        eprintln!(
            "  {concurrency} clients: raw INSERT {:.0}/s (p99 {:.2} ms); grouped deposits {:.0}/s ({ratio:.2}x, p99 {:.2} ms, {p99_ratio:.2}x); alone {:.0}/s ({alone_ratio:.2}x; grouped/alone {vs_alone:.2}); {} groups, mean {mean_group:.1}, largest {}",
            raw.per_second,
            raw.p99_ms,
            grouped.per_second,
            grouped.p99_ms,
            alone.per_second,
            stats.groups,
            stats.largest_group
        );
        report.push(PostgresAt {
            concurrency,
            raw_insert: raw,
            grouped,
            alone,
            ratio,
            alone_ratio,
            vs_alone,
            p99_ratio,
            groups: stats.groups,
            largest_group: stats.largest_group,
            mean_group,
        });
    }
    Ok(report)
}

async fn measure_sqlite(
    config: &Config,
    counters: &mut Counters,
) -> Result<SqliteReport, Box<dyn std::error::Error>> {
    let dir =
        TempDir(std::env::temp_dir().join(format!("factum-bench-group-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let (clients, events) = (config.sqlite_clients.max(1), config.sqlite_events);
    let mut runs = Vec::new();
    let mut ratios = [Vec::new(), Vec::new(), Vec::new()];
    // Groups and grouped appends of the grouped appends' runs.
    let mut groups = (0_u64, 0_u64);
    for run in 0..config.runs {
        let mut rates = [0.0; 4];
        for turn in 0..4 {
            let which = (run + turn) % 4;
            let path = dir.0.join(format!("run{run}-{which}.db"));
            let store = SqliteStore::open(&path).await?;
            store.migrate().await?;
            rates[which] = match which {
                0 => sqlite_raw(&store, clients, events).await?,
                1 => {
                    let rate = sqlite_appends(&store, clients, events).await?;
                    counters.check("sqlite grouped", events as u64, sqlite_count(&store).await?);
                    let stats = store.group_commit_stats().ok_or("group commit is off")?;
                    groups.0 += stats.groups;
                    groups.1 += stats.grouped_appends;
                    rate
                }
                2 => {
                    let store = store.clone().without_group_commit();
                    let rate = sqlite_appends(&store, clients, events).await?;
                    counters.check("sqlite alone", events as u64, sqlite_count(&store).await?);
                    rate
                }
                _ => {
                    let rate = sqlite_commands(&store, clients, events).await?;
                    counters.check(
                        "sqlite commands",
                        (events + streams(clients)) as u64,
                        sqlite_count(&store).await?,
                    );
                    rate
                }
            };
            store.pool().close().await;
        }
        eprintln!(
            "  SQLite run {}, {clients} clients: raw {:.0}/s, append grouped {:.0}/s, alone {:.0}/s, deposits grouped {:.0}/s",
            run + 1,
            rates[0],
            rates[1],
            rates[2],
            rates[3]
        );
        for (ratio, rate) in ratios.iter_mut().zip(&rates[1..]) {
            ratio.push(rate / rates[0]);
        }
        runs.push(rates);
    }
    let column = |i: usize| median(&runs.iter().map(|r| r[i]).collect::<Vec<_>>());
    Ok(SqliteReport {
        groups: groups.0,
        mean_group: if groups.0 == 0 {
            0.0
        } else {
            groups.1 as f64 / groups.0 as f64
        },
        clients,
        events_per_run: events,
        raw_insert_per_second: column(0),
        append_grouped_per_second: column(1),
        append_alone_per_second: column(2),
        commands_grouped_per_second: column(3),
        append_ratio: median(&ratios[0]),
        append_alone_ratio: median(&ratios[1]),
        commands_ratio: median(&ratios[2]),
        runs,
    })
}

async fn sqlite_count(store: &SqliteStore) -> Result<u64, Box<dyn std::error::Error>> {
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(store.pool())
        .await?;
    Ok(u64::try_from(count)?)
}

/// Runs `clients` tasks, each doing its share of `events` operations with `each(n)`.
async fn clients_do<F, Fut>(
    clients: usize,
    events: usize,
    each: F,
) -> Result<f64, Box<dyn std::error::Error>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Send,
{
    let each = Arc::new(each);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let each = each.clone();
        tasks.push(tokio::spawn(async move {
            for n in (client..events).step_by(clients) {
                each(n).await?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for task in tasks {
        task.await?.map_err(|e| e.to_string())?;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// Streams of the SQLite workloads: six per client, each written by one client only (operation
/// `n` goes to stream `n mod streams`, and client `c` does the operations `n = c mod clients`).
fn streams(clients: usize) -> usize {
    clients * 6
}

/// The baseline: the row an append writes, inserted with no checks, one `BEGIN IMMEDIATE`
/// transaction each.
async fn sqlite_raw(
    store: &SqliteStore,
    clients: usize,
    events: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let pool = store.pool().clone();
    let streams = streams(clients);
    clients_do(clients, events, move |n| {
        let pool = pool.clone();
        async move {
            let event = deposit_event(n)?;
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query(
                "INSERT INTO events (stream_id, stream_version, aggregate_type, event_id, event_type,
                     schema_version, payload, metadata, correlation_id, causation_id, actor, recorded_at)
                 VALUES (?1, ?2, 'BankAccount', ?3, ?4, 1, ?5, '{}', ?6, ?7, NULL, ?8)",
            )
            .bind(format!("acc-{}", n % streams))
            .bind(i64::try_from(n / streams + 1)?)
            .bind(event.event_id.to_string())
            .bind(event.event_type.as_ref())
            .bind(event.payload.as_str())
            .bind(event.correlation_id.to_string())
            .bind(event.causation_id.to_string())
            .bind(chrono::Utc::now())
            .execute(&mut *transaction)
            .await?;
            transaction.commit().await?;
            Ok(())
        }
    })
    .await
}

async fn sqlite_appends(
    store: &SqliteStore,
    clients: usize,
    events: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let store = store.clone();
    let streams = streams(clients);
    clients_do(clients, events, move |n| {
        let store = store.clone();
        async move {
            store
                .append(
                    &format!("acc-{}", n % streams),
                    "BankAccount",
                    ExpectedVersion::Any,
                    vec![deposit_event(n)?],
                )
                .await?;
            Ok(())
        }
    })
    .await
}

async fn sqlite_commands(
    store: &SqliteStore,
    clients: usize,
    events: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let streams = streams(clients);
    let accounts = opened_accounts(store, streams).await?;
    clients_do(clients, events, move |n| {
        let accounts = accounts.clone();
        async move {
            accounts
                .execute(&format!("acc-{}", n % streams), Deposit { amount: 100 })
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        }
    })
    .await
}

/// Fails when a correctness counter is not 0.
pub fn check(report: &Report) -> Result<(), Box<dyn std::error::Error>> {
    if report.missing > 0 || report.duplicated > 0 {
        return Err(format!(
            "{} events missing and {} stored twice after group commit runs (must be 0)",
            report.missing, report.duplicated
        )
        .into());
    }
    Ok(())
}
