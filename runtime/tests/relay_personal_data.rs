//! Personal data through a broker (issue 15): a relay publishes `#[pii]` fields sealed, as
//! stored, so the broker keeps no plaintext; a consumer in another service opens them with the
//! producer's data keys, or reads them as erased without them; once the producer forgets the
//! subject, a consumer replaying the broker's copies reads them as erased. Publishing them
//! opened is an explicit choice. Against a real `nats-server` of the test's own.

use std::error::Error;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use factum::consumer::{Consumer, ConsumerError, ConsumerState, JetStreamSource, ProjectionTarget};
use factum::pii::LocalKeyProvider;
use factum::relay::{JetStreamSink, PersonalData, Relay};
use factum::store::{PostgresStore, SqliteStore};
use factum::testing as database;
use factum::testing::nats::NatsServer;
use factum::testing::postgres::TemporaryStore;
use factum::testing::sqlite::TemporaryDatabase;
use factum::{Envelope, EventStore, ExpectedVersion, NewEvent, Tx};
use tokio::sync::oneshot;

#[path = "support/customer.rs"]
mod customer;

use customer::CustomerRegistered;

/// The other service's read model: each customer's name, email and whether it read erased.
#[derive(Debug)]
struct Customers;

#[factum::projection(name = "customers")]
impl Customers {
    #[handle]
    async fn registered(
        &mut self,
        event: &CustomerRegistered,
        envelope: &Envelope,
        tx: &mut Tx<'_>,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        sqlx::query(
            "INSERT INTO customers (id, name, email, plan, shredded) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(event.customer_id.as_str())
        .bind(event.name.as_str())
        .bind(event.email.as_deref())
        .bind(event.plan.as_str())
        .bind(i64::from(envelope.shredded))
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// id, name, email, plan, shredded (0 or 1).
type Row = (String, String, Option<String>, String, i64);

fn ada(shredded: bool) -> Row {
    if shredded {
        ("ada".into(), "[erased]".into(), None, "pro".into(), 1)
    } else {
        (
            "ada".into(),
            "Ada Lovelace".into(),
            Some("ada@example.com".into()),
            "pro".into(),
            0,
        )
    }
}

/// Ada registers: her name and email sealed in the producer's log.
async fn register_ada(producer: &PostgresStore) {
    let event = CustomerRegistered {
        customer_id: "ada".into(),
        name: "Ada Lovelace".into(),
        email: Some("ada@example.com".into()),
        plan: "pro".into(),
    };
    producer
        .append(
            "customer-ada",
            "Customer",
            ExpectedVersion::NoStream,
            vec![NewEvent::of(&event).unwrap()],
        )
        .await
        .unwrap();
}

/// A JetStream stream taking the subjects under `prefix`.
async fn stream_for(server: &NatsServer, name: &str, prefix: &str) -> jetstream::Context {
    let context = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    context
        .create_stream(stream::Config {
            name: name.into(),
            subjects: vec![format!("{prefix}.>")],
            ..Default::default()
        })
        .await
        .unwrap();
    context
}

/// Runs a relay until the stream `name` holds `count` messages; returns their bodies.
async fn relay(
    server: &NatsServer,
    store: &PostgresStore,
    name: &str,
    prefix: &str,
    personal_data: Option<PersonalData>,
    count: u64,
) -> Vec<String> {
    let context = stream_for(server, name, prefix).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let sink = JetStreamSink::new(client, name, prefix).await.unwrap();
    let mut relay = Relay::new(store.clone(), name, sink).retry_backoff(Duration::from_millis(20));
    if let Some(personal_data) = personal_data {
        relay = relay.personal_data(personal_data);
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));
    let mut stream = context.get_stream(name).await.unwrap();
    let began = std::time::Instant::now();
    while stream.info().await.unwrap().state.messages < count {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "the relay did not publish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let mut bodies = Vec::new();
    for sequence in 1..=count {
        let message = stream.get_raw_message(sequence).await.unwrap();
        bodies.push(String::from_utf8(message.payload.to_vec()).unwrap());
    }
    bodies
}

/// A service's store with the read model's table.
async fn service() -> TemporaryDatabase {
    let database = TemporaryDatabase::new().await.unwrap();
    database::execute(
        &*database,
        "CREATE TABLE customers (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT,
                                 plan TEXT NOT NULL, shredded INTEGER NOT NULL)",
    )
    .await
    .unwrap();
    database
}

/// Consumes the stream `name` into `service` (opening personal data with `keys`, when given)
/// until it applied `count` events; the read model's rows.
async fn consume(
    server: &NatsServer,
    name: &str,
    prefix: &str,
    service: &SqliteStore,
    keys: Option<PostgresStore>,
    count: u64,
) -> Vec<Row> {
    let client = async_nats::connect(server.url()).await.unwrap();
    let source = JetStreamSource::new(client, name, &format!("{prefix}.>"));
    let target = ProjectionTarget::new(service.clone(), "customers", Customers);
    let mut consumer = Consumer::new("customers", source, target);
    if let Some(keys) = keys {
        consumer = consumer.data_keys(keys);
    }
    let mut state = consumer.state();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(consumer.run(async move {
        let _ = stopped.await;
    }));
    let reached = tokio::time::timeout(
        Duration::from_secs(30),
        state.wait_for(
            |state| matches!(state, ConsumerState::Running { applied, .. } if *applied >= count),
        ),
    )
    .await
    .map(|reached| reached.map(|_| ()));
    let now = state.borrow().clone();
    assert!(
        matches!(reached, Ok(Ok(()))),
        "the consumer stalled: {now:?}"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    database::fetch_all(
        service,
        "SELECT id, name, email, plan, shredded FROM customers ORDER BY id",
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_personal_data_stays_sealed_and_is_shredded_on_the_broker_too() {
    let server = NatsServer::start().unwrap();
    let kek = [7; 32];
    let temporary = TemporaryStore::new().await.unwrap();
    let producer = (*temporary)
        .clone()
        .with_key_provider(LocalKeyProvider::new(kek));
    register_ada(&producer).await;

    // By default the broker gets the fields sealed, as stored: no plaintext.
    let sealed = relay(&server, &producer, "SEALED", "sealed", None, 1).await;
    assert!(sealed[0].contains("\"$pii\""), "{}", sealed[0]);
    assert!(
        !sealed[0].contains("Ada") && !sealed[0].contains("ada@example.com"),
        "{}",
        sealed[0]
    );
    assert!(sealed[0].contains("\"plan\":\"pro\""), "{}", sealed[0]);
    // Published opened only when asked for.
    let opened = relay(
        &server,
        &producer,
        "OPENED",
        "opened",
        Some(PersonalData::Opened),
        1,
    )
    .await;
    assert!(
        opened[0].contains("Ada Lovelace") && !opened[0].contains("$pii"),
        "{}",
        opened[0]
    );

    // A service with the producer's data keys (a store on its database, the same provider)
    // reads the data; one without them reads it as erased.
    let keys = temporary
        .another_client()
        .await
        .unwrap()
        .with_key_provider(LocalKeyProvider::new(kek));
    let with_keys = service().await;
    assert_eq!(
        consume(
            &server,
            "SEALED",
            "sealed",
            &with_keys,
            Some(keys.clone()),
            1
        )
        .await,
        [ada(false)]
    );
    let without_keys = service().await;
    assert_eq!(
        consume(&server, "SEALED", "sealed", &without_keys, None, 1).await,
        [ada(true)]
    );

    // Forgotten by the producer: the broker's copy is shredded too, for a service replaying
    // it with the keys' store (a fresh read model, as a rebuild starts). The keys' store of a
    // running service caches a key it found for 30 s, as any other process does; this one
    // starts with an empty cache.
    assert!(producer.forget("ada").await.unwrap());
    let keys = temporary
        .another_client()
        .await
        .unwrap()
        .with_key_provider(LocalKeyProvider::new(kek));
    let rebuilt = service().await;
    assert_eq!(
        consume(&server, "SEALED", "sealed", &rebuilt, Some(keys), 1).await,
        [ada(true)]
    );
}

/// Sealed data that does not open under the consumer's key-encryption key stops the consumer
/// with a typed error, before anything is applied: never garbage, never skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_with_another_key_encryption_key_stops_before_the_event() {
    let server = NatsServer::start().unwrap();
    let temporary = TemporaryStore::new().await.unwrap();
    let producer = (*temporary)
        .clone()
        .with_key_provider(LocalKeyProvider::ephemeral().unwrap());
    register_ada(&producer).await;
    relay(&server, &producer, "SEALED", "sealed", None, 1).await;
    let wrong = temporary
        .another_client()
        .await
        .unwrap()
        .with_key_provider(LocalKeyProvider::ephemeral().unwrap());
    let service = service().await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let source = JetStreamSource::new(client, "SEALED", "sealed.>");
    let target = ProjectionTarget::new((*service).clone(), "customers", Customers);
    let consumer = Consumer::new("customers", source, target).data_keys(wrong);
    let stopped = tokio::time::timeout(
        Duration::from_secs(30),
        consumer.run(std::future::pending()),
    )
    .await
    .expect("the consumer stops by itself");
    assert!(
        matches!(
            &stopped,
            Err(ConsumerError::PersonalData(factum::Error::Pii(_)))
        ),
        "{stopped:?}"
    );
    let rows: Vec<Row> = database::fetch_all(
        &*service,
        "SELECT id, name, email, plan, shredded FROM customers",
    )
    .await
    .unwrap();
    assert!(rows.is_empty());
}
