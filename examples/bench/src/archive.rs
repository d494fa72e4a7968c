//! The cold tier (issue 16) on PostgreSQL: archive throughput (`PostgresStore::archive`:
//! selecting, writing, fsyncing and reading back the Parquet files, recording them and
//! removing the rows), and a projection's rebuild read of the whole feed from the beginning
//! with its older events in the cold tier vs the same feed all hot, in the same run, on the
//! same store: each run reads it hot, archives, reads it again (a fresh store: no file
//! decoded yet) and restores. The cold read must return the hot read's events in the same
//! order (`mismatched`, must be 0).

use std::time::{Duration, Instant};

use factum::archive::ArchiveOptions;
use factum::store::{FeedQuery, PostgresStore};
use factum::testing::postgres::TemporaryStore;
use factum::{EventStore, FeedPosition};
use serde::Serialize;

use crate::stats::median;

pub struct Config {
    pub runs: usize,
    pub events: u64,
    /// Events per feed read.
    pub batch: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub runs: usize,
    pub events: u64,
    /// Events archived per run (every stream keeps its newest).
    pub archived: u64,
    pub files: usize,
    pub bytes: u64,
    /// Archive throughput, events per second: median and each run.
    pub archive_per_s: f64,
    pub archive_runs: Vec<f64>,
    /// Restore throughput, events per second: median and each run.
    pub restore_per_s: f64,
    pub restore_runs: Vec<f64>,
    /// The whole feed read in batches, all hot: events per second, median and each run.
    pub hot_rebuild_per_s: f64,
    pub hot_runs: Vec<f64>,
    /// The same read with the archived events in the cold tier.
    pub cold_rebuild_per_s: f64,
    pub cold_runs: Vec<f64>,
    /// Cold / hot rate: the median of each run's ratio.
    pub cold_vs_hot: f64,
    /// Correctness, must be 0: events of the cold read missing, extra or out of place.
    pub mismatched: u64,
}

/// Reads the whole feed: the event ids in order, and the time it took.
async fn read_all(
    store: &PostgresStore,
    batch: usize,
) -> Result<(Vec<uuid::Uuid>, Duration), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut position = FeedPosition::START;
    let mut ids = Vec::new();
    loop {
        let page = store
            .read_feed(&FeedQuery::after(position).limit(batch))
            .await?;
        position = page.next;
        if page.events.is_empty() {
            return Ok((ids, started.elapsed()));
        }
        ids.extend(page.events.iter().map(|event| event.event_id));
    }
}

pub async fn run(config: &Config) -> Result<Report, Box<dyn std::error::Error>> {
    let temporary = TemporaryStore::new().await?;
    let store: PostgresStore = (*temporary).clone();
    crate::transfer::write_deposits(&store, config.events).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let cut_off = chrono::Utc::now();
    let dir = std::env::temp_dir().join(format!("factum-bench-archive-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    let (mut hot_runs, mut cold_runs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut archive_runs, mut restore_runs) = (Vec::new(), Vec::new());
    let (mut archived, mut files, mut bytes, mut mismatched) = (0, 0, 0, 0);
    for run in 0..config.runs {
        let (hot_ids, hot) = read_all(&store, config.batch).await?;
        let started = Instant::now();
        let report = store.archive(&ArchiveOptions::new(&dir, cut_off)).await?;
        let archiving = started.elapsed();
        archived = report.events;
        files = report.files.len();
        bytes = report.files.iter().map(|file| file.bytes).sum();
        // A fresh store on the same pool: no archive file decoded yet.
        let fresh = PostgresStore::with_schema(store.pool().clone(), store.schema())?;
        let (cold_ids, cold) = read_all(&fresh, config.batch).await?;
        mismatched += if cold_ids == hot_ids {
            0
        } else {
            cold_ids.len().abs_diff(hot_ids.len()).max(1) as u64
        };
        let started = Instant::now();
        for file in &report.files {
            store.restore(file.id).await?;
        }
        let restoring = started.elapsed();
        let events = hot_ids.len() as f64;
        hot_runs.push(events / hot.as_secs_f64());
        cold_runs.push(events / cold.as_secs_f64());
        ratios.push(hot.as_secs_f64() / cold.as_secs_f64());
        archive_runs.push(archived as f64 / archiving.as_secs_f64());
        restore_runs.push(archived as f64 / restoring.as_secs_f64());
        eprintln!(
            "run {}: hot {:.0}/s, archive {:.0}/s, cold {:.0}/s, restore {:.0}/s",
            run + 1,
            hot_runs[run],
            archive_runs[run],
            cold_runs[run],
            restore_runs[run]
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Report {
        runs: config.runs,
        events: config.events,
        archived,
        files,
        bytes,
        archive_per_s: median(&archive_runs),
        archive_runs,
        restore_per_s: median(&restore_runs),
        restore_runs,
        hot_rebuild_per_s: median(&hot_runs),
        hot_runs,
        cold_rebuild_per_s: median(&cold_runs),
        cold_runs,
        cold_vs_hot: median(&ratios),
        mismatched,
    })
}
