//! The relay to RabbitMQ and consumers reading from it, against the RabbitMQ server of the
//! machine (`AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`), each test on an
//! exchange and queue of its own, deleted afterwards: events reach a bound queue with their
//! envelope; a consumer applies each once, also when the relay publishes everything again; an
//! event larger than the broker takes is a dead letter; and the crash test: the relay process
//! SIGKILLed at ten random points while publishing 50,000 events, a consumer running
//! throughout applies each exactly once.

use std::error::Error;
use std::time::{Duration, Instant};

use factum::consumer::{Consumer, ConsumerError, ConsumerState, ProjectionTarget, RabbitMqSource};
use factum::relay::{RabbitMqSink, Relay, RelayState};
use factum::store::SqliteStore;
use factum::testing::postgres::TemporaryStore;
use factum::testing::sqlite::TemporaryDatabase;
use factum::testing::{execute, fetch_all};
use factum::{Envelope, EventStore, ExpectedVersion, NewEvent, Tx, Uuid};
use lapin::options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use tokio::sync::{oneshot, watch};

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub struct Pinged {
    pub n: u64,
    pub note: String,
}

fn ping(n: u64) -> NewEvent {
    NewEvent::of(&Pinged {
        n,
        note: String::new(),
    })
    .unwrap()
}

/// The consuming service's read model: one row per event applied; applying one twice violates
/// the primary key, which stops the consumer (and fails the test).
#[derive(Debug)]
struct Applied;

#[factum::projection(name = "applied")]
impl Applied {
    #[handle]
    async fn pinged(
        &mut self,
        _event: &Pinged,
        envelope: &Envelope,
        tx: &mut Tx<'_>,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        sqlx::query(
            "INSERT INTO applied (event_id, stream_id, stream_version) VALUES ($1, $2, $3)",
        )
        .bind(envelope.event_id.to_string())
        .bind(envelope.stream_id.as_str())
        .bind(i64::try_from(envelope.stream_version)?)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// An exchange and a queue bound to it, of the test's own, deleted when it ends.
struct Broker {
    exchange: String,
    queue: String,
    prefix: String,
}

impl Broker {
    fn new() -> Self {
        let id = Uuid::now_v7().simple().to_string();
        Self {
            exchange: format!("factum-test-{id}"),
            queue: format!("factum-test-{id}"),
            prefix: "factum".into(),
        }
    }

    async fn sink(&self) -> RabbitMqSink {
        RabbitMqSink::connect(&amqp_url(), &self.exchange, &self.prefix)
            .await
            .unwrap()
    }

    fn source(&self) -> RabbitMqSource {
        RabbitMqSource::new(&amqp_url(), &self.queue)
            .bind(&self.exchange, &format!("{}.#", self.prefix))
    }

    /// Declares and binds the queue before anything is published.
    async fn bind(&self) {
        let mut source = self.source();
        factum::consumer::Source::resume(&mut source, None)
            .await
            .unwrap();
    }

    /// Messages waiting in the queue.
    async fn depth(&self) -> u32 {
        let connection = lapin::Connection::connect(&amqp_url(), Default::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let queue = channel
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        queue.message_count()
    }

    async fn delete(self) {
        let connection = lapin::Connection::connect(&amqp_url(), Default::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await
            .unwrap();
    }
}

async fn service() -> TemporaryDatabase {
    let database = TemporaryDatabase::new().await.unwrap();
    execute(
        &*database,
        "CREATE TABLE applied (event_id TEXT PRIMARY KEY, stream_id TEXT NOT NULL, stream_version INTEGER NOT NULL)",
    )
    .await
    .unwrap();
    database
}

struct Running<T> {
    state: watch::Receiver<T>,
    stop: oneshot::Sender<()>,
}

fn consume(
    broker: &Broker,
    service: &SqliteStore,
) -> (
    Running<ConsumerState>,
    tokio::task::JoinHandle<Result<(), ConsumerError>>,
) {
    let target = ProjectionTarget::new(service.clone(), "applied", Applied);
    let consumer = Consumer::new("applied", broker.source(), target)
        .batch_size(500)
        .retry_backoff(Duration::from_millis(20));
    let state = consumer.state();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(consumer.run(async move {
        let _ = stopped.await;
    }));
    (Running { state, stop }, task)
}

fn relay(
    store: &TemporaryStore,
    sink: RabbitMqSink,
) -> (
    Running<RelayState>,
    tokio::task::JoinHandle<factum::Result<()>>,
) {
    let relay = Relay::new((**store).clone(), "to-rabbitmq", sink)
        .batch_size(100)
        .retry_backoff(Duration::from_millis(20));
    let state = relay.state();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));
    (Running { state, stop }, task)
}

/// (events applied, streams whose versions are not exactly 1..=n).
async fn applied(service: &SqliteStore) -> (i64, i64) {
    let rows: Vec<(i64, i64)> = fetch_all(
        service,
        "SELECT (SELECT count(*) FROM applied),
                (SELECT count(*) FROM (SELECT stream_id FROM applied GROUP BY stream_id
                                       HAVING max(stream_version) <> count(*)
                                           OR min(stream_version) <> 1))",
    )
    .await
    .unwrap();
    rows[0]
}

async fn wait_for_applied(service: &SqliteStore, count: i64, within: Duration) {
    let began = Instant::now();
    loop {
        let (applied, _) = applied(service).await;
        if applied >= count {
            return;
        }
        assert!(
            began.elapsed() < within,
            "the consumer applied {applied} of {count}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_applies_each_relayed_event_once_even_when_all_are_published_again() {
    let broker = Broker::new();
    broker.bind().await;
    let store = TemporaryStore::new().await.unwrap();
    let service = service().await;
    for stream in 0..20 {
        let events = (0..10).map(|n| ping(stream * 10 + n)).collect();
        store
            .append(
                &format!("s-{stream}"),
                "Probe",
                ExpectedVersion::Any,
                events,
            )
            .await
            .unwrap();
    }
    let (relay_running, relay_task) = relay(&store, broker.sink().await);
    let (consumer, consumer_task) = consume(&broker, &service);
    wait_for_applied(&service, 200, Duration::from_secs(60)).await;
    relay_running.stop.send(()).unwrap();
    relay_task.await.unwrap().unwrap();

    // The relay forgets its checkpoint and publishes all 200 again: the consumer recognises
    // every one, and applies none twice.
    execute(
        &*store,
        &format!(
            "UPDATE \"{}\".relay_checkpoints SET tx = 0, position = 0",
            store.schema()
        ),
    )
    .await
    .unwrap();
    let (relay_running, relay_task) = relay(&store, broker.sink().await);
    let mut state = consumer.state.clone();
    tokio::time::timeout(
        Duration::from_secs(60),
        state.wait_for(
            |state| matches!(state, ConsumerState::Running { skipped, .. } if *skipped == 200),
        ),
    )
    .await
    .expect("the consumer received the 200 again")
    .unwrap();
    assert_eq!(applied(&service).await, (200, 0));
    assert!(
        matches!(
            *consumer.state.borrow(),
            ConsumerState::Running { applied: 200, .. }
        ),
        "{:?}",
        *consumer.state.borrow()
    );
    assert_eq!(broker.depth().await, 0, "every delivery acknowledged");
    relay_running.stop.send(()).unwrap();
    relay_task.await.unwrap().unwrap();
    consumer.stop.send(()).unwrap();
    consumer_task.await.unwrap().unwrap();
    broker.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_larger_than_the_broker_takes_is_a_dead_letter_and_the_others_flow() {
    let broker = Broker::new();
    broker.bind().await;
    let store = TemporaryStore::new().await.unwrap();
    let service = service().await;
    let big = NewEvent::of(&Pinged {
        n: 0,
        note: "x".repeat(4_000),
    })
    .unwrap();
    store
        .append("big", "Probe", ExpectedVersion::Any, vec![big, ping(1)])
        .await
        .unwrap();
    store
        .append(
            "small",
            "Probe",
            ExpectedVersion::Any,
            vec![ping(2), ping(3)],
        )
        .await
        .unwrap();
    let (relay_running, relay_task) = relay(&store, broker.sink().await.max_message_size(2_000));
    let (consumer, consumer_task) = consume(&broker, &service);
    wait_for_applied(&service, 2, Duration::from_secs(60)).await;
    let began = Instant::now();
    while factum::relay::status(&store, "to-rabbitmq")
        .await
        .unwrap()
        .behind
        > 0
    {
        assert!(began.elapsed() < Duration::from_secs(30), "the relay lags");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = factum::relay::status(&store, "to-rabbitmq").await.unwrap();
    let letters: Vec<(String, u64, bool)> = status
        .dead_letters
        .iter()
        .map(|l| (l.stream_id.clone(), l.stream_version, l.error.is_some()))
        .collect();
    assert_eq!(
        letters,
        [("big".to_owned(), 1, true), ("big".to_owned(), 2, false)],
        "the refused event, and the one behind it"
    );
    let streams: Vec<(String,)> = fetch_all(&*service, "SELECT DISTINCT stream_id FROM applied")
        .await
        .unwrap();
    assert_eq!(streams, [("small".to_owned(),)]);
    relay_running.stop.send(()).unwrap();
    relay_task.await.unwrap().unwrap();
    consumer.stop.send(()).unwrap();
    consumer_task.await.unwrap().unwrap();
    broker.delete().await;
}

/// `factum relay rabbitmq` for the test's store and broker, in a process of its own.
fn relay_process(broker: &Broker, store: &TemporaryStore) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_factum"))
        .args(["relay", "rabbitmq", "--name", "crash"])
        .args(["--exchange", &broker.exchange, "--prefix", &broker.prefix])
        .args(["--url", &amqp_url(), "--batch-size", "500"])
        .env("DATABASE_URL", factum::testing::postgres::database_url())
        .env("FACTUM_SCHEMA", store.schema())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Issue 14's crash test, RabbitMQ half: the relay process SIGKILLed at ten random points while
/// it publishes 50,000 events, restarted each time, and a consumer running throughout: every
/// event is delivered at least once, and the consumer's read model applies each exactly once,
/// each stream complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_at_ten_random_points_delivers_each_of_50000_events_and_the_consumer_applies_each_once()
 {
    const EVENTS: u64 = 50_000;
    const STREAMS: u64 = 100;
    let broker = Broker::new();
    broker.bind().await;
    let store = TemporaryStore::new().await.unwrap();
    let service = service().await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for batch in 0..EVENTS / 50 {
                let events = (0..50).map(|n| ping(batch * 50 + n)).collect();
                let stream = format!("s-{}", batch % STREAMS);
                store
                    .append(&stream, "Probe", ExpectedVersion::Any, events)
                    .await
                    .unwrap();
            }
        })
    };
    let (consumer, consumer_task) = consume(&broker, &service);
    let checkpoint = |store: TemporaryStore| async move {
        factum::relay::status(&store, "crash")
            .await
            .map_or(0, |status| status.checkpoint.position)
    };
    let mut relay = relay_process(&broker, &store);
    let mut killed_at = Vec::new();
    // Ten kill points drawn over the run, one in each eleventh of it but the last: each kill
    // falls once the checkpoint passed that position and moved since the relay started (a
    // clock would miss a relay fast enough to finish first).
    let points = (0..10).map(|i| EVENTS * i / 11 + fastrand::u64(EVENTS / 22..EVENTS / 11));
    for point in points {
        let before = checkpoint(store.clone()).await;
        let began = Instant::now();
        loop {
            let now = checkpoint(store.clone()).await;
            if now >= point && now > before || now >= EVENTS {
                break;
            }
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "the relay publishes nothing"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        relay.kill().unwrap(); // SIGKILL
        relay.wait().unwrap();
        killed_at.push(checkpoint(store.clone()).await);
        relay = relay_process(&broker, &store);
    }
    writer.await.unwrap();
    let began = Instant::now();
    while factum::relay::status(&store, "crash").await.unwrap().behind > 0 {
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "the relay's checkpoint lags"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_applied(&service, EVENTS as i64, Duration::from_secs(120)).await;
    relay.kill().unwrap();
    relay.wait().unwrap();

    // The kills fell while events were still being published.
    let last = checkpoint(store.clone()).await;
    let mid_run = killed_at.iter().filter(|&&at| at < last).count();
    assert!(
        mid_run >= 10,
        "only {mid_run} of the kills fell mid-run (checkpoints at each: {killed_at:?})"
    );
    // Each event applied exactly once (the primary key refuses a second), every stream whole.
    assert_eq!(applied(&service).await, (EVENTS as i64, 0));
    let (delivered, skipped) = match *consumer.state.borrow() {
        ConsumerState::Running {
            applied, skipped, ..
        } => (applied + skipped, skipped),
        ref other => panic!("the consumer is {other:?}"),
    };
    assert!(delivered >= EVENTS, "every event delivered at least once");
    eprintln!(
        "crash test: {EVENTS} events, {delivered} deliveries ({skipped} published again by the killed relays and skipped)"
    );
    consumer.stop.send(()).unwrap();
    consumer_task.await.unwrap().unwrap();
    broker.delete().await;
}
