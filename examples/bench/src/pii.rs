//! The cost of crypto-shredding (issue 15): appends and loads of an event with two `#[pii]`
//! fields, sealed under its subject's data key, against the same event without `#[pii]`, on
//! PostgreSQL, in the same run, each in a schema of its own.

use std::time::{Duration, Instant};

use factum::pii::{KeyProvider as _, LocalKeyProvider};
use factum::store::PostgresStore;
use factum::{EventStore, ExpectedVersion, NewEvent, Repository};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;

use crate::postgres::Schemas;
use crate::stats::{median, median_duration, millis};

/// A customer's contact details, two of them personal data.
#[factum::event]
#[derive(Debug, Clone)]
pub struct ContactRecorded {
    #[pii(subject)]
    pub customer_id: String,
    #[pii(replacement = "[erased]".to_owned())]
    pub name: String,
    #[pii(replacement = "[erased]".to_owned())]
    pub email: String,
    pub visits: u64,
}

/// The same fields, none marked.
#[factum::event]
#[derive(Debug, Clone)]
pub struct ContactNoted {
    pub customer_id: String,
    pub name: String,
    pub email: String,
    pub visits: u64,
}

#[factum::event]
#[derive(Debug, Clone)]
pub enum ContactEvent {
    Recorded(ContactRecorded),
    Noted(ContactNoted),
}

/// What a load folds the events into (every field read, so decoding is not skipped).
#[derive(Debug, Default)]
pub struct Contact {
    bytes: usize,
    visits: u64,
}

#[factum::aggregate(events = ContactEvent)]
impl Contact {
    #[apply]
    fn recorded(&mut self, event: &ContactRecorded) {
        self.bytes += event.name.len() + event.email.len() + event.customer_id.len();
        self.visits += event.visits;
    }

    #[apply]
    fn noted(&mut self, event: &ContactNoted) {
        self.bytes += event.name.len() + event.email.len() + event.customer_id.len();
        self.visits += event.visits;
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub runs: usize,
    pub subjects: usize,
    /// Data subjects' keys the sealed store keeps in memory.
    pub cached_keys: usize,
    pub appends_per_run: usize,
    /// Appends (one event each, one client, `ExpectedVersion::Any`) to subjects whose data key
    /// exists, per second: median of the runs, and each run's.
    pub append_plain_per_s: f64,
    pub append_pii_per_s: f64,
    pub append_pii_runs: Vec<f64>,
    pub append_plain_runs: Vec<f64>,
    /// Time per append, PII / plain: median of the per-run ratios (target ≤ 1.2).
    pub append_ratio: f64,
    /// The first event of a new subject (its data key made, wrapped and stored first), per
    /// second, and its ratio to plain appends.
    pub first_event_per_s: f64,
    pub first_event_ratio: f64,
    /// Loading every subject's stream (no snapshot, no cache; the streams the appends wrote,
    /// `appends × runs / subjects` events each on average), median of the rounds, milliseconds
    /// for all of them; PII / plain, median of the per-round ratios (target ≤ 1.2).
    pub events_per_subject_stream: f64,
    pub load_subjects_plain_ms: f64,
    pub load_subjects_pii_ms: f64,
    pub load_subjects_ratio: f64,
    /// The lowest and highest of the per-round ratios.
    pub load_subjects_ratio_range: [f64; 2],
    /// Events of the long stream.
    pub stream_events: u64,
    /// Loading the long stream (no snapshot, no cache), median of the rounds, milliseconds.
    pub load_plain_ms: f64,
    pub load_pii_ms: f64,
    /// PII / plain, median of the per-round ratios (target ≤ 1.2).
    pub load_ratio: f64,
    pub load_ratio_range: [f64; 2],
    pub load_rounds: usize,
    /// The long stream's rows as the load reads them (the same columns), fetched and
    /// dropped, nothing decoded or opened: what the sealed rows' size alone costs (median of
    /// the rounds, milliseconds; PII / plain, median of the per-round ratios), and the rows'
    /// stored bytes (payload and sealed data) on average.
    pub transfer_plain_ms: f64,
    pub transfer_pii_ms: f64,
    pub transfer_ratio: f64,
    pub transfer_ratio_range: [f64; 2],
    pub row_bytes_plain: f64,
    pub row_bytes_pii: f64,
    /// Correctness, must be 0: rows of the sealed store holding an email in plain, and loads
    /// whose state differs between the two stores.
    pub plaintext_rows: i64,
    pub mismatched_loads: usize,
}

pub struct Config {
    pub url: String,
    pub runs: usize,
    pub subjects: usize,
    pub appends: usize,
    pub stream_events: u64,
    pub load_rounds: usize,
    /// The sealed store's key cache (`None`: the provider's default).
    pub cached_keys: Option<std::num::NonZeroUsize>,
}

fn recorded(customer: usize, visits: u64) -> ContactRecorded {
    ContactRecorded {
        customer_id: format!("customer-{customer}"),
        name: format!("Customer Number {customer}"),
        email: format!("customer.{customer}@example.com"),
        visits,
    }
}

fn noted(customer: usize, visits: u64) -> ContactNoted {
    let recorded = recorded(customer, visits);
    ContactNoted {
        customer_id: recorded.customer_id,
        name: recorded.name,
        email: recorded.email,
        visits,
    }
}

/// `appends` appends round-robin over the subjects' streams; the elapsed time.
async fn appends(
    store: &PostgresStore,
    subjects: usize,
    appends: usize,
    pii: bool,
    offset: usize,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    for i in 0..appends {
        let customer = (offset + i) % subjects;
        let event = if pii {
            NewEvent::of(&recorded(customer, i as u64))?
        } else {
            NewEvent::of(&noted(customer, i as u64))?
        };
        store
            .append(
                &format!("contact-{customer}"),
                "Contact",
                ExpectedVersion::Any,
                vec![event],
            )
            .await?;
    }
    Ok(started.elapsed())
}

async fn load(
    contacts: &Repository<Contact, PostgresStore>,
    id: &str,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let loaded = contacts.load(id).await?;
    let elapsed = started.elapsed();
    std::hint::black_box((loaded.state.bytes, loaded.state.visits));
    Ok(elapsed)
}

/// Loads every subject's stream, one after the other.
async fn load_subjects(
    contacts: &Repository<Contact, PostgresStore>,
    subjects: usize,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    for customer in 0..subjects {
        let loaded = contacts.load(&format!("contact-{customer}")).await?;
        std::hint::black_box(loaded.state.visits);
    }
    Ok(started.elapsed())
}

pub async fn run(config: &Config) -> Result<Report, Box<dyn std::error::Error>> {
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&config.url)
        .await?;
    let mut schemas = Schemas::new(pool);
    let result = measure(config, &mut schemas).await;
    schemas.drop_all().await;
    result
}

async fn measure(
    config: &Config,
    schemas: &mut Schemas,
) -> Result<Report, Box<dyn std::error::Error>> {
    let plain = schemas.store("pii_plain").await?;
    let mut provider = LocalKeyProvider::ephemeral()?;
    if let Some(keys) = config.cached_keys {
        provider = provider.with_cached_keys(keys);
    }
    let cached_keys = provider.cached_keys().get();
    let sealed = schemas
        .store("pii_sealed")
        .await?
        .with_key_provider(provider);
    let subjects = config.subjects.max(1);

    // Warm-up: every subject's stream exists on both sides (and its data key on the sealed
    // one), timed as the cost of a new subject's first event.
    let first_plain = appends(&plain, subjects, subjects, false, 0).await?;
    let first_sealed = appends(&sealed, subjects, subjects, true, 0).await?;

    let (mut plain_runs, mut pii_runs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..config.runs {
        // Alternate which goes first, so that drift hits both.
        let (plain_time, pii_time) = if run % 2 == 0 {
            let p = appends(&plain, subjects, config.appends, false, run).await?;
            (
                p,
                appends(&sealed, subjects, config.appends, true, run).await?,
            )
        } else {
            let s = appends(&sealed, subjects, config.appends, true, run).await?;
            (
                appends(&plain, subjects, config.appends, false, run).await?,
                s,
            )
        };
        plain_runs.push(config.appends as f64 / plain_time.as_secs_f64());
        pii_runs.push(config.appends as f64 / pii_time.as_secs_f64());
        ratios.push(pii_time.as_secs_f64() / plain_time.as_secs_f64());
    }

    // One long stream of each, appended in batches.
    let batch = 500_u64;
    for start in (0..config.stream_events).step_by(batch as usize) {
        let end = (start + batch).min(config.stream_events);
        let plain_events = (start..end)
            .map(|i| NewEvent::of(&noted(7, i)))
            .collect::<Result<Vec<_>, _>>()?;
        let sealed_events = (start..end)
            .map(|i| NewEvent::of(&recorded(7, i)))
            .collect::<Result<Vec<_>, _>>()?;
        plain
            .append("long", "Contact", ExpectedVersion::Any, plain_events)
            .await?;
        sealed
            .append("long", "Contact", ExpectedVersion::Any, sealed_events)
            .await?;
    }
    let plain_contacts = Repository::<Contact, _>::new(plain.clone());
    let sealed_contacts = Repository::<Contact, _>::new(sealed.clone());
    let (mut subjects_plain, mut subjects_pii, mut subjects_ratios) =
        (Vec::new(), Vec::new(), Vec::new());
    for round in 0..config.load_rounds {
        let (p, s) = if round % 2 == 0 {
            let p = load_subjects(&plain_contacts, subjects).await?;
            (p, load_subjects(&sealed_contacts, subjects).await?)
        } else {
            let s = load_subjects(&sealed_contacts, subjects).await?;
            (load_subjects(&plain_contacts, subjects).await?, s)
        };
        subjects_ratios.push(s.as_secs_f64() / p.as_secs_f64());
        subjects_plain.push(p);
        subjects_pii.push(s);
    }
    let (mut load_plain, mut load_pii, mut load_ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut mismatched_loads = 0;
    for _ in 0..3 {
        let (p, s) = (
            plain_contacts.load("long").await?.state,
            sealed_contacts.load("long").await?.state,
        );
        if (p.bytes, p.visits) != (s.bytes, s.visits) || p.bytes == 0 {
            mismatched_loads += 1;
        }
    }
    for round in 0..config.load_rounds {
        let (p, s) = if round % 2 == 0 {
            let p = load(&plain_contacts, "long").await?;
            (p, load(&sealed_contacts, "long").await?)
        } else {
            let s = load(&sealed_contacts, "long").await?;
            (load(&plain_contacts, "long").await?, s)
        };
        load_ratios.push(s.as_secs_f64() / p.as_secs_f64());
        load_plain.push(p);
        load_pii.push(s);
    }
    let (mut transfer_plain, mut transfer_pii, mut transfer_ratios) =
        (Vec::new(), Vec::new(), Vec::new());
    for round in 0..config.load_rounds {
        let (p, s) = if round % 2 == 0 {
            let p = transfer(&plain).await?;
            (p, transfer(&sealed).await?)
        } else {
            let s = transfer(&sealed).await?;
            (transfer(&plain).await?, s)
        };
        transfer_ratios.push(s.as_secs_f64() / p.as_secs_f64());
        transfer_plain.push(p);
        transfer_pii.push(s);
    }

    let plaintext_rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{}\".events WHERE payload::text LIKE '%@example.com%'",
        sealed.schema()
    )))
    .fetch_one(sealed.pool())
    .await?;
    let plain_rate = median(&plain_runs);
    let first_event_per_s = subjects as f64 / first_sealed.as_secs_f64();
    Ok(Report {
        runs: config.runs,
        subjects,
        cached_keys,
        appends_per_run: config.appends,
        append_plain_per_s: plain_rate,
        append_pii_per_s: median(&pii_runs),
        append_pii_runs: pii_runs,
        append_plain_runs: plain_runs,
        append_ratio: median(&ratios),
        first_event_per_s,
        first_event_ratio: first_sealed.as_secs_f64() / first_plain.as_secs_f64(),
        events_per_subject_stream: (subjects + config.runs * config.appends) as f64
            / subjects as f64,
        load_subjects_plain_ms: millis(median_duration(&subjects_plain)),
        load_subjects_pii_ms: millis(median_duration(&subjects_pii)),
        load_subjects_ratio: median(&subjects_ratios),
        load_subjects_ratio_range: range(&subjects_ratios),
        stream_events: config.stream_events,
        load_plain_ms: millis(median_duration(&load_plain)),
        load_pii_ms: millis(median_duration(&load_pii)),
        load_ratio: median(&load_ratios),
        load_ratio_range: range(&load_ratios),
        load_rounds: config.load_rounds,
        transfer_plain_ms: millis(median_duration(&transfer_plain)),
        transfer_pii_ms: millis(median_duration(&transfer_pii)),
        transfer_ratio: median(&transfer_ratios),
        transfer_ratio_range: range(&transfer_ratios),
        row_bytes_plain: row_bytes(&plain).await?,
        row_bytes_pii: row_bytes(&sealed).await?,
        plaintext_rows,
        mismatched_loads,
    })
}

/// Fetches the long stream's rows with the columns a load reads (the store's replay
/// statement), touching the payload and the sealed data and decoding nothing.
async fn transfer(store: &PostgresStore) -> Result<Duration, sqlx::Error> {
    use futures_util::TryStreamExt as _;
    use sqlx::Row as _;
    let started = Instant::now();
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT e.stream_version, nullif(e.aggregate_type, $2), e.event_type, e.schema_version,
                e.payload, e.sealed
         FROM \"{}\".events e WHERE e.stream_id = $1",
        store.schema()
    )))
    .bind("long")
    .bind("Contact")
    .fetch(store.pool());
    let mut bytes = 0;
    while let Some(row) = rows.try_next().await? {
        let payload: &str = row.try_get_unchecked(4)?;
        let sealed: Option<&[u8]> = row.try_get(5)?;
        bytes += payload.len() + sealed.map_or(0, <[u8]>::len);
    }
    std::hint::black_box(bytes);
    Ok(started.elapsed())
}

/// The long stream's stored bytes per row (payload and sealed data), on average.
async fn row_bytes(store: &PostgresStore) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT avg(octet_length(payload::text) + coalesce(octet_length(sealed), 0))::float8
         FROM \"{}\".events WHERE stream_id = 'long'",
        store.schema()
    )))
    .fetch_one(store.pool())
    .await
}

/// The lowest and highest of `values`.
fn range(values: &[f64]) -> [f64; 2] {
    values
        .iter()
        .fold([f64::INFINITY, f64::NEG_INFINITY], |[low, high], &v| {
            [low.min(v), high.max(v)]
        })
}
