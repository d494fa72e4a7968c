//! Projection benchmarks against PostgreSQL, each against a baseline in the same run:
//!
//! - catch-up throughput of the bank's generated `account_balances` projection (the runner,
//!   its checkpoint guard and dead-letter checks, the `#[flush]`) vs a hand-written batched sqlx
//!   loop doing the same reads and writes (same batch size, same two statements per batch, its
//!   own checkpoint in the same transaction), over the same history, alternating which goes
//!   first: once with the runner's batches held at the loop's size, once with the runner's
//!   batches growing while it is behind (from `batch_size` to `max_batch_size`, as a runner
//!   does by default) against the loop at `max_batch_size`;
//! - live lag at a steady append rate: from just before an event's append to the end of the
//!   `#[flush]` of the batch that applies it (the commit follows at once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bank::projections::AccountBalances;
use bank::{AccountClosed, AccountEvent, AccountOpened, Channel, MoneyDeposited, MoneyWithdrawn};
use factum::projection::{HandlerError, Projection, ProjectionRunner, RunsOn};
use factum::store::PostgresStore;
use factum::{CommandContext, EventStore, ExpectedVersion, NewEvent, RecordedEvent, Tx, Uuid};
use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor as _, Row as _};

use crate::stats::{median, millis};

pub struct Config {
    pub url: String,
    pub runs: usize,
    pub accounts: u64,
    pub events: u64,
    pub batch_size: usize,
    /// The size the growing runner's batches reach, and the loop's batches beside it.
    pub max_batch_size: usize,
    pub live_rate: u64,
    pub live_seconds: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub events: u64,
    pub accounts: u64,
    pub batch_size: usize,
    pub max_batch_size: usize,
    pub runs: usize,
    /// The runner's batches held at `batch_size`, against the loop at `batch_size`.
    pub catch_up: CatchUp,
    /// The runner's batches growing from `batch_size` to `max_batch_size` while it is behind
    /// (what a runner does by default), against the loop at `max_batch_size`.
    pub growing: CatchUp,
    pub live: Live,
}

#[derive(Debug, Serialize)]
pub struct CatchUp {
    /// Generated projection, events per second (median of runs).
    pub generated_per_second: f64,
    /// Hand-written loop, events per second (median of runs).
    pub hand_written_per_second: f64,
    pub generated_runs: Vec<f64>,
    pub hand_written_runs: Vec<f64>,
    /// generated / hand-written: the median over runs of the ratio within each run.
    pub ratio: f64,
}

#[derive(Debug, Serialize)]
pub struct Live {
    /// The append rate asked for, events per second.
    pub target_rate: u64,
    /// The rate achieved by the writers.
    pub achieved_rate: f64,
    pub events: u64,
    /// Events whose application was not seen (must be 0).
    pub missing: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub async fn run(config: &Config) -> Result<Report, Box<dyn std::error::Error>> {
    let pool = PgPoolOptions::new()
        .max_connections(12)
        .connect(&config.url)
        .await?;
    let schema = format!("factum_bench_{}_projections", std::process::id());
    let result = measure(config, &pool, &schema).await;
    let drop = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    if let Err(error) = pool.execute(AssertSqlSafe(drop)).await {
        eprintln!("could not drop schema {schema}: {error}");
    }
    result
}

async fn measure(
    config: &Config,
    pool: &PgPool,
    schema: &str,
) -> Result<Report, Box<dyn std::error::Error>> {
    let store = PostgresStore::with_schema(pool.clone(), schema)?;
    store.migrate().await?;
    eprintln!(
        "writing {} events over {} accounts...",
        config.events, config.accounts
    );
    let written = history(&store, config.accounts, config.events).await?;
    // A steady state: hint bits set, statistics known (the first reader of fresh rows would
    // otherwise pay for setting them, whichever side it is).
    sqlx::raw_sql(AssertSqlSafe(format!("VACUUM ANALYZE \"{schema}\".events")))
        .execute(store.pool())
        .await?;

    let table = format!("\"{schema}\".balances");
    let hand_table = format!("\"{schema}\".balances_hand");
    // Each side: the runner's batches from `batch_size` up to its size, the loop's at it.
    let sides = [
        ("batches held", config.batch_size),
        ("batches growing", config.max_batch_size),
    ];
    let mut sittings: Vec<Sitting> = sides.iter().map(|_| Sitting::default()).collect();
    for run in 0..config.runs {
        for (sitting, &(label, size)) in sittings.iter_mut().zip(&sides) {
            let mut generated = 0.0;
            let mut hand = 0.0;
            for turn in 0..2 {
                // Alternate which goes first, so neither always finds the caches warmer.
                if (run + turn) % 2 == 0 {
                    let sizes = (config.batch_size, size);
                    generated = generated_catch_up(&store, &table, sizes, written).await?;
                } else {
                    hand = hand_written_catch_up(&store, &hand_table, size, written).await?;
                }
            }
            same_read_models(&store, &table, &hand_table).await?;
            eprintln!(
                "run {} ({label}): generated {generated:.0} events/s, hand-written {hand:.0} events/s",
                run + 1
            );
            sitting.generated.push(generated);
            sitting.hand_written.push(hand);
        }
    }
    let mut sittings = sittings.into_iter().map(Sitting::report);
    let (Some(catch_up), Some(growing)) = (sittings.next(), sittings.next()) else {
        return Err("no catch-up measured".into());
    };
    let live = live_lag(&store, config).await?;
    Ok(Report {
        events: written,
        accounts: config.accounts,
        batch_size: config.batch_size,
        max_batch_size: config.max_batch_size,
        runs: config.runs,
        catch_up,
        growing,
        live,
    })
}

/// Opens `accounts` accounts, then deposits and withdraws until `events` are stored; returns
/// how many the projection handles (all of them).
async fn history(
    store: &PostgresStore,
    accounts: u64,
    events: u64,
) -> Result<u64, Box<dyn std::error::Error>> {
    let context = CommandContext::new();
    let per_account = events / accounts;
    let mut written = 0;
    for account in 0..accounts {
        let mut balance = 10_000;
        let mut batch = vec![AccountEvent::from(AccountOpened {
            owner: format!("owner {account}"),
            initial_deposit: balance,
        })];
        for i in 1..per_account {
            let amount = 1 + (account * 7 + i * 13) % 50;
            if i % 3 == 0 {
                balance -= amount;
                batch.push(AccountEvent::from(MoneyWithdrawn {
                    amount,
                    balance_after: balance,
                    channel: Channel::Atm,
                }));
            } else if i + 1 == per_account && account % 10 == 0 {
                batch.push(AccountEvent::from(AccountClosed {
                    reason: "moved away".to_owned(),
                }));
            } else {
                balance += amount;
                batch.push(AccountEvent::from(MoneyDeposited {
                    amount,
                    balance_after: balance,
                }));
            }
        }
        let new = batch
            .iter()
            .map(|event| NewEvent::from_event(event, &context))
            .collect::<Result<Vec<_>, _>>()?;
        written += new.len() as u64;
        store
            .append(
                &format!("acc-{account}"),
                "BankAccount",
                ExpectedVersion::NoStream,
                new,
            )
            .await?;
    }
    Ok(written)
}

async fn fresh_table(
    store: &PostgresStore,
    table: &str,
) -> Result<AccountBalances, Box<dyn std::error::Error>> {
    let projection = AccountBalances::new(table);
    let sql = format!(
        "DROP TABLE IF EXISTS {table}; {}",
        projection.create_table()
    );
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(store.pool())
        .await?;
    Ok(projection)
}

/// One side's catch-up rates over the runs, events per second.
#[derive(Default)]
struct Sitting {
    generated: Vec<f64>,
    hand_written: Vec<f64>,
}

impl Sitting {
    fn report(self) -> CatchUp {
        let ratios: Vec<f64> = self
            .generated
            .iter()
            .zip(&self.hand_written)
            .map(|(generated, hand)| generated / hand)
            .collect();
        CatchUp {
            generated_per_second: median(&self.generated),
            hand_written_per_second: median(&self.hand_written),
            generated_runs: self.generated,
            hand_written_runs: self.hand_written,
            ratio: median(&ratios),
        }
    }
}

/// Fails unless the generated and the hand-written read models are the same.
async fn same_read_models(
    store: &PostgresStore,
    table: &str,
    hand_table: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let same: bool = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT NOT EXISTS (
             (SELECT account, owner, balance, deposited, withdrawn, events, closed FROM {table}
              EXCEPT
              SELECT account, owner, balance, deposited, withdrawn, events, closed FROM {hand_table})
             UNION ALL
             (SELECT account, owner, balance, deposited, withdrawn, events, closed FROM {hand_table}
              EXCEPT
              SELECT account, owner, balance, deposited, withdrawn, events, closed FROM {table}))"
    )))
    .fetch_one(store.pool())
    .await?;
    if same {
        Ok(())
    } else {
        Err("the generated and hand-written read models differ".into())
    }
}

/// The generated projection from an empty table and no checkpoint, its batches starting at
/// `sizes.0` events and growing up to `sizes.1` while it is behind; events per second.
async fn generated_catch_up(
    store: &PostgresStore,
    table: &str,
    (batch_size, max_batch_size): (usize, usize),
    expected: u64,
) -> Result<f64, Box<dyn std::error::Error>> {
    let projection = fresh_table(store, table).await?;
    sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM \"{}\".projection_checkpoints",
        store.schema()
    )))
    .execute(store.pool())
    .await?;
    let mut runner = ProjectionRunner::new(store.clone(), projection)
        .batch_size(batch_size)
        .max_batch_size(max_batch_size);
    let started = Instant::now();
    let handled = runner.catch_up().await?;
    let elapsed = started.elapsed();
    if handled != expected {
        return Err(format!("the generated projection handled {handled} of {expected}").into());
    }
    Ok(handled as f64 / elapsed.as_secs_f64())
}

/// The update's columns: account, balance, deposited, withdrawn, events, closed.
type Columns = (
    Vec<String>,
    Vec<i64>,
    Vec<i64>,
    Vec<i64>,
    Vec<i64>,
    Vec<bool>,
);

/// What a hand-written projection keeps per account for a batch.
#[derive(Default)]
struct Change {
    balance: i64,
    deposited: i64,
    withdrawn: i64,
    events: i64,
    closed: bool,
}

fn cents(amount: u64) -> i64 {
    i64::try_from(amount).unwrap_or(i64::MAX)
}

/// A hand-written batched loop doing the same reads and writes as the generated projection:
/// read a batch of the four event types after the checkpoint (below the transaction horizon,
/// computed once per query), decode, add up per account, then in one transaction insert the
/// new accounts, update the changed ones and move the checkpoint. It reads only the five
/// columns it needs, where the runner reads whole envelopes. Events per second.
async fn hand_written_catch_up(
    store: &PostgresStore,
    table: &str,
    batch_size: usize,
    expected: u64,
) -> Result<f64, Box<dyn std::error::Error>> {
    fresh_table(store, table).await?;
    let s = format!("\"{}\"", store.schema());
    let checkpoint_table = format!("{s}.hand_checkpoint");
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {checkpoint_table};
         CREATE TABLE {checkpoint_table} (tx bigint NOT NULL, position bigint NOT NULL);
         INSERT INTO {checkpoint_table} VALUES (0, 0)"
    )))
    .execute(store.pool())
    .await?;
    let read = format!(
        "WITH h AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin)
         SELECT e.tx, e.position, e.stream_id, e.event_type, e.payload
         FROM h, {s}.events e
         WHERE (e.tx, e.position) > ($1::text::xid8, $2)
           AND e.tx < h.xmin
           AND e.event_type = ANY ($3)
         ORDER BY e.tx, e.position LIMIT $4"
    );
    let insert = format!(
        "INSERT INTO {table} (account, owner, balance)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[])"
    );
    let update = format!(
        "UPDATE {table} AS b SET balance = b.balance + c.balance,
             deposited = b.deposited + c.deposited, withdrawn = b.withdrawn + c.withdrawn,
             events = b.events + c.events, closed = b.closed OR c.closed
         FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::bool[])
              AS c (account, balance, deposited, withdrawn, events, closed)
         WHERE b.account = c.account"
    );
    let save = format!("UPDATE {checkpoint_table} SET tx = $1, position = $2");
    let types = vec![
        "AccountOpened",
        "MoneyDeposited",
        "MoneyWithdrawn",
        "AccountClosed",
    ];
    let limit = i64::try_from(batch_size)?;

    let started = Instant::now();
    let (mut tx, mut position) = (0_i64, 0_i64);
    let mut handled = 0_u64;
    loop {
        let rows = sqlx::query(AssertSqlSafe(read.clone()))
            .bind(tx)
            .bind(position)
            .bind(&types)
            .bind(limit)
            .fetch_all(store.pool())
            .await?;
        let Some(last) = rows.last() else { break };
        // The `xid8` as sent (eight bytes, an `int8`) and the `json` as its text, uncast, as
        // the runner reads them.
        (tx, position) = (last.try_get_unchecked(0)?, last.try_get(1)?);
        let mut opened: (Vec<String>, Vec<String>, Vec<i64>) = Default::default();
        let mut changes: HashMap<String, Change> = HashMap::new();
        for row in &rows {
            let account: String = row.try_get(2)?;
            let event_type: &str = row.try_get(3)?;
            let payload: &str = row.try_get_unchecked(4)?;
            match event_type {
                "AccountOpened" => {
                    let event: AccountOpened = serde_json::from_str(payload)?;
                    opened.0.push(account);
                    opened.1.push(event.owner);
                    opened.2.push(cents(event.initial_deposit));
                }
                "MoneyDeposited" => {
                    let event: MoneyDeposited = serde_json::from_str(payload)?;
                    let change = changes.entry(account).or_default();
                    change.balance += cents(event.amount);
                    change.deposited += cents(event.amount);
                    change.events += 1;
                }
                "MoneyWithdrawn" => {
                    let event: MoneyWithdrawn = serde_json::from_str(payload)?;
                    let change = changes.entry(account).or_default();
                    change.balance -= cents(event.amount);
                    change.withdrawn += cents(event.amount);
                    change.events += 1;
                }
                _ => {
                    let _: AccountClosed = serde_json::from_str(payload)?;
                    let change = changes.entry(account).or_default();
                    change.closed = true;
                    change.events += 1;
                }
            }
            handled += 1;
        }
        let mut transaction = store.pool().begin().await?;
        if !opened.0.is_empty() {
            sqlx::query(AssertSqlSafe(insert.clone()))
                .bind(opened.0)
                .bind(opened.1)
                .bind(opened.2)
                .execute(&mut *transaction)
                .await?;
        }
        if !changes.is_empty() {
            let mut columns: Columns = Default::default();
            for (account, change) in changes {
                columns.0.push(account);
                columns.1.push(change.balance);
                columns.2.push(change.deposited);
                columns.3.push(change.withdrawn);
                columns.4.push(change.events);
                columns.5.push(change.closed);
            }
            sqlx::query(AssertSqlSafe(update.clone()))
                .bind(columns.0)
                .bind(columns.1)
                .bind(columns.2)
                .bind(columns.3)
                .bind(columns.4)
                .bind(columns.5)
                .execute(&mut *transaction)
                .await?;
        }
        sqlx::query(AssertSqlSafe(save.clone()))
            .bind(tx)
            .bind(position)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
    }
    let elapsed = started.elapsed();
    if handled != expected {
        return Err(format!("the hand-written loop handled {handled} of {expected}").into());
    }
    Ok(handled as f64 / elapsed.as_secs_f64())
}

/// The bank projection, timed: notes when each live event's batch has been flushed.
struct Timed {
    inner: AccountBalances,
    batch: Vec<Uuid>,
    sent: Arc<Mutex<HashMap<Uuid, Instant>>>,
    lags: Arc<Mutex<Vec<Duration>>>,
}

impl Projection for Timed {
    const NAME: &'static str = "account_balances_live";
    const VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = AccountBalances::EVENT_TYPES;

    async fn handle(&mut self, event: &RecordedEvent, tx: &mut Tx<'_>) -> Result<(), HandlerError> {
        self.batch.push(event.event_id);
        Projection::handle(&mut self.inner, event, tx).await
    }

    async fn flush(&mut self, tx: &mut Tx<'_>) -> Result<(), HandlerError> {
        Projection::flush(&mut self.inner, tx).await?;
        let now = Instant::now();
        let sent = self
            .sent
            .lock()
            .map_err(|_| HandlerError::flush("poisoned"))?;
        let mut lags = self
            .lags
            .lock()
            .map_err(|_| HandlerError::flush("poisoned"))?;
        for id in self.batch.drain(..) {
            if let Some(at) = sent.get(&id) {
                lags.push(now.saturating_duration_since(*at));
            }
        }
        Ok(())
    }

    fn discard(&mut self) {
        self.batch.clear();
        Projection::discard(&mut self.inner);
    }
}

impl RunsOn<PostgresStore> for Timed {}

/// A running projection, caught up, then deposits appended at a steady rate by four writers.
async fn live_lag(
    store: &PostgresStore,
    config: &Config,
) -> Result<Live, Box<dyn std::error::Error>> {
    let table = format!("\"{}\".balances_live", store.schema());
    let sent: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let lags: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let projection = Timed {
        inner: fresh_table(store, &table).await?,
        batch: Vec::new(),
        sent: sent.clone(),
        lags: lags.clone(),
    };
    let runner = ProjectionRunner::new(store.clone(), projection);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async {
        let _ = stopped.await;
    }));
    // Let it catch up with the history first.
    let observer = ProjectionRunner::new(
        store.clone(),
        Timed {
            inner: AccountBalances::new(&table),
            batch: Vec::new(),
            sent: Arc::default(),
            lags: Arc::default(),
        },
    );
    while observer.status().await?.event_lag > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "live: appending {} events/s for {} s...",
        config.live_rate, config.live_seconds
    );
    let writers = 4_u64;
    let per_writer = config.live_rate * config.live_seconds / writers;
    let period = Duration::from_secs_f64(writers as f64 / config.live_rate as f64);
    let started = Instant::now();
    let mut handles = Vec::new();
    for writer in 0..writers {
        let store = store.clone();
        let sent = sent.clone();
        let accounts = config.accounts;
        handles.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let context = CommandContext::new();
            for i in 0..per_writer {
                ticks.tick().await;
                let id = Uuid::now_v7();
                let event = AccountEvent::from(MoneyDeposited {
                    amount: 1,
                    balance_after: 0,
                });
                let new = NewEvent::from_event(&event, &context)?.event_id(id);
                sent.lock()
                    .map_err(|_| "poisoned")?
                    .insert(id, Instant::now());
                let account = format!("acc-{}", (i * writers + writer) % accounts);
                store
                    .append(&account, "BankAccount", ExpectedVersion::Any, vec![new])
                    .await?;
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for handle in handles {
        handle.await?.map_err(|e| e.to_string())?;
    }
    let writing = started.elapsed();
    let events = per_writer * writers;
    let deadline = Instant::now() + Duration::from_secs(30);
    while (lags.lock().map_err(|_| "poisoned")?.len() as u64) < events && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    task.await?.map_err(|e| e.to_string())?;
    let mut lags = lags.lock().map_err(|_| "poisoned")?.clone();
    lags.sort_unstable();
    let at = |p: f64| {
        let rank = ((lags.len() as f64 * p).ceil() as usize).clamp(1, lags.len().max(1));
        lags.get(rank - 1).copied().map_or(0.0, millis)
    };
    Ok(Live {
        target_rate: config.live_rate,
        achieved_rate: events as f64 / writing.as_secs_f64(),
        events,
        missing: events - lags.len() as u64,
        p50_ms: at(0.50),
        p95_ms: at(0.95),
        p99_ms: at(0.99),
        max_ms: lags.last().copied().map_or(0.0, millis),
    })
}
