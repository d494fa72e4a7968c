//! Consumers in another service, against a real `nats-server` of each test's own: a relay
//! publishes a PostgreSQL store's events to JetStream, and a consumer feeds them into a
//! `#[projection]` of a service with its own SQLite store, each event once — across restarts
//! of the consumer, redeliveries of everything, and a broker restart; a message that is no
//! relayed event stops it with the message named, after everything before it.

use std::error::Error;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use factum::consumer::{
    Consumer, ConsumerError, ConsumerState, JetStreamSource, ProjectionTarget, SourceError,
};
use factum::relay::{JetStreamSink, Relay};
use factum::store::SqliteStore;
use factum::testing as database;
use factum::testing::nats::NatsServer;
use factum::testing::postgres::TemporaryStore;
use factum::testing::sqlite::TemporaryDatabase;
use factum::{Envelope, EventStore, ExpectedVersion, NewEvent, Tx};
use tokio::sync::{oneshot, watch};

const STREAM: &str = "FACTUM_EVENTS";

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub struct Deposited {
    pub cents: i64,
}

/// The other service's read model: each account's balance and how many deposits made it.
#[derive(Debug)]
struct Balances;

#[factum::projection(name = "balances")]
impl Balances {
    #[handle]
    async fn deposited(
        &mut self,
        event: &Deposited,
        envelope: &Envelope,
        tx: &mut Tx<'_>,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        sqlx::query(
            "INSERT INTO balances AS b (account, cents, events) VALUES ($1, $2, 1)
             ON CONFLICT (account) DO UPDATE SET cents = b.cents + excluded.cents,
                                                 events = b.events + 1",
        )
        .bind(envelope.stream_id.as_str())
        .bind(event.cents)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// The producer: a store, a JetStream server of its own with the relay's stream, a relay.
struct Producer {
    server: NatsServer,
    store: TemporaryStore,
    stop: Option<oneshot::Sender<()>>,
    relay: Option<tokio::task::JoinHandle<factum::Result<()>>>,
    relay_state: watch::Receiver<factum::relay::RelayState>,
}

impl Producer {
    async fn start() -> Self {
        let server = NatsServer::start().unwrap();
        let client = async_nats::connect(server.url()).await.unwrap();
        jetstream::new(client.clone())
            .create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec!["factum.>".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        let store = TemporaryStore::new().await.unwrap();
        let sink = JetStreamSink::new(client, STREAM, "factum").await.unwrap();
        let relay = Relay::new((*store).clone(), "consumers", sink)
            .batch_size(100)
            .retry_backoff(Duration::from_millis(20));
        let (stop, stopped) = oneshot::channel::<()>();
        let relay_state = relay.state();
        let relay = tokio::spawn(relay.run(async move {
            let _ = stopped.await;
        }));
        Self {
            server,
            store,
            stop: Some(stop),
            relay: Some(relay),
            relay_state,
        }
    }

    /// `per_account` deposits of 1..=n cents to each of `accounts` accounts, from `from`.
    async fn deposit(&self, accounts: u32, per_account: u32) {
        for account in 0..accounts {
            let events = (1..=per_account)
                .map(|n| {
                    NewEvent::of(&Deposited {
                        cents: i64::from(n),
                    })
                    .unwrap()
                })
                .collect();
            self.store
                .append(
                    &format!("account-{account}"),
                    "Account",
                    ExpectedVersion::Any,
                    events,
                )
                .await
                .unwrap();
        }
    }

    async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.server.url()).await.unwrap()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).unwrap();
        }
        if let Some(relay) = self.relay.take() {
            relay.await.unwrap().unwrap();
        }
    }
}

/// The consuming service's store, with its read model's table.
async fn service() -> TemporaryDatabase {
    let database = TemporaryDatabase::new().await.unwrap();
    database::execute(
        &*database,
        "CREATE TABLE balances (account TEXT PRIMARY KEY, cents INTEGER NOT NULL, events INTEGER NOT NULL)",
    )
    .await
    .unwrap();
    database
}

type Running = (
    watch::Receiver<ConsumerState>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), ConsumerError>>,
);

async fn consume(producer: &Producer, service: &SqliteStore) -> Running {
    let source = JetStreamSource::new(producer.client().await, STREAM, "factum.>");
    let target = ProjectionTarget::new(service.clone(), "balances", Balances);
    let consumer = Consumer::new("balances", source, target)
        .batch_size(64)
        .retry_backoff(Duration::from_millis(20));
    let state = consumer.state();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(consumer.run(async move {
        let _ = stopped.await;
    }));
    (state, stop, task)
}

/// Waits until the consumer's state satisfies `done`.
async fn wait_until(state: &mut watch::Receiver<ConsumerState>, done: impl Fn(u64, u64) -> bool) {
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        state.wait_for(|state| {
            matches!(state, ConsumerState::Running { applied, skipped, .. } if done(*applied, *skipped))
        }),
    )
    .await
    .map(|reached| reached.map(|_| ()));
    let now = state.borrow().clone();
    assert!(
        matches!(outcome, Ok(Ok(()))),
        "the consumer did not get there: {now:?}"
    );
}

/// Each account's (balance, deposits) in the service's read model.
async fn balances(service: &SqliteStore) -> Vec<(String, i64, i64)> {
    database::fetch_all(
        service,
        "SELECT account, cents, events FROM balances ORDER BY account",
    )
    .await
    .unwrap()
}

/// Events the consumer's target counted as applied, over all its runs.
async fn applied(service: &SqliteStore) -> i64 {
    let rows: Vec<(i64,)> = database::fetch_all(service, "SELECT applied FROM consumer_positions")
        .await
        .unwrap();
    rows.first().map_or(0, |row| row.0)
}

/// Every one of `accounts` accounts with `cents` from `events` deposits.
fn expected(accounts: u32, cents: i64, events: i64) -> Vec<(String, i64, i64)> {
    let mut all: Vec<_> = (0..accounts)
        .map(|a| (format!("account-{a}"), cents, events))
        .collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_relayed_event_is_applied_once_across_restarts_and_redeliveries() {
    let producer = Producer::start().await;
    let service = service().await;
    producer.deposit(20, 10).await;

    // A first run applies part, or all, of the 200; stopped, a second resumes after it.
    let (mut state, stop, task) = consume(&producer, &service).await;
    wait_until(&mut state, |applied, _| applied >= 64).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    producer.deposit(20, 5).await;
    let (_state, stop, task) = consume(&producer, &service).await;
    // 20 accounts × 15 deposits: the second run applies what the first did not.
    let mut waited = 0;
    while balances(&service).await != expected(20, 55 + 15, 15) {
        waited += 1;
        assert!(
            waited < 600,
            "the read model is {:?}",
            balances(&service).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        applied(&service).await,
        300,
        "each event once, over both runs"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    // Everything delivered again (the position forgotten): each message is recognised as
    // applied, and the read model does not change.
    database::execute(&*service, "UPDATE consumer_positions SET position = NULL")
        .await
        .unwrap();
    let (mut state, stop, task) = consume(&producer, &service).await;
    wait_until(&mut state, |applied, skipped| {
        applied == 0 && skipped == 300
    })
    .await;
    assert_eq!(balances(&service).await, expected(20, 55 + 15, 15));
    assert_eq!(applied(&service).await, 300);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    // A message no relay published: the consumer applies what comes before it, then stops,
    // naming it, and applies nothing after it.
    producer.deposit(1, 16).await;
    let client = producer.client().await;
    let context = jetstream::new(client.clone());
    // Published once the relay has published the 16 (the stream then holds 316 messages).
    let began = std::time::Instant::now();
    while context
        .get_stream(STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
        < 316
    {
        assert!(began.elapsed() < Duration::from_secs(30), "the relay lags");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    context
        .publish("factum.Account.Deposited", "{\"cents\": 1000}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    producer.deposit(1, 1).await;
    let (_state, _stop, task) = consume(&producer, &service).await;
    let outcome = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the consumer stops at the message")
        .unwrap();
    match outcome {
        Err(ConsumerError::Source(SourceError::Undecodable { at, cause })) => {
            assert!(at.contains("#317"), "{at}");
            assert!(cause.to_string().contains("Factum-"), "{cause}");
        }
        other => panic!("expected the message to be named, got {other:?}"),
    }
    let mut model = expected(20, 55 + 15, 15);
    model[0].1 += 16 * 17 / 2;
    model[0].2 += 16;
    assert_eq!(
        balances(&service).await,
        model,
        "the 16 before it, nothing after it"
    );
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_rides_out_a_broker_restart() {
    let mut producer = Producer::start().await;
    let service = service().await;
    let (mut state, stop, task) = consume(&producer, &service).await;
    producer.deposit(10, 20).await;
    wait_until(&mut state, |applied, _| applied >= 50).await;

    producer.server.kill().unwrap();
    producer.deposit(10, 20).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_millis(500))
            .connect(producer.server.url())
            .await
            .is_err(),
        "the broker was down"
    );
    producer.server.resume().unwrap();

    let mut waited = 0;
    while balances(&service).await != expected(10, 2 * 210, 40) {
        waited += 1;
        if waited == 1200 {
            let client = producer.client().await;
            let info = jetstream::new(client)
                .get_stream(STREAM)
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .state
                .messages;
            panic!(
                "the read model is {:?}; the stream holds {info}; the consumer is {:?}, the relay {:?}",
                balances(&service).await,
                *state.borrow(),
                *producer.relay_state.borrow()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(applied(&service).await, 400, "each event once");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    producer.stop().await;
}
