//! The relay to NATS JetStream, on a `nats-server -js` of the bench's own (file storage):
//!
//! - throughput: `Relay` publishing a stored feed (reading it from PostgreSQL, checkpointing
//!   each batch) vs a plain `async-nats` loop publishing the same messages (the same subjects,
//!   headers, bodies and message ids, built before the clock starts) with the same pipelined
//!   acknowledgements, batch by batch; interleaved, each run into fresh streams. The stream must
//!   then hold every event exactly once (`missing` and `duplicated` must be 0).
//! - latency: events appended at a steady rate while the relay runs; the time from before the
//!   append until a NATS subscriber receives the event (the relay in the same process: its
//!   wake-up is in-process; another process waits for PostgreSQL's `NOTIFY`), and until a
//!   consumer (`factum::consumer`: an ordered JetStream consumer feeding a `#[projection]` of
//!   another PostgreSQL schema, the consuming service's own) has committed it to its read model.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage, stream};
use async_nats::{HeaderMap, HeaderName};
use factum::consumer::{Consumer, JetStreamSource, ProjectionTarget, Target, TargetError};
use factum::relay::{JetStreamSink, Outbound, Relay, RelayState, subject_token};
use factum::testing::nats::NatsServer;
use factum::testing::postgres::TemporaryStore;
use factum::{
    EventStore, ExpectedVersion, FeedPosition, FeedQuery, NewEvent, Payload, RecordedEvent, Uuid,
};
use futures_util::StreamExt as _;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::stats::{median, millis, percentile};

/// The throughput variants, in the order of the report's rates.
const VARIANTS: [&str; 3] = ["relay", "prebuilt", "handwritten"];

pub struct Config {
    pub runs: usize,
    pub events: usize,
    pub batch_size: usize,
    pub rate: u64,
    pub seconds: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub events_per_run: usize,
    pub batch_size: usize,
    pub runs: usize,
    /// Events per second, each run: the relay; `async-nats` publishing messages built before
    /// its clock started; `async-nats` publishing the same messages, built from the events
    /// in memory inside its clock (a hand-written publisher).
    pub relay_runs: Vec<f64>,
    pub prebuilt_runs: Vec<f64>,
    pub handwritten_runs: Vec<f64>,
    /// Medians.
    pub relay_per_second: f64,
    pub prebuilt_per_second: f64,
    pub handwritten_per_second: f64,
    /// Medians of each run's relay / baseline.
    pub ratio_prebuilt: f64,
    pub ratio_handwritten: f64,
    /// Events a stream lacked, or held twice, after a run (must be 0).
    pub missing: u64,
    pub duplicated: u64,
    pub latency: Latency,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub rate: u64,
    pub events: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Appended events the subscriber never received (must be 0).
    pub missing: usize,
    /// From before the append until the consumer's read model committed the event.
    pub consumer_p50_ms: f64,
    pub consumer_p99_ms: f64,
    pub consumer_max_ms: f64,
    /// Appended events the consumer's read model never got (must be 0).
    pub consumer_missing: usize,
    /// Rows of the consumer's read model (must equal `events`: each applied once).
    pub consumer_rows: i64,
}

/// What the bench appends.
#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub struct Pinged {
    pub n: u64,
}

/// The consuming service's read model: a row per event.
#[derive(Debug)]
struct ReadModel {
    table: String,
}

#[factum::projection(name = "bench_latency")]
impl ReadModel {
    #[handle]
    async fn pinged(
        &mut self,
        event: &Pinged,
        envelope: &factum::Envelope,
        tx: &mut factum::Tx<'_>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} (event_id, n) VALUES ($1, $2)",
            self.table
        )))
        .bind(envelope.event_id.to_string())
        .bind(i64::try_from(event.n)?)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// A target that notes when each event of a batch was committed by the target it wraps.
struct Timed<T> {
    inner: T,
    committed: Arc<Mutex<HashMap<Uuid, Instant>>>,
}

impl<T: Target> Target for Timed<T> {
    async fn position(&mut self) -> Result<Option<u64>, TargetError> {
        self.inner.position().await
    }

    async fn apply(
        &mut self,
        events: &[RecordedEvent],
        position: Option<u64>,
    ) -> Result<u64, TargetError> {
        let applied = self.inner.apply(events, position).await?;
        let now = Instant::now();
        let mut committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            committed.entry(event.event_id).or_insert(now);
        }
        Ok(applied)
    }
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

pub async fn run(config: &Config) -> Result<Report, Failure> {
    let server = NatsServer::start()?;
    let client = async_nats::connect(server.url()).await?;
    let context = jetstream::new(client.clone());
    let store = TemporaryStore::new().await?;
    fill(&store, config.events).await?;
    let events = read_all(&store).await?;
    let last = events
        .last()
        .map(RecordedEvent::feed_position)
        .ok_or("no events")?;

    let mut rates: [Vec<f64>; 3] = Default::default();
    let (mut prebuilt_ratios, mut handwritten_ratios) = (Vec::new(), Vec::new());
    let (mut missing, mut duplicated) = (0, 0);
    for run in 0..config.runs {
        let mut rate = [0.0; 3];
        for variant in if run % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] } {
            let name = format!("{}{run}", VARIANTS[variant]);
            let stream = create_stream(&context, &name).await?;
            // Before the clock starts: the baselines' copies of the events (the relay reads them
            // from the store), and the pre-built baseline's messages.
            let owned = (variant == 2).then(|| events.clone());
            let prebuilt = (variant == 1).then(|| plain_messages(&name, events.clone()));
            let began = Instant::now();
            match (prebuilt, owned) {
                (Some(messages), _) => publish_plain(&context, messages, config.batch_size).await?,
                (_, Some(owned)) => {
                    let messages = plain_messages(&name, owned);
                    publish_plain(&context, messages, config.batch_size).await?;
                }
                (None, None) => relay_all(&store, &client, &name, last, config).await?,
            }
            rate[variant] = events.len() as f64 / began.elapsed().as_secs_f64();
            let held = held(&context, &stream).await?;
            let expected = events.len() as u64;
            missing += expected.saturating_sub(held);
            duplicated += held.saturating_sub(expected);
            context.delete_stream(&stream).await?;
        }
        eprintln!(
            "  run {run}: relay {:.0} ev/s, pre-built async-nats {:.0} ev/s, hand-written async-nats {:.0} ev/s",
            rate[0], rate[1], rate[2]
        );
        prebuilt_ratios.push(rate[0] / rate[1]);
        handwritten_ratios.push(rate[0] / rate[2]);
        for (all, one) in rates.iter_mut().zip(rate) {
            all.push(one);
        }
    }
    let latency = latency(&server, config).await?;
    let [relay_runs, prebuilt_runs, handwritten_runs] = rates;
    Ok(Report {
        events_per_run: events.len(),
        batch_size: config.batch_size,
        runs: config.runs,
        relay_per_second: median(&relay_runs),
        prebuilt_per_second: median(&prebuilt_runs),
        handwritten_per_second: median(&handwritten_runs),
        ratio_prebuilt: median(&prebuilt_ratios),
        ratio_handwritten: median(&handwritten_ratios),
        relay_runs,
        prebuilt_runs,
        handwritten_runs,
        missing,
        duplicated,
        latency,
    })
}
/// `events` small events on 100 streams, 100 per append.
async fn fill(store: &TemporaryStore, events: usize) -> Result<(), Failure> {
    let mut n = 0;
    while n < events {
        let batch: Vec<NewEvent> = (n..(n + 100).min(events))
            .map(|i| {
                let payload = Payload::encode(&serde_json::json!({ "n": i }))?;
                Ok::<_, Failure>(NewEvent::new("Pinged", 1, payload))
            })
            .collect::<Result<_, _>>()?;
        n += batch.len();
        let stream = format!("s-{}", (n / 100) % 100);
        store
            .append(&stream, "Probe", ExpectedVersion::Any, batch)
            .await?;
    }
    Ok(())
}

async fn read_all(store: &TemporaryStore) -> Result<Vec<RecordedEvent>, Failure> {
    let mut all = Vec::new();
    let mut query = FeedQuery::from_start().limit(10_000);
    loop {
        let batch = store.read_feed(&query).await?;
        if batch.events.is_empty() {
            return Ok(all);
        }
        query = FeedQuery::after(batch.next).limit(10_000);
        all.extend(batch.events);
    }
}

async fn create_stream(context: &jetstream::Context, name: &str) -> Result<String, Failure> {
    let stream = name.to_uppercase();
    context
        .create_stream(stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{name}.>")],
            ..Default::default()
        })
        .await?;
    Ok(stream)
}

async fn held(context: &jetstream::Context, stream: &str) -> Result<u64, Failure> {
    Ok(context
        .get_stream(stream)
        .await?
        .info()
        .await?
        .state
        .messages)
}

/// The relay from the start of the feed until its checkpoint passes `last` (every event
/// acknowledged), watched through its state: nothing asks the broker meanwhile, as nothing does
/// beside the baseline.
async fn relay_all(
    store: &TemporaryStore,
    client: &async_nats::Client,
    name: &str,
    last: FeedPosition,
    config: &Config,
) -> Result<(), Failure> {
    let sink = JetStreamSink::new(client.clone(), &name.to_uppercase(), name).await?;
    let relay = Relay::new((**store).clone(), name, sink).batch_size(config.batch_size);
    let mut state = relay.state();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));
    let done = tokio::time::timeout(
        Duration::from_secs(300),
        state.wait_for(|state| {
            matches!(state, RelayState::Running { checkpoint } if *checkpoint >= last)
                || matches!(state, RelayState::Stopped)
        }),
    )
    .await
    // The state's guard goes before the relay is stopped (stopping writes the state).
    .is_ok_and(|waited| waited.is_ok());
    let _ = stop.send(());
    task.await??;
    if done {
        Ok(())
    } else {
        Err("the relay did not publish every event".into())
    }
}

/// The relay's messages for `events` (the same subjects, headers, bodies and message ids), as
/// a plain `async-nats` publisher sends them.
fn plain_messages(name: &str, events: Vec<RecordedEvent>) -> Vec<(String, PublishMessage)> {
    let relay: Arc<str> = Arc::from(name);
    events
        .into_iter()
        .map(|event| {
            let subject = format!(
                "{name}.{}.{}",
                subject_token(&event.aggregate_type),
                subject_token(&event.event_type)
            );
            let message = Outbound::new(event, relay.clone());
            let mut headers = HeaderMap::new();
            for (header, value) in message.headers() {
                headers.insert(HeaderName::from_static(header), value.into_owned());
            }
            let publish = PublishMessage::build()
                .payload(message.payload().to_owned().into())
                .headers(headers)
                .message_id(message.event.event_id.to_string());
            (subject, publish)
        })
        .collect()
}

/// Publishes `messages` with `async-nats` alone, `batch` at a time, each batch's
/// acknowledgements awaited in order (as the relay does).
async fn publish_plain(
    context: &jetstream::Context,
    messages: Vec<(String, PublishMessage)>,
    batch: usize,
) -> Result<(), Failure> {
    let mut messages = messages.into_iter();
    loop {
        let mut acks = Vec::with_capacity(batch);
        for (subject, publish) in messages.by_ref().take(batch) {
            acks.push(context.send_publish(subject, publish).await?);
        }
        if acks.is_empty() {
            return Ok(());
        }
        for ack in acks {
            ack.await?;
        }
    }
}

/// Appends at `rate` per second for `seconds` while a relay runs; the time from before each
/// append until a subscriber receives it.
async fn latency(server: &NatsServer, config: &Config) -> Result<Latency, Failure> {
    let store = TemporaryStore::new().await?;
    let client = async_nats::connect(server.url()).await?;
    let context = jetstream::new(client.clone());
    let stream = create_stream(&context, "lat").await?;
    let sent: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let mut subscriber = client.subscribe("lat.>").await?;
    client.flush().await?;
    let (done, mut finished) = oneshot::channel::<()>();
    let receiver = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let message = tokio::select! {
                    message = subscriber.next() => message,
                    _ = &mut finished => None,
                };
                let Some(message) = message else { break };
                let Some(id) = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(factum::relay::headers::EVENT_ID))
                    .and_then(|id| Uuid::parse_str(id.as_str()).ok())
                else {
                    continue;
                };
                let at = sent.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                if let Some(at) = at {
                    latencies.push(at.elapsed());
                }
            }
            latencies
        })
    };
    // The consuming service: its own store (another schema), its read model, its consumer.
    let service = TemporaryStore::new().await?;
    let table = format!("\"{}\".bench_read_model", service.schema());
    factum::testing::execute(
        &*service,
        &format!("CREATE TABLE {table} (event_id text PRIMARY KEY, n bigint NOT NULL)"),
    )
    .await?;
    let committed: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let target = Timed {
        inner: ProjectionTarget::new(
            (*service).clone(),
            "bench",
            ReadModel {
                table: table.clone(),
            },
        ),
        committed: committed.clone(),
    };
    let consumer = Consumer::new(
        "bench",
        JetStreamSource::new(client.clone(), &stream, "lat.>"),
        target,
    );
    let (stop_consumer, consumer_stopped) = oneshot::channel::<()>();
    let consumer = tokio::spawn(consumer.run(async move {
        let _ = consumer_stopped.await;
    }));

    let sink = JetStreamSink::new(client.clone(), &stream, "lat").await?;
    let relay = Relay::new((*store).clone(), "lat", sink);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));
    let total = usize::try_from(config.rate * config.seconds)?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / config.rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut appended_at = HashMap::with_capacity(total);
    for n in 0..total {
        tick.tick().await;
        let event = NewEvent::of(&Pinged {
            n: u64::try_from(n)?,
        })?;
        let at = Instant::now();
        appended_at.insert(event.event_id, at);
        sent.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(event.event_id, at);
        store
            .append(
                &format!("l-{}", n % 50),
                "Probe",
                ExpectedVersion::Any,
                vec![event],
            )
            .await?;
    }
    // Whatever has not arrived a few seconds after the last append is missing.
    let began = Instant::now();
    while !sent.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
        && began.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while committed.lock().unwrap_or_else(|e| e.into_inner()).len() < total
        && began.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    task.await??;
    let _ = stop_consumer.send(());
    consumer.await??;
    let mut consumer_latencies: Vec<Duration> = {
        let committed = committed.lock().unwrap_or_else(|e| e.into_inner());
        appended_at
            .iter()
            .filter_map(|(id, at)| committed.get(id).map(|done| done.duration_since(*at)))
            .collect()
    };
    consumer_latencies.sort_unstable();
    let consumer_missing = total - consumer_latencies.len();
    let rows: Vec<(i64,)> =
        factum::testing::fetch_all(&*service, &format!("SELECT count(*) FROM {table}")).await?;
    let consumer_rows = rows.first().map_or(0, |row| row.0);
    let missing = sent.lock().unwrap_or_else(|e| e.into_inner()).len();
    let _ = done.send(());
    let mut latencies = receiver.await?;
    context.delete_stream(&stream).await?;
    latencies.sort_unstable();
    Ok(Latency {
        rate: config.rate,
        events: total,
        p50_ms: millis(percentile(&latencies, 0.50)),
        p99_ms: millis(percentile(&latencies, 0.99)),
        max_ms: millis(latencies.last().copied().unwrap_or_default()),
        missing,
        consumer_p50_ms: millis(percentile(&consumer_latencies, 0.50)),
        consumer_p99_ms: millis(percentile(&consumer_latencies, 0.99)),
        consumer_max_ms: millis(consumer_latencies.last().copied().unwrap_or_default()),
        consumer_missing,
        consumer_rows,
    })
}
