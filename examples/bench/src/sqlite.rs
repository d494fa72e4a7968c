//! The SQLite store against raw SQLite, in the same run, on the same file settings (WAL, full
//! synchronous commits): bank deposits as
//!
//! - (a) raw single-row `INSERT`s, each in its own `BEGIN IMMEDIATE` transaction (the baseline:
//!   what any SQLite event log pays per event);
//! - (b) `store.append` of one event (head check, idempotency check, insert);
//! - (c) commands through a `Repository` with the hot aggregate cache.
//!
//! Alternating which goes first in each run; the median of the per-run ratios is reported.

use std::time::Instant;

use bank::{BankAccount, Deposit, OpenAccount};
use factum::store::SqliteStore;
use factum::{CommandContext, EventStore, ExpectedVersion, NewEvent, Repository};
use serde::Serialize;

use crate::stats::median;

pub struct Config {
    pub runs: usize,
    pub events: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub runs: usize,
    pub events_per_run: usize,
    /// Events per second, median of runs.
    pub raw_insert_per_second: f64,
    pub append_per_second: f64,
    pub command_per_second: f64,
    /// append / raw and command / raw: medians of the per-run ratios.
    pub append_ratio: f64,
    pub command_ratio: f64,
}

/// A directory of database files, removed with everything in it when dropped.
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn run(config: &Config) -> Result<Report, Box<dyn std::error::Error>> {
    let dir =
        TempDir(std::env::temp_dir().join(format!("factum-bench-sqlite-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let (mut raw, mut append, mut command) = (Vec::new(), Vec::new(), Vec::new());
    let (mut append_ratios, mut command_ratios) = (Vec::new(), Vec::new());
    for run in 0..config.runs {
        let mut rates = [0.0; 3];
        for turn in 0..3 {
            let which = (run + turn) % 3;
            let path = dir.0.join(format!("run{run}-{which}.db"));
            let store = SqliteStore::open(&path).await?;
            store.migrate().await?;
            rates[which] = match which {
                0 => raw_inserts(&store, config.events).await?,
                1 => appends(&store, config.events).await?,
                _ => commands(&store, config.events).await?,
            };
            store.pool().close().await;
        }
        eprintln!(
            "run {}: raw {:.0}/s, append {:.0}/s, command {:.0}/s",
            run + 1,
            rates[0],
            rates[1],
            rates[2]
        );
        raw.push(rates[0]);
        append.push(rates[1]);
        command.push(rates[2]);
        append_ratios.push(rates[1] / rates[0]);
        command_ratios.push(rates[2] / rates[0]);
    }
    Ok(Report {
        runs: config.runs,
        events_per_run: config.events,
        raw_insert_per_second: median(&raw),
        append_per_second: median(&append),
        command_per_second: median(&command),
        append_ratio: median(&append_ratios),
        command_ratio: median(&command_ratios),
    })
}

/// The `n`-th deposit's event, as an append writes it.
pub(crate) fn deposit_event(
    n: usize,
) -> Result<NewEvent, Box<dyn std::error::Error + Send + Sync>> {
    let event = bank::AccountEvent::from(bank::MoneyDeposited {
        amount: 100,
        balance_after: 100 * (n as u64 + 1),
    });
    Ok(NewEvent::from_event(&event, &CommandContext::new())?)
}

/// The baseline: the same row an append writes, inserted with no checks.
async fn raw_inserts(
    store: &SqliteStore,
    events: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let started = Instant::now();
    for n in 0..events {
        let event = deposit_event(n).map_err(|e| e.to_string())?;
        let mut transaction = store.pool().begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO events (stream_id, stream_version, aggregate_type, event_id, event_type,
                 schema_version, payload, metadata, correlation_id, causation_id, actor, recorded_at)
             VALUES (?1, ?2, 'BankAccount', ?3, ?4, 1, ?5, '{}', ?6, ?7, NULL, ?8)",
        )
        .bind(format!("acc-{}", n % 100))
        .bind(i64::try_from(n / 100 + 1)?)
        .bind(event.event_id.to_string())
        .bind(event.event_type.as_ref())
        .bind(event.payload.as_str())
        .bind(event.correlation_id.to_string())
        .bind(event.causation_id.to_string())
        .bind(chrono::Utc::now())
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

async fn appends(store: &SqliteStore, events: usize) -> Result<f64, Box<dyn std::error::Error>> {
    let started = Instant::now();
    for n in 0..events {
        store
            .append(
                &format!("acc-{}", n % 100),
                "BankAccount",
                ExpectedVersion::Any,
                vec![deposit_event(n).map_err(|e| e.to_string())?],
            )
            .await?;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

async fn commands(store: &SqliteStore, events: usize) -> Result<f64, Box<dyn std::error::Error>> {
    let accounts = opened_accounts(store, 100).await?;
    let started = Instant::now();
    for n in 0..events {
        accounts
            .execute(&format!("acc-{}", n % 100), Deposit { amount: 100 })
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// A repository with the hot cache over `accounts` accounts (`acc-0`...), opened (not timed).
pub(crate) async fn opened_accounts(
    store: &SqliteStore,
    accounts: usize,
) -> Result<Repository<BankAccount, SqliteStore>, Box<dyn std::error::Error>> {
    let repository = Repository::<BankAccount, _>::new(store.clone())
        .cache(std::num::NonZeroUsize::new(1_000).ok_or("cache size")?);
    for account in 0..accounts {
        repository
            .execute(
                &format!("acc-{account}"),
                OpenAccount {
                    owner: format!("owner {account}"),
                    initial_deposit: 0,
                },
            )
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(repository)
}
