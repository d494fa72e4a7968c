//! The cost of tenant isolation (issue 15): PostgreSQL's row-level security on appends and on
//! feed reads, against the same schema with it turned off, in the same run. Both sides run as
//! an application role that owns nothing (a superuser would bypass the policies, measuring
//! nothing), and both are one tenant's store (`PostgresStore::for_tenant`): on a schema as
//! migrated, and on a schema whose owner turned row-level security off once the store was made
//! (a tenant's store refuses a schema without it). The same events, the same statements (a
//! tenant's feed reads name their tenant, served by the tenant feed index); the only
//! difference is the policy each row passes.
//!
//! Beside them, what tenancy costs a feed read as a whole: an untenanted store reading the
//! same rows of the schema without row-level security (no tenant in its statements, the plain
//! feed index), against the tenant's store under row-level security.
//!
//! Then many tenants in one schema: the tenant feed index (migration 21) measured by its
//! presence, on two schemas filled alike, one whose owner dropped it: what it costs appends,
//! and how much faster a tenant reads its feed past the others' rows.

use std::time::{Duration, Instant};

use factum::store::{FeedQuery, PostgresStore};
use factum::testing::postgres::LeastPrivilege;
use factum::{EventStore, ExpectedVersion, FeedPosition, NewEvent, Payload};
use serde::Serialize;

use crate::stats::median;

/// Whole feed reads on each side before the measured ones (see `run`).
const FEED_WARM_UP_READS: usize = 4;

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
    /// An untenanted store's feed reads of the same rows without row-level security, and the
    /// time of the tenant's under it against them: what tenancy costs a feed read as a whole
    /// (the tenant in the statement, its index, the policy).
    pub feed_untenanted_per_s: f64,
    pub feed_tenancy_ratio: f64,
    pub feed_tenancy_ratios: Vec<f64>,
    /// Many tenants in one schema: what the tenant feed index (`events_tenant_feed_idx`,
    /// migration 21) costs appends and saves a tenant's feed reads.
    pub many: Many,
    /// Correctness, must be 0: events a feed read did not return (or returned too many of).
    pub missing: u64,
}

/// A schema shared by many tenants, with the tenant feed index and without it (dropped by the
/// owner), both as a tenant's store of the application role.
#[derive(Debug, Serialize)]
pub struct Many {
    pub tenants: usize,
    /// Events in the schema, each tenant's interleaved with the others' in chunks.
    pub events: u64,
    /// The reading tenant's share of them.
    pub tenant_events: u64,
    /// One-event appends per second, 1 client: with the index, without, and the time ratio
    /// (median of the per-run ratios).
    pub append_indexed_per_s: f64,
    pub append_unindexed_per_s: f64,
    pub append_ratio: f64,
    pub append_ratios: Vec<f64>,
    /// One tenant's whole feed read in batches, events per second: with the index, without,
    /// and how many times faster with it (median of the per-run ratios).
    pub feed_indexed_per_s: f64,
    pub feed_unindexed_per_s: f64,
    pub feed_speedup: f64,
    pub feed_speedups: Vec<f64>,
    /// The plan's scan of a tenant's feed read on each side (`EXPLAIN`'s first scan node).
    pub plan_indexed: String,
    pub plan_unindexed: String,
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
    let rls = secured.application().for_tenant("acme").await?;
    let plain = open.application().for_tenant("acme").await?;
    let untenanted = open.application().clone();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE {schema}.events NO FORCE ROW LEVEL SECURITY;
         ALTER TABLE {schema}.events DISABLE ROW LEVEL SECURITY;
         ALTER TABLE {schema}.snapshots NO FORCE ROW LEVEL SECURITY;
         ALTER TABLE {schema}.snapshots DISABLE ROW LEVEL SECURITY;"
    )))
    .execute(open.owner().pool())
    .await?;

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

    // As autovacuum would have by now, on both sides alike: the planner knows the tables.
    analyze(&[&secured, &open]).await?;
    let stored = (config.streams + config.runs * config.appends) as u64;
    let (mut feed_plain, mut feed_rls, mut feed_ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut feed_untenanted, mut tenancy_ratios) = (Vec::new(), Vec::new());
    let mut missing = 0;
    // A runner reads the feed on its pool's few connections all day: PostgreSQL plans a
    // prepared statement anew for each of a connection's first five executions, then keeps one
    // generic plan. Measure that steady state, on both sides alike: every connection of each
    // pool past its first reads (the pools rotate their idle connections).
    for _ in 0..FEED_WARM_UP_READS {
        read_feed(&plain, config.batch).await?;
        read_feed(&rls, config.batch).await?;
        read_feed(&untenanted, config.batch).await?;
    }
    for run in 0..config.runs {
        // Alternate the order, so that drift hits every side alike.
        let mut sides = [&plain, &rls, &untenanted];
        if run % 2 == 1 {
            sides.reverse();
        }
        let mut took = Vec::with_capacity(3);
        for side in sides {
            let (read, time) = read_feed(side, config.batch).await?;
            missing += read.abs_diff(stored);
            took.push(time.as_secs_f64());
        }
        if run % 2 == 1 {
            took.reverse();
        }
        let (p, r, u) = (took[0], took[1], took[2]);
        feed_plain.push(stored as f64 / p);
        feed_rls.push(stored as f64 / r);
        feed_untenanted.push(stored as f64 / u);
        feed_ratios.push(r / p);
        tenancy_ratios.push(r / u);
    }
    drop((rls, plain, untenanted));
    drop((secured, open));
    let (many, many_missing) = many_tenants(config).await?;
    missing += many_missing;
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
        feed_untenanted_per_s: median(&feed_untenanted),
        feed_tenancy_ratio: median(&tenancy_ratios),
        feed_tenancy_ratios: tenancy_ratios,
        many,
        missing,
    })
}

/// Gathers the planner's statistics of each schema's event table, as its owner.
async fn analyze(schemas: &[&LeastPrivilege]) -> Result<(), Box<dyn std::error::Error>> {
    for roles in schemas {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ANALYZE {}.events",
            roles.owner().schema()
        )))
        .execute(roles.owner().pool())
        .await?;
    }
    Ok(())
}

/// Tenants sharing the schema of [`many_tenants`].
const TENANTS: usize = 50;
/// Events each tenant appends at a time while filling it.
const CHUNK: usize = 100;

/// Fills two schemas, one with the tenant feed index and one without, with `TENANTS` tenants'
/// events interleaved in chunks, then measures one-event appends and one tenant's feed reads
/// on both (alternating which goes first). Also returns the events missing from the reads.
async fn many_tenants(config: &Config) -> Result<(Many, u64), Box<dyn std::error::Error>> {
    let indexed = LeastPrivilege::new().await?;
    let unindexed = LeastPrivilege::new().await?;
    let schema = unindexed.owner().schema().to_owned();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP INDEX {schema}.events_tenant_feed_idx"
    )))
    .execute(unindexed.owner().pool())
    .await?;
    // Each tenant's `per_tenant` events, in chunks of CHUNK, the tenants taking turns; one
    // schema at a time, each tenant's pool closed after (a pool each: 2 × TENANTS would
    // exceed the server's connections).
    let per_tenant = config.appends.div_ceil(CHUNK) * CHUNK;
    let mut stores = Vec::new();
    for roles in [&indexed, &unindexed] {
        let mut tenants = Vec::new();
        for t in 0..TENANTS {
            tenants.push(roles.application().for_tenant(&format!("t{t}")).await?);
        }
        for chunk in 0..per_tenant / CHUNK {
            for (t, store) in tenants.iter().enumerate() {
                let events = (0..CHUNK).map(event).collect::<Result<Vec<_>, _>>()?;
                store
                    .append(
                        &format!("t{t}/s-{}", chunk % config.streams),
                        "Account",
                        ExpectedVersion::Any,
                        events,
                    )
                    .await?;
            }
        }
        for store in tenants.drain(2..) {
            store.pool().close().await;
        }
        stores.push(tenants);
    }
    // As autovacuum would have by now: the planner knows how the tenants share the table.
    analyze(&[&indexed, &unindexed]).await?;
    let (mut appended_indexed, mut appended_unindexed, mut append_ratios) =
        (Vec::new(), Vec::new(), Vec::new());
    let (mut feed_indexed, mut feed_unindexed, mut feed_speedups) =
        (Vec::new(), Vec::new(), Vec::new());
    let mut missing = 0;
    let mut appended = 0;
    let appends_config = Config {
        streams: config.streams,
        ..*config
    };
    for run in 0..config.runs {
        let (with, without) = (&stores[0][0], &stores[1][0]);
        let (i, u) = if run % 2 == 0 {
            let i = appends(with, &appends_config, run).await?;
            (i, appends(without, &appends_config, run).await?)
        } else {
            let u = appends(without, &appends_config, run).await?;
            (appends(with, &appends_config, run).await?, u)
        };
        appended += config.appends as u64;
        appended_indexed.push(config.appends as f64 / i.as_secs_f64());
        appended_unindexed.push(config.appends as f64 / u.as_secs_f64());
        append_ratios.push(i.as_secs_f64() / u.as_secs_f64());
        // Tenant t1's feed: its own events only, read past the others'.
        let (with, without) = (&stores[0][1], &stores[1][1]);
        let ((iread, i), (uread, u)) = if run % 2 == 0 {
            let i = read_feed(with, config.batch).await?;
            (i, read_feed(without, config.batch).await?)
        } else {
            let u = read_feed(without, config.batch).await?;
            (read_feed(with, config.batch).await?, u)
        };
        let expected = per_tenant as u64;
        missing += iread.abs_diff(expected) + uread.abs_diff(expected);
        feed_indexed.push(expected as f64 / i.as_secs_f64());
        feed_unindexed.push(expected as f64 / u.as_secs_f64());
        feed_speedups.push(u.as_secs_f64() / i.as_secs_f64());
    }
    let plan_indexed = scan_of(&stores[0][1], config.batch).await?;
    let plan_unindexed = scan_of(&stores[1][1], config.batch).await?;
    drop(stores);
    drop((indexed, unindexed));
    Ok((
        Many {
            tenants: TENANTS,
            events: (TENANTS * per_tenant) as u64 + appended,
            tenant_events: per_tenant as u64,
            append_indexed_per_s: median(&appended_indexed),
            append_unindexed_per_s: median(&appended_unindexed),
            append_ratio: median(&append_ratios),
            append_ratios,
            feed_indexed_per_s: median(&feed_indexed),
            feed_unindexed_per_s: median(&feed_unindexed),
            feed_speedup: median(&feed_speedups),
            feed_speedups,
            plan_indexed,
            plan_unindexed,
        },
        missing,
    ))
}

/// The first scan node of the plan of a tenant's feed read, as the store's statement reads
/// (the same predicate: the tenant its session names).
async fn scan_of(
    store: &PostgresStore,
    batch: usize,
) -> Result<String, Box<dyn std::error::Error>> {
    let plan: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "EXPLAIN SELECT e.position FROM {}.events e
         WHERE (e.tx, e.position) > ('0'::xid8, 0)
           AND e.tenant <> '' AND e.tenant = current_setting('factum.tenant', true)
         ORDER BY e.tx, e.position LIMIT {batch}",
        store.schema()
    )))
    .fetch_all(store.pool())
    .await?;
    Ok(plan
        .iter()
        .map(|(line,)| line.trim().trim_start_matches("->").trim())
        .find(|line| line.contains("Scan"))
        .unwrap_or("no scan")
        .to_owned())
}
