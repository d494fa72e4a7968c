//! The cost of tenant isolation (issue 15): PostgreSQL's row-level security on appends and on
//! feed reads, against the same schema with it turned off, in the same run. Both sides run as
//! an application role that owns nothing (a superuser would bypass the policies, measuring
//! nothing): one tenant's store (`PostgresStore::for_tenant`) on a schema as migrated, and an
//! untenanted store on a schema whose owner turned row-level security off. The same events, the
//! same statements; the only difference is the policy each row passes.

use std::time::{Duration, Instant};

use factum::store::{FeedQuery, PostgresStore};
use factum::testing::postgres::LeastPrivilege;
use factum::{EventStore, ExpectedVersion, FeedPosition, NewEvent, Payload};
use serde::Serialize;

use crate::stats::median;

/// What to run.
pub struct Config {
    pub runs: usize,
    /// Appends per run and side (one event each, one client).
    pub appends: usize,
    /// Streams the appends go to, round-robin.
    pub streams: usize,
    /// Events per feed read.
    pub batch: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub runs: usize,
    pub appends_per_run: usize,
    /// Appends per second: median of the runs, and each run's.
    pub append_plain_per_s: f64,
    pub append_rls_per_s: f64,
    pub append_plain_runs: Vec<f64>,
    pub append_rls_runs: Vec<f64>,
    /// Time per append, row-level security / none: median of the per-run ratios (target ≤ 1.05).
    pub append_ratio: f64,
    pub append_ratios: Vec<f64>,
    /// Events each feed read reads (every event appended), per read.
    pub feed_events: u64,
    pub feed_batch: usize,
    pub feed_plain_per_s: f64,
    pub feed_rls_per_s: f64,
    /// Time per feed read of every event, row-level security / none (target ≤ 1.05).
    pub feed_ratio: f64,
    pub feed_ratios: Vec<f64>,
    /// Correctness, must be 0: events a feed read did not return (or returned too many of).
    pub missing: u64,
}

fn event(n: usize) -> Result<NewEvent, serde_json::Error> {
    Ok(NewEvent::new(
        "Deposited",
        1,
        Payload::encode(&serde_json::json!({ "cents": n, "note": "a deposit of the benchmark" }))?,
    ))
}

/// `appends` one-event appends, round-robin over the streams; the elapsed time.
async fn appends(
    store: &PostgresStore,
    config: &Config,
    run: usize,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    for n in 0..config.appends {
        let stream = format!("acme/s-{}", (run * config.appends + n) % config.streams);
        store
            .append(&stream, "Account", ExpectedVersion::Any, vec![event(n)?])
            .await?;
    }
    Ok(started.elapsed())
}

/// Reads the whole feed in batches; the events read and the elapsed time.
async fn read_feed(
    store: &PostgresStore,
    batch: usize,
) -> Result<(u64, Duration), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut position = FeedPosition::START;
    let mut read = 0;
    loop {
        let page = store
            .read_feed(&FeedQuery::after(position).limit(batch))
            .await?;
        let Some(last) = page.events.last() else {
            break;
        };
        position = last.feed_position();
        read += page.events.len() as u64;
        std::hint::black_box(&page.events);
    }
    Ok((read, started.elapsed()))
}

pub async fn run(config: &Config) -> Result<Report, Box<dyn std::error::Error>> {
    let secured = LeastPrivilege::new().await?;
    let open = LeastPrivilege::new().await?;
    let schema = open.owner().schema().to_owned();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE {schema}.events NO FORCE ROW LEVEL SECURITY;
         ALTER TABLE {schema}.events DISABLE ROW LEVEL SECURITY;
         ALTER TABLE {schema}.snapshots NO FORCE ROW LEVEL SECURITY;
         ALTER TABLE {schema}.snapshots DISABLE ROW LEVEL SECURITY;"
    )))
    .execute(open.owner().pool())
    .await?;
    let rls = secured.application().for_tenant("acme").await?;
    let plain = open.application().clone();

    // Warm-up: every stream exists on both sides, the pools are open.
    let warm = Config {
        appends: config.streams,
        ..*config
    };
    appends(&plain, &warm, 0).await?;
    appends(&rls, &warm, 0).await?;

    let (mut plain_runs, mut rls_runs, mut append_ratios) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..config.runs {
        // Alternate which goes first, so that drift hits both.
        let (p, r) = if run % 2 == 0 {
            let p = appends(&plain, config, run + 1).await?;
            (p, appends(&rls, config, run + 1).await?)
        } else {
            let r = appends(&rls, config, run + 1).await?;
            (appends(&plain, config, run + 1).await?, r)
        };
        plain_runs.push(config.appends as f64 / p.as_secs_f64());
        rls_runs.push(config.appends as f64 / r.as_secs_f64());
        append_ratios.push(r.as_secs_f64() / p.as_secs_f64());
    }

    let stored = (config.streams + config.runs * config.appends) as u64;
    let (mut feed_plain, mut feed_rls, mut feed_ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut missing = 0;
    for run in 0..config.runs {
        let ((pn, p), (rn, r)) = if run % 2 == 0 {
            let p = read_feed(&plain, config.batch).await?;
            (p, read_feed(&rls, config.batch).await?)
        } else {
            let r = read_feed(&rls, config.batch).await?;
            (read_feed(&plain, config.batch).await?, r)
        };
        missing += pn.abs_diff(stored) + rn.abs_diff(stored);
        feed_plain.push(stored as f64 / p.as_secs_f64());
        feed_rls.push(stored as f64 / r.as_secs_f64());
        feed_ratios.push(r.as_secs_f64() / p.as_secs_f64());
    }
    drop((rls, plain));
    drop((secured, open));
    Ok(Report {
        runs: config.runs,
        appends_per_run: config.appends,
        append_plain_per_s: median(&plain_runs),
        append_rls_per_s: median(&rls_runs),
        append_plain_runs: plain_runs,
        append_rls_runs: rls_runs,
        append_ratio: median(&append_ratios),
        append_ratios,
        feed_events: stored,
        feed_batch: config.batch,
        feed_plain_per_s: median(&feed_plain),
        feed_rls_per_s: median(&feed_rls),
        feed_ratio: median(&feed_ratios),
        feed_ratios,
        missing,
    })
}
