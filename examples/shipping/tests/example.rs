//! The shipping example: the demo against the README's services (PostgreSQL, NATS with
//! JetStream, Redis: `DATABASE_URL`, `NATS_URL`, `REDIS_URL`, which `./scripts/test` sets), the
//! Redis read model's once-only guard, and the contract test: every message the orders
//! service's relay publishes validates against the catalog's JSON Schema for its type and
//! version.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use factum::consumer::Target;
use factum::relay::{JetStreamSink, Relay, headers};
use factum::testing::nats::NatsServer;
use factum::testing::postgres::TemporaryStore;
use factum::{Payload, RecordedEvent, Repository, Uuid};
use orders::inventory::{AddStock, Inventory, ReserveInventory};
use orders::order::{CancelOrder, CompleteOrder, Order, PlaceOrder};
use orders::shipping::{ShipOrder, Shipment};
use shipping::redis_model::RedisReadModel;
use shipping::{NotificationFeed, Shipping, ShippingFeed};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[test]
fn the_demo_runs_against_the_readme_services() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_shipping"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for line in [
        "o-1: to-ship   ada     12 Analytical Row, London",
        "o-2: cancelled grace   the customer changed her mind",
        "o-4: to-ship   edsger  5 Semaphore Lane, Nuenen",
        "to ship: o-1, o-3, o-4",
        "grace: your order o-2 is placed; it ships to 1 Compiler Way, Arlington",
        "grace: your order o-2 is cancelled (the customer changed her mind)",
        "edsger: your order o-4 is complete",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
}

#[test]
fn a_missing_broker_is_one_clear_line() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_shipping"))
        .env("NATS_URL", "nats://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: NATS is not reachable at nats://127.0.0.1:1")
            && stderr.contains("apt install nats-server"),
        "{stderr}"
    );
}

/// An event as a relay's message carries it (read back from the message's headers), with the
/// orders service's full payload.
fn recorded(stream: &str, version: u64, event_type: &str, payload: Payload) -> RecordedEvent {
    let id = Uuid::now_v7().to_string();
    let version = version.to_string();
    let position = format!("{version}:{version}");
    let values = [
        (headers::EVENT_ID, id.as_str()),
        (headers::EVENT_TYPE, event_type),
        (headers::SCHEMA_VERSION, "1"),
        (headers::STREAM_ID, stream),
        (headers::STREAM_VERSION, version.as_str()),
        (headers::AGGREGATE_TYPE, "Order"),
        (headers::CORRELATION_ID, id.as_str()),
        (headers::CAUSATION_ID, id.as_str()),
        (headers::RECORDED_AT, "2026-11-30T12:00:00Z"),
        (headers::FEED_POSITION, position.as_str()),
    ];
    let lookup = |name: &str| values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    factum::relay::inbound(lookup, payload.as_str().as_bytes()).unwrap()
}

fn placed(id: &str) -> Payload {
    Payload::encode(&orders::order::OrderPlaced {
        order_id: id.into(),
        customer: "ada".into(),
        sku: "book".into(),
        quantity: 1,
        amount: 100,
        card: "4242".into(),
        address: format!("{id} street"),
    })
    .unwrap()
}

#[tokio::test]
async fn the_board_applies_each_event_once() {
    let prefix = format!("shipping-test:{}:", Uuid::now_v7().simple());
    let mut board = RedisReadModel::connect(&redis_url(), &prefix, Shipping)
        .await
        .unwrap();
    let cancelled = Payload::encode(&orders::order::OrderCancelled {
        order_id: "o-1".into(),
        reason: "changed mind".into(),
    })
    .unwrap();
    let first = vec![
        recorded("order-o-1", 1, "OrderPlaced", placed("o-1")),
        recorded("order-o-1", 2, "OrderCancelled", cancelled),
    ];
    assert_eq!(board.apply(&first, Some(2)).await.unwrap(), 2);
    assert_eq!(board.position().await.unwrap(), Some(2));
    // Delivered again, whole: nothing changes.
    assert_eq!(board.apply(&first, Some(2)).await.unwrap(), 0);
    // An old message again beside a new one (a relay's republished batch): only the new one.
    let second = vec![
        recorded("order-o-1", 1, "OrderPlaced", placed("o-1")),
        recorded("order-o-2", 1, "OrderPlaced", placed("o-2")),
        recorded(
            "order-o-2",
            2,
            "OrderCompleted",
            Payload::encode(&serde_json::json!({"order_id": "o-2"})).unwrap(),
        ),
    ];
    assert_eq!(board.apply(&second, Some(5)).await.unwrap(), 1);
    assert_eq!(board.position().await.unwrap(), Some(5));
    assert_eq!(board.to_ship().await.unwrap(), vec!["o-2".to_owned()]);
    let o1 = board.shipment("o-1").await.unwrap().unwrap();
    assert_eq!(
        o1.status, "cancelled",
        "the placement delivered again did not revive it"
    );
    assert_eq!(board.applied().await.unwrap(), 3);
    board.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_relayed_message_validates_against_the_catalog() {
    let server = NatsServer::start().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let context = jetstream::new(client.clone());
    context
        .create_stream(stream::Config {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let store = TemporaryStore::new().await.unwrap();

    // The orders service at work: stock, orders placed, reserved, shipped, cancelled, completed.
    let inventory = Repository::<Inventory, _>::new((*store).clone());
    let orders = Repository::<Order, _>::new((*store).clone());
    let shipments = Repository::<Shipment, _>::new((*store).clone());
    inventory
        .execute(
            "sku-book",
            AddStock {
                sku: "book".into(),
                quantity: 3,
            },
        )
        .await
        .unwrap();
    for (id, address) in [
        ("o-1", "1 Main St"),
        ("o-2", "nowhere"),
        ("o-3", "3 Main St"),
    ] {
        orders
            .execute(
                &orders::order_stream(id),
                PlaceOrder {
                    order_id: id.into(),
                    customer: "ada".into(),
                    sku: "book".into(),
                    quantity: 1,
                    amount: 1_999,
                    card: "4242".into(),
                    address: address.into(),
                },
            )
            .await
            .unwrap();
        inventory
            .execute(
                "sku-book",
                ReserveInventory {
                    order_id: id.into(),
                    sku: "book".into(),
                    quantity: 2,
                },
            )
            .await
            .unwrap();
        shipments
            .execute(
                &orders::shipment_stream(id),
                ShipOrder {
                    order_id: id.into(),
                    address: address.into(),
                },
            )
            .await
            .unwrap();
    }
    orders
        .execute(
            &orders::order_stream("o-2"),
            CancelOrder {
                order_id: "o-2".into(),
                reason: "undeliverable".into(),
            },
        )
        .await
        .unwrap();
    orders
        .execute(
            &orders::order_stream("o-1"),
            CompleteOrder {
                order_id: "o-1".into(),
            },
        )
        .await
        .unwrap();
    let count = format!("SELECT count(*) FROM \"{}\".events", store.schema());
    let stored: Vec<(i64,)> = factum::testing::fetch_all(&*store, &count).await.unwrap();
    let stored = u64::try_from(stored[0].0).unwrap();

    // The relay publishes them all.
    let sink = JetStreamSink::new(client.clone(), "ORDERS", "orders")
        .await
        .unwrap();
    let relay = Relay::new((*store).clone(), "contract", sink);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));
    let mut ordered = context.get_stream("ORDERS").await.unwrap();
    let began = std::time::Instant::now();
    while ordered.info().await.unwrap().state.messages < stored {
        assert!(began.elapsed() < Duration::from_secs(30), "the relay lags");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    // Each message against the schema of its type and version in the committed catalog.
    let catalog = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/events");
    // And its headers against the AsyncAPI document's `RelayHeaders`.
    let asyncapi: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(catalog.join("../asyncapi.json")).unwrap())
            .unwrap();
    let relay_headers =
        jsonschema::validator_for(&asyncapi["components"]["schemas"]["RelayHeaders"]).unwrap();
    let mut checked = BTreeSet::new();
    for sequence in 1..=stored {
        let message = ordered.get_raw_message(sequence).await.unwrap();
        let sent: serde_json::Map<String, serde_json::Value> = message
            .headers
            .iter()
            .filter(|(name, _)| name.to_string().starts_with("Factum-"))
            .map(|(name, values)| (name.to_string(), serde_json::json!(values[0].as_str())))
            .collect();
        let problems: Vec<String> = relay_headers
            .iter_errors(&serde_json::Value::Object(sent.clone()))
            .map(|e| e.to_string())
            .collect();
        assert!(problems.is_empty(), "headers {sent:?}: {problems:?}");
        let header = |name| message.headers.get(name).unwrap().as_str().to_owned();
        let (event_type, version) = (header(headers::EVENT_TYPE), header(headers::SCHEMA_VERSION));
        assert_eq!(
            message.subject.as_str(),
            format!("orders.{}.{event_type}", header(headers::AGGREGATE_TYPE))
        );
        let path = catalog.join(format!("{event_type}.v{version}.schema.json"));
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{event_type} v{version} is not in the catalog ({}): {e}",
                    path.display()
                )
            }))
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&body)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{event_type} v{version} #{sequence}: {errors:?}\n{body}"
        );
        checked.insert(event_type);
    }
    assert_eq!(
        checked.into_iter().collect::<Vec<_>>(),
        [
            "InventoryReservationFailed",
            "InventoryReserved",
            "OrderCancelled",
            "OrderCompleted",
            "OrderPlaced",
            "OrderShipped",
            "ShipmentFailed",
            "StockAdded",
        ],
        "every event type the scenario makes was checked"
    );
    // The check bites: a producer that dropped a field would fail it.
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(catalog.join("OrderPlaced.v1.schema.json")).unwrap(),
    )
    .unwrap();
    let without_address = serde_json::json!({
        "order_id": "o-9", "customer": "ada", "sku": "book", "quantity": 1, "amount": 5, "card": "4242"
    });
    assert!(!jsonschema::is_valid(&schema, &without_address));
}

/// The catalog tells the truth about these services: the events each receives in
/// `schemas/asyncapi.json` are the events its code reads, on the channels its defaults read.
#[test]
fn the_catalog_documents_what_each_service_reads_and_where() {
    let document: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/asyncapi.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let received = |service: &str| -> BTreeSet<(String, String)> {
        document["operations"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(id, _)| id.starts_with(&format!("{service}.receive.")))
            .map(|(_, operation)| {
                let channel = operation["channel"]["$ref"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("#/channels/");
                let channel = &document["channels"][channel];
                let address = channel["address"].as_str().unwrap().to_owned();
                let event = address.rsplit('.').next().unwrap().to_owned();
                (event, address)
            })
            .collect()
    };
    let names = |events: &[factum::EventDescriptor]| -> BTreeSet<String> {
        events.iter().map(|e| e.name.to_owned()).collect()
    };
    let shipping = received("shipping");
    assert_eq!(
        shipping
            .iter()
            .map(|(e, _)| e.clone())
            .collect::<BTreeSet<_>>(),
        names(<ShippingFeed as factum::EventSet>::EVENTS)
    );
    // The shipping service's default subject filter, `orders.Order.>`, covers its channels.
    assert!(
        shipping
            .iter()
            .all(|(_, address)| address.starts_with("orders.Order."))
    );
    let notifications = received("notifications");
    assert_eq!(
        notifications
            .iter()
            .map(|(e, _)| e.clone())
            .collect::<BTreeSet<_>>(),
        names(<NotificationFeed as factum::EventSet>::EVENTS)
    );
    // Its default binding, `orders.Order.#`, covers its channels' routing keys.
    assert!(
        notifications
            .iter()
            .all(|(_, address)| address.starts_with("orders.Order."))
    );
}

/// The services' contracts with the orders service: the committed files are what their own
/// types say they read (regenerated with `FACTUM_WRITE_CONTRACTS=1`), and the orders service's
/// published catalog keeps them (the consumer's CI step; the producer's runs the same files
/// through `factum catalog check --consumer`).
#[test]
fn the_committed_contracts_are_the_services_own_and_the_catalog_keeps_them() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts");
    let published = factum::catalog::published_schemas(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas"),
    )
    .unwrap();
    for contract in [
        shipping::shipping_contract(),
        shipping::notifications_contract(),
    ] {
        let file = dir.join(format!("{}.json", contract.consumer));
        if std::env::var_os("FACTUM_WRITE_CONTRACTS").is_some() {
            std::fs::write(&file, contract.to_json()).unwrap();
        }
        let committed = std::fs::read_to_string(&file).unwrap_or_default();
        assert_eq!(
            committed,
            contract.to_json(),
            "{} is not what the service's types read: run with FACTUM_WRITE_CONTRACTS=1 and commit it",
            file.display()
        );
        let breaks = contract.breaks(
            published
                .iter()
                .map(|(name, version, schema)| (name.as_str(), *version, schema)),
        );
        assert!(breaks.is_empty(), "{breaks:#?}");
    }
}
