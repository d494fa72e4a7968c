//! Bulk import against PostgreSQL's own bulk load, in the same run: the events of a store,
//! exported as JSON Lines (`factum::store::transfer::export`), imported into a fresh store with
//! `PostgresStore::import` (parsing and checking every line, then `COPY`), vs a raw `COPY …
//! FROM STDIN` of the same rows (taken from the source with `COPY … TO STDOUT`, in feed order)
//! into the event table of another fresh store: the same table, indexes and defaults, and none
//! of the parsing or checking. Alternating which goes first in each run.

use std::time::Instant;

use factum::store::{PostgresStore, transfer};
use factum::{CommandContext, EventStore, ExpectedVersion, NewEvent};
use serde::Serialize;
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Executor as _};

use crate::stats::median;

pub struct Config {
    pub url: String,
    pub runs: usize,
    pub events: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub runs: usize,
    pub events: u64,
    /// JSON Lines bytes.
    pub export_bytes: usize,
    /// Export of the whole feed, events per second.
    pub export_per_second: f64,
    /// Raw `COPY` of the same rows, events per second (median of runs), and every run.
    pub raw_copy_per_second: f64,
    pub raw_copy_runs: Vec<f64>,
    /// `PostgresStore::import`, events per second (median of runs), and every run.
    pub import_per_second: f64,
    pub import_runs: Vec<f64>,
    /// import / raw COPY: the median over runs of the ratio within each run.
    pub ratio: f64,
    /// Events missing or extra in an imported store (must be 0).
    pub mismatched: u64,
}

const COLUMNS: &str = "stream_id, stream_version, aggregate_type, event_id, event_type, \
    schema_version, payload, metadata, correlation_id, causation_id, actor, recorded_at";

struct Schemas {
    pool: PgPool,
    created: Vec<String>,
}

impl Schemas {
    async fn store(&mut self) -> Result<PostgresStore, Box<dyn std::error::Error>> {
        let name = format!(
            "factum_bench_{}_transfer_{}",
            std::process::id(),
            self.created.len()
        );
        self.created.push(name.clone());
        let store = PostgresStore::with_schema(self.pool.clone(), &name)?;
        store.migrate().await?;
        Ok(store)
    }

    /// Drops the schemas made after the first (the source).
    async fn drop_targets(&mut self) {
        let targets: Vec<String> = self.created.drain(1..).collect();
        self.drop(targets).await;
    }

    async fn drop_all(&mut self) {
        let all: Vec<String> = self.created.drain(..).collect();
        self.drop(all).await;
    }

    async fn drop(&self, schemas: Vec<String>) {
        for schema in schemas {
            let drop = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
            if let Err(error) = self.pool.execute(AssertSqlSafe(drop)).await {
                eprintln!("could not drop schema {schema}: {error}");
            }
        }
    }
}

pub async fn run(config: &Config) -> Result<Report, Box<dyn std::error::Error>> {
    let pool = PgPool::connect(&config.url).await?;
    let mut schemas = Schemas {
        pool,
        created: Vec::new(),
    };
    let result = measure(config, &mut schemas).await;
    schemas.drop_all().await;
    result
}

async fn measure(
    config: &Config,
    schemas: &mut Schemas,
) -> Result<Report, Box<dyn std::error::Error>> {
    let source = schemas.store().await?;
    write_deposits(&source, config.events).await?;

    let started = Instant::now();
    let mut export = Vec::new();
    transfer::export(&source, None, &mut export, |_| {}).await?;
    let export_per_second = config.events as f64 / started.elapsed().as_secs_f64();

    // The raw rows, in feed order, as COPY writes and reads them.
    let mut raw = Vec::new();
    {
        let mut connection = source.pool().acquire().await?;
        let mut out = connection
            .copy_out_raw(&format!(
                "COPY (SELECT {COLUMNS} FROM \"{}\".events ORDER BY tx, position) TO STDOUT",
                source.schema()
            ))
            .await?;
        use futures_util::StreamExt as _;
        while let Some(chunk) = out.next().await {
            raw.extend_from_slice(&chunk?);
        }
    }

    let (mut raw_runs, mut import_runs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut mismatched = 0;
    for run in 0..config.runs {
        let (mut raw_rate, mut import_rate) = (0.0, 0.0);
        for variant in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
            let target = schemas.store().await?;
            let started = Instant::now();
            if variant == 0 {
                let mut connection = target.pool().acquire().await?;
                let mut copy = connection
                    .copy_in_raw(&format!(
                        "COPY \"{}\".events ({COLUMNS}) FROM STDIN (FORMAT text)",
                        target.schema()
                    ))
                    .await?;
                for chunk in raw.chunks(1 << 20) {
                    copy.send(chunk).await?;
                }
                copy.finish().await?;
                raw_rate = config.events as f64 / started.elapsed().as_secs_f64();
            } else {
                let imported = target.import(&export[..], |_| {}).await?;
                import_rate = config.events as f64 / started.elapsed().as_secs_f64();
                mismatched += imported.abs_diff(config.events);
            }
        }
        eprintln!(
            "run {}: raw COPY {raw_rate:.0} events/s, import {import_rate:.0} events/s",
            run + 1
        );
        raw_runs.push(raw_rate);
        import_runs.push(import_rate);
        ratios.push(import_rate / raw_rate);
        schemas.drop_targets().await;
    }
    Ok(Report {
        runs: config.runs,
        events: config.events,
        export_bytes: export.len(),
        export_per_second,
        raw_copy_per_second: median(&raw_runs),
        raw_copy_runs: raw_runs,
        import_per_second: median(&import_runs),
        import_runs,
        ratio: median(&ratios),
        mismatched,
    })
}

/// Writes `events` bank deposits into `source`, 100 per stream (`acc-0`, `acc-1`...), 100 per
/// append.
pub async fn write_deposits(
    source: &PostgresStore,
    events: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    eprintln!("writing {events} events...");
    let context = CommandContext::new();
    let mut written = 0;
    for stream in 0.. {
        if written >= events {
            break;
        }
        let count = 100.min(events - written);
        let deposits = (0..count)
            .map(|n| {
                let event = bank::AccountEvent::from(bank::MoneyDeposited {
                    amount: n + 1,
                    balance_after: (n + 1) * (n + 2) / 2,
                });
                NewEvent::from_event(&event, &context)
            })
            .collect::<Result<Vec<_>, _>>()?;
        source
            .append(
                &format!("acc-{stream}"),
                "BankAccount",
                ExpectedVersion::Any,
                deposits,
            )
            .await?;
        written += count;
    }
    Ok(())
}
