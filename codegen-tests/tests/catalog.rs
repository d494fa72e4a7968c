//! The event catalog: up to date in `schemas/`, valid (each schema against the JSON Schema
//! meta-schema, sample events against their schema, the AsyncAPI document against the official
//! AsyncAPI 3.1.0 schema), held in snapshots, and a lock that refuses breaking changes.

use std::path::Path;

use bank::legacy::{MoneyWithdrawnV1, MoneyWithdrawnV2};
use bank::{AccountClosed, AccountOpened, Channel, MoneyDeposited, MoneyWithdrawn};
use factum::catalog::{Catalog, CatalogError, Severity};
use serde_json::{Value, json};

fn examples() -> Catalog {
    example_catalog::catalog()
}

#[test]
fn the_committed_catalog_is_what_the_build_writes() {
    let dir = example_catalog::schemas_dir();
    for (file, content) in examples().files() {
        let path = dir.join(&file);
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|error| {
            panic!("{} is missing ({error}): run `cargo build`", path.display())
        });
        assert_eq!(
            committed,
            content,
            "{} is stale: run `cargo build`",
            file.display()
        );
    }
}

#[test]
fn the_catalog_is_byte_identical_from_build_to_build() {
    assert_eq!(examples().files(), examples().files());
}

#[test]
fn every_event_schema_is_valid_draft_07() {
    for (_, event) in examples().events() {
        let schema = &event.schema.schema;
        assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
        if let Err(error) = jsonschema::meta::validate(schema) {
            panic!("{} v{}: {error}", event.schema.name, event.schema.version);
        }
    }
}

/// Events of every version, as the code would serialize them.
fn samples() -> Vec<(&'static str, u32, Value)> {
    let to_value = |value: serde_json::Result<Value>| value.expect("events serialize");
    vec![
        (
            "AccountOpened",
            1,
            to_value(serde_json::to_value(AccountOpened {
                owner: "Ada".into(),
                initial_deposit: 100,
            })),
        ),
        (
            "MoneyDeposited",
            1,
            to_value(serde_json::to_value(MoneyDeposited {
                amount: 5,
                balance_after: 105,
            })),
        ),
        (
            "MoneyWithdrawn",
            1,
            to_value(serde_json::to_value(MoneyWithdrawnV1 {
                amount: 1,
                balance_after: 4,
            })),
        ),
        (
            "MoneyWithdrawn",
            2,
            to_value(serde_json::to_value(MoneyWithdrawnV2 {
                amount: 100,
                balance_after: 400,
            })),
        ),
        (
            "MoneyWithdrawn",
            3,
            to_value(serde_json::to_value(MoneyWithdrawn {
                amount: 100,
                balance_after: 300,
                channel: Channel::Atm,
            })),
        ),
        (
            "AccountClosed",
            1,
            to_value(serde_json::to_value(AccountClosed {
                reason: "moved".into(),
            })),
        ),
    ]
}

#[test]
fn sample_events_match_their_schema_and_mismatches_are_caught() {
    let catalog = examples();
    let schema_of = |name: &str, version: u32| {
        catalog
            .events()
            .find(|(_, e)| e.schema.name == name && e.schema.version == version)
            .map(|(_, e)| e.schema.schema.clone())
            .unwrap_or_else(|| panic!("{name} v{version} is in the catalog"))
    };
    for (name, version, sample) in samples() {
        let validator =
            jsonschema::validator_for(&schema_of(name, version)).expect("a valid schema");
        let errors: Vec<String> = validator
            .iter_errors(&sample)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{name} v{version}: {errors:?}");
    }
    // The schemas say something: a v3 withdrawal without its channel, or with a string amount,
    // is refused.
    let v3 = jsonschema::validator_for(&schema_of("MoneyWithdrawn", 3)).expect("a valid schema");
    assert!(!v3.is_valid(&json!({ "amount": 1, "balance_after": 2 })));
    assert!(!v3.is_valid(&json!({ "amount": "1", "balance_after": 2, "channel": "atm" })));
    assert!(!v3.is_valid(&json!({ "amount": 1, "balance_after": 2, "channel": "bank robbery" })));
}

#[test]
fn the_asyncapi_document_is_valid_against_the_official_asyncapi_3_schema() {
    let official: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/asyncapi-3.1.0.schema.json"),
        )
        .expect("the official schema is in the repository"),
    )
    .expect("valid JSON");
    let validator = jsonschema::draft7::new(&official).expect("the official schema compiles");
    let document = examples().asyncapi();
    let errors: Vec<String> = validator
        .iter_errors(&document)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");

    // The validator is not vacuous: a document missing its info is refused.
    let mut broken = document.clone();
    broken.as_object_mut().expect("an object").remove("info");
    assert!(!validator.is_valid(&broken));
    let mut bad_payload = document;
    bad_payload["components"]["schemas"]["MoneyWithdrawn"]["required"] = json!(42);
    assert!(!validator.is_valid(&bad_payload));
}

#[test]
fn the_asyncapi_document_has_a_channel_per_aggregate_and_a_message_per_event_version() {
    let document = examples().asyncapi();
    assert_eq!(document["asyncapi"], "3.1.0");
    let channel = &document["channels"]["BankAccount"];
    let messages: Vec<&String> = channel["messages"]
        .as_object()
        .expect("messages")
        .keys()
        .collect();
    assert_eq!(
        messages,
        [
            "AccountClosed.v1",
            "AccountOpened.v1",
            "MoneyDeposited.v1",
            "MoneyWithdrawn.v1",
            "MoneyWithdrawn.v2",
            "MoneyWithdrawn.v3"
        ]
    );
    // Each version's payload is an AsyncAPI Schema object of the components, named after the
    // event (the current version) or the event and its version (older ones).
    let message = &document["components"]["messages"]["MoneyWithdrawn.v1"];
    assert_eq!(
        message["payload"],
        json!({ "$ref": "#/components/schemas/MoneyWithdrawnV1" })
    );
    for (version, name) in [
        ("v1", "MoneyWithdrawnV1"),
        ("v2", "MoneyWithdrawnV2"),
        ("v3", "MoneyWithdrawn"),
    ] {
        let reference = &document["components"]["messages"][format!("MoneyWithdrawn.{version}")]["payload"]
            ["$ref"];
        assert_eq!(reference, &json!(format!("#/components/schemas/{name}")));
        assert_eq!(document["components"]["schemas"][name]["title"], name);
        assert_eq!(
            document["components"]["schemas"][name]["$id"],
            format!("#{name}")
        );
    }
    assert_ne!(
        document["components"]["schemas"]["MoneyWithdrawnV1"],
        document["components"]["schemas"]["MoneyWithdrawnV2"]
    );
    assert_eq!(
        message["correlationId"]["$ref"],
        "#/components/correlationIds/correlationId"
    );
    assert_eq!(
        document["components"]["correlationIds"]["correlationId"]["location"],
        "$message.header#/correlationId"
    );
    // Headers are the envelope, as an `Envelope` serializes (without the event itself).
    let headers = &document["components"]["schemas"]["EventEnvelope"]["properties"];
    let envelope = serde_json::to_value(sample_envelope()).expect("envelopes serialize");
    let mut serialized: Vec<&String> = envelope
        .as_object()
        .expect("an object")
        .keys()
        .filter(|k| *k != "event")
        .collect();
    let mut documented: Vec<&String> = headers.as_object().expect("properties").keys().collect();
    serialized.sort();
    documented.sort();
    assert_eq!(serialized, documented);
    // Payload references resolve inside the document.
    let reference = document["components"]["schemas"]["MoneyWithdrawn"]["properties"]["channel"]
        ["allOf"][0]["$ref"]
        .as_str()
        .expect("a reference");
    let target = reference.trim_start_matches('#');
    assert!(document.pointer(target).is_some(), "{reference} resolves");
}

fn sample_envelope() -> factum::RecordedEvent {
    let store = factum::MemoryStore::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        use factum::EventStore as _;
        let event = factum::NewEvent::new(
            "Pinged",
            1,
            factum::Payload::encode(&json!({})).expect("json"),
        );
        store
            .append("s", "Probe", factum::ExpectedVersion::Any, vec![event])
            .await
            .expect("appended")
            .remove(0)
    })
}

#[test]
fn the_catalog_snapshots() {
    let catalog = examples();
    insta::assert_snapshot!("asyncapi", factum_json(&catalog.asyncapi()));
    for (_, event) in catalog.events() {
        let name = format!("schema_{}_v{}", event.schema.name, event.schema.version);
        insta::assert_snapshot!(name, factum_json(&event.schema.schema));
    }
    insta::assert_snapshot!("markdown", catalog.markdown());
}

fn factum_json(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("JSON")
}

/// Two builds of one event: as published, and as the code now has it.
mod published {
    #[factum::event(name = "ParcelRegistered", version = 2)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct ParcelRegisteredV2 {
        pub tracking: String,
        pub grams: u32,
    }

    #[factum::event(name = "ParcelRegistered")]
    pub struct ParcelRegisteredV1 {
        pub tracking: String,
    }

    #[factum::upcast]
    fn weigh(old: ParcelRegisteredV1) -> ParcelRegisteredV2 {
        ParcelRegisteredV2 {
            tracking: old.tracking,
            grams: 0,
        }
    }

    #[factum::event]
    #[derive(Debug, Clone, PartialEq)]
    pub enum ParcelEvent {
        Registered(ParcelRegisteredV2),
    }

    #[derive(Default)]
    pub struct Parcel;

    #[factum::aggregate(events = ParcelEvent)]
    impl Parcel {
        #[apply]
        fn registered(&mut self, _: &ParcelRegisteredV2) {}
    }
}

/// The same event version, with a field renamed: breaking.
mod renamed {
    #[factum::event(name = "ParcelRegistered", version = 2)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct ParcelRegisteredV2 {
        pub tracking: String,
        pub weight_grams: u32,
    }

    #[factum::event(name = "ParcelRegistered")]
    pub struct ParcelRegisteredV1 {
        pub tracking: String,
    }

    #[factum::upcast]
    fn weigh(old: ParcelRegisteredV1) -> ParcelRegisteredV2 {
        ParcelRegisteredV2 {
            tracking: old.tracking,
            weight_grams: 0,
        }
    }

    #[factum::event]
    #[derive(Debug, Clone, PartialEq)]
    pub enum ParcelEvent {
        Registered(ParcelRegisteredV2),
    }

    #[derive(Default)]
    pub struct Parcel;

    #[factum::aggregate(events = ParcelEvent)]
    impl Parcel {
        #[apply]
        fn registered(&mut self, _: &ParcelRegisteredV2) {}
    }
}

/// The same event version, with a new optional field: compatible.
mod extended {
    #[factum::event(name = "ParcelRegistered", version = 2)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct ParcelRegisteredV2 {
        pub tracking: String,
        pub grams: u32,
        #[serde(default)]
        pub fragile: Option<bool>,
    }

    #[factum::event(name = "ParcelRegistered")]
    pub struct ParcelRegisteredV1 {
        pub tracking: String,
    }

    #[factum::upcast]
    fn weigh(old: ParcelRegisteredV1) -> ParcelRegisteredV2 {
        ParcelRegisteredV2 {
            tracking: old.tracking,
            grams: 0,
            fragile: None,
        }
    }

    #[factum::event]
    #[derive(Debug, Clone, PartialEq)]
    pub enum ParcelEvent {
        Registered(ParcelRegisteredV2),
    }

    #[derive(Default)]
    pub struct Parcel;

    #[factum::aggregate(events = ParcelEvent)]
    impl Parcel {
        #[apply]
        fn registered(&mut self, _: &ParcelRegisteredV2) {}
    }
}

#[test]
fn the_lock_refuses_a_breaking_change_to_a_published_version() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let published = Catalog::new("Parcels", "1.0.0").aggregate::<published::Parcel>();
    let changes = published.write_to(dir.path()).expect("a first publication");
    assert!(changes.iter().all(|c| c.severity == Severity::Added));
    let locked = std::fs::read_to_string(dir.path().join("events/ParcelRegistered.v2.schema.json"))
        .expect("published");

    let error = Catalog::new("Parcels", "1.0.1")
        .aggregate::<renamed::Parcel>()
        .write_to(dir.path())
        .expect_err("a renamed field breaks version 2");
    let CatalogError::Breaking(breaking) = &error else {
        panic!("expected breaking changes, got {error:?}");
    };
    let what: Vec<&str> = breaking.0.iter().map(|c| c.what.as_str()).collect();
    assert_eq!(
        what,
        [
            "field `grams` was removed (or renamed)",
            "field `weight_grams` was added as required"
        ]
    );
    assert!(
        breaking
            .0
            .iter()
            .all(|c| c.event == "ParcelRegistered" && c.version == 2)
    );
    let message = error.to_string();
    assert!(
        message.contains("`ParcelRegistered` version 2: field `grams` was removed (or renamed)"),
        "{message}"
    );
    assert!(
        message.contains("add version 3 with the change, and an #[upcast] from 2 to 3"),
        "{message}"
    );
    let after = std::fs::read_to_string(dir.path().join("events/ParcelRegistered.v2.schema.json"))
        .expect("still there");
    assert_eq!(after, locked, "a refused catalog writes nothing");
}

#[test]
fn the_lock_takes_a_compatible_change() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    Catalog::new("Parcels", "1.0.0")
        .aggregate::<published::Parcel>()
        .write_to(dir.path())
        .expect("a first publication");
    let extended = Catalog::new("Parcels", "1.1.0").aggregate::<extended::Parcel>();
    let changes = extended
        .write_to(dir.path())
        .expect("an optional field is compatible");
    let compatible: Vec<String> = changes
        .iter()
        .filter(|c| c.severity == Severity::Compatible)
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        compatible,
        ["`ParcelRegistered` version 2: field `fragile` was added (optional) (compatible)"]
    );
    let updated =
        std::fs::read_to_string(dir.path().join("events/ParcelRegistered.v2.schema.json"))
            .expect("written");
    assert!(updated.contains("fragile"), "the lock is updated");
    assert!(
        extended
            .check(dir.path())
            .expect("now in the lock")
            .iter()
            .all(|c| c.severity != Severity::Breaking)
    );
}

#[test]
fn the_saga_receives_events_of_four_aggregates_and_sends_commands_in_the_flow() {
    let catalog = examples();
    let document = catalog.asyncapi();
    let operations = document["operations"].as_object().expect("operations");
    let saga_operations: Vec<&String> = operations
        .keys()
        .filter(|k| k.starts_with("saga."))
        .collect();
    assert_eq!(
        saga_operations,
        [
            "saga.order_fulfillment.v1.Inventory",
            "saga.order_fulfillment.v1.Order",
            "saga.order_fulfillment.v1.Payment",
            "saga.order_fulfillment.v1.Shipment"
        ]
    );
    let payment = &operations["saga.order_fulfillment.v1.Payment"];
    assert_eq!(payment["action"], "receive");
    let received: Vec<&str> = payment["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["$ref"].as_str().expect("a reference"))
        .collect();
    assert_eq!(
        received,
        [
            "#/channels/Payment/messages/PaymentDeclined.v1",
            "#/channels/Payment/messages/PaymentProcessed.v1"
        ]
    );
    assert!(
        payment["summary"]
            .as_str()
            .expect("a summary")
            .contains("sends ReserveInventory, ReleaseInventory, ProcessPayment")
    );
    let markdown = catalog.markdown();
    for arrow in [
        "event_OrderPlaced --> saga_order_fulfillment",
        "saga_order_fulfillment --> command_ReserveInventory",
        "command_ReserveInventory[/\"ReserveInventory\"/] --> aggregate_Inventory",
        "saga_order_fulfillment --> command_CancelOrder",
    ] {
        assert!(markdown.contains(arrow), "{arrow}");
    }
}

/// The official AsyncAPI parser (`@asyncapi/parser`, pinned in `tools/asyncapi-parser`,
/// installed with `npm ci` on first use) accepts the committed document with no diagnostic of
/// any severity (the document is on AsyncAPI 3.1.0, the newest version it knows).
#[test]
fn the_official_asyncapi_parser_reports_no_diagnostic() {
    let tool = node_tool("asyncapi-parser", "@asyncapi/parser");
    let document = example_catalog::schemas_dir().join(Catalog::ASYNCAPI_FILE);
    let (stdout, lines) = run_node(&tool.join("check.mjs"), &[&document]);
    assert_eq!(lines.last(), Some(&json!({ "parsed": true })), "{stdout}");
    assert_eq!(lines.len(), 1, "diagnostics: {stdout}");
}

#[test]
fn the_asyncapi_document_describes_the_relays_real_subjects_routing_keys_and_consumers() {
    let document = examples().asyncapi();
    assert_eq!(document["servers"]["nats"]["protocol"], "nats");
    assert_eq!(document["servers"]["rabbitmq"]["protocol"], "amqp");
    // The store's channels are on the store, not on a broker.
    assert_eq!(
        document["channels"]["Order"]["servers"],
        json!([{ "$ref": "#/servers/store" }])
    );
    // A channel per relayed event type, addressed as the relay publishes it.
    let nats = &document["channels"]["orders-to-nats.Order.OrderPlaced"];
    assert_eq!(nats["address"], "orders.Order.OrderPlaced");
    assert_eq!(nats["servers"], json!([{ "$ref": "#/servers/nats" }]));
    let amqp = &document["channels"]["orders-to-rabbitmq.Order.OrderCancelled"];
    assert_eq!(amqp["address"], "orders.Order.OrderCancelled");
    assert_eq!(amqp["bindings"]["amqp"]["is"], "routingKey");
    assert_eq!(amqp["bindings"]["amqp"]["exchange"]["name"], "orders");
    assert_eq!(amqp["bindings"]["amqp"]["exchange"]["type"], "topic");
    // Only the relayed aggregate's events.
    let relayed: Vec<&String> = document["channels"]
        .as_object()
        .expect("channels")
        .keys()
        .filter(|k| k.starts_with("orders-to-nats."))
        .collect();
    assert_eq!(
        relayed,
        [
            "orders-to-nats.Order.OrderCancelled",
            "orders-to-nats.Order.OrderCompleted",
            "orders-to-nats.Order.OrderPlaced"
        ]
    );
    // Relayed messages carry the broker headers the relay sets, and the stored payload.
    let message = &document["components"]["messages"]["OrderPlaced.v1.relayed"];
    assert_eq!(
        message["payload"]["$ref"],
        "#/components/messages/OrderPlaced.v1/payload"
    );
    let relay_headers = &document["components"]["schemas"]["RelayHeaders"]["properties"];
    for name in [
        factum::relay::headers::EVENT_ID,
        factum::relay::headers::SCHEMA_VERSION,
        factum::relay::headers::FEED_POSITION,
    ] {
        assert!(relay_headers.get(name).is_some(), "{name} is documented");
    }
    // The relay sends; the consuming services receive what they read.
    let send = &document["operations"]["orders-to-nats.publish.Order.OrderPlaced"];
    assert_eq!(send["action"], "send");
    assert_eq!(send["x-factum-jetstream"]["stream"], "ORDERS");
    let receive = &document["operations"]["shipping.receive.orders-to-nats.Order.OrderPlaced"];
    assert_eq!(receive["action"], "receive");
    assert_eq!(
        receive["channel"]["$ref"],
        "#/channels/orders-to-nats.Order.OrderPlaced"
    );
    assert!(
        document["operations"]
            .get("shipping.receive.orders-to-nats.Order.OrderCompleted")
            .is_none(),
        "shipping does not read OrderCompleted"
    );
    assert_eq!(
        document["operations"]["notifications.receive.orders-to-rabbitmq.Order.OrderCompleted"]["bindings"]
            ["amqp"]["ack"],
        true
    );
}

/// Relays publish personal data sealed, as stored: the relayed message of an event with `#[pii]`
/// fields has the sealed form as its payload (the personal fields in one `$pii` property), a
/// payload a real store sealed validates against it and not against the plain schema, and the
/// official parser still reports nothing.
#[tokio::test]
async fn a_relayed_event_with_personal_data_is_described_sealed() {
    use factum::catalog::{Broker, RelayRoute};
    use factum::store::SqliteStore;
    use factum::{EventStore, ExpectedVersion, NewEvent};
    let catalog = Catalog::new("t", "1")
        .aggregate::<bank::customers::Customer>()
        .broker(Broker::nats("nats", "127.0.0.1:4222"))
        .relay(RelayRoute::jetstream(
            "to-nats",
            "nats",
            "CUSTOMERS",
            "bank",
        ));
    let document = catalog.asyncapi();
    let message = &document["components"]["messages"]["CustomerOnboarded.v1.relayed"];
    assert_eq!(
        message["payload"]["$ref"],
        "#/components/schemas/CustomerOnboardedSealed"
    );
    let sealed = &document["components"]["schemas"]["CustomerOnboardedSealed"];
    let properties = sealed["properties"].as_object().unwrap();
    assert!(properties.contains_key("$pii") && properties.contains_key("customer_id"));
    assert!(!properties.contains_key("name") && !properties.contains_key("email"));
    // The store's own message still describes the event as applications read it.
    assert_eq!(
        document["components"]["messages"]["CustomerOnboarded.v1"]["payload"]["$ref"],
        "#/components/schemas/CustomerOnboarded"
    );

    // What a store seals (and a relay publishes) validates against the sealed form only.
    let store = SqliteStore::in_memory()
        .await
        .unwrap()
        .with_key_provider(factum::pii::LocalKeyProvider::ephemeral().unwrap());
    store.migrate().await.unwrap();
    let onboarded = bank::customers::CustomerOnboarded {
        customer_id: "ada".into(),
        name: "Ada Lovelace".into(),
        email: Some("ada@example.com".into()),
    };
    store
        .append(
            "customer-ada",
            "Customer",
            ExpectedVersion::NoStream,
            vec![NewEvent::of(&onboarded).unwrap()],
        )
        .await
        .unwrap();
    let stored: Vec<(String,)> = factum::testing::fetch_all(&store, "SELECT payload FROM events")
        .await
        .unwrap();
    let stored: Value = serde_json::from_str(&stored[0].0).unwrap();
    let validates = |component: &str| {
        let mut root = document.clone();
        root["$ref"] = json!(format!("#/components/schemas/{component}"));
        jsonschema::draft7::new(&root).unwrap().is_valid(&stored)
    };
    assert!(validates("CustomerOnboardedSealed"), "{stored}");
    assert!(!validates("CustomerOnboarded"), "{stored}");

    let file = std::env::temp_dir().join(format!("factum-sealed-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_string_pretty(&document).unwrap()).unwrap();
    let tool = node_tool("asyncapi-parser", "@asyncapi/parser");
    let (stdout, lines) = run_node(&tool.join("check.mjs"), &[&file]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(lines.last(), Some(&json!({ "parsed": true })), "{stdout}");
    assert_eq!(lines.len(), 1, "diagnostics: {stdout}");
}

#[test]
fn wiring_that_does_not_fit_is_refused_with_what_to_fix() {
    use factum::catalog::{Broker, RelayRoute, Service};
    let dir = std::env::temp_dir().join(format!("factum-wiring-{}", std::process::id()));
    let catalog = Catalog::new("t", "1")
        .aggregate::<bank::BankAccount>()
        .broker(Broker::amqp("rabbitmq", "127.0.0.1:5672"))
        .relay(RelayRoute::jetstream("to-nats", "nats", "S", "bank"))
        .relay(RelayRoute::jetstream(
            "wrong-protocol",
            "rabbitmq",
            "S",
            "bank",
        ))
        .service(Service::new("reader", "to-nats").event_types(["OrderPlaced"]))
        .service(Service::new("lost", "nowhere"));
    let Err(CatalogError::Wiring(errors)) = catalog.check(&dir) else {
        panic!("the wiring is refused");
    };
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(errors[0].contains("broker `nats`") && errors[0].contains("Broker::nats"));
    assert!(errors[1].contains("`wrong-protocol`") && errors[1].contains("amqp"));
    assert!(errors[2].contains("`OrderPlaced`"));
    assert!(errors[3].contains("relay `nowhere`"));
    assert!(!dir.exists(), "nothing written");
}

/// A consumer team's check of the catalog, in the test command: the official AsyncAPI model
/// generator (Modelina, pinned in `tools/modelina`, installed with `npm ci` on first use)
/// makes a typed TypeScript class of every event version's payload (`MoneyWithdrawnV1`,
/// `MoneyWithdrawnV2`, `MoneyWithdrawn`: none `any`), `tsc --strict` accepts them, and a sample
/// of each version (valid against that version's JSON Schema, generated from its Rust type)
/// parses into its model and is written back unchanged, and builds it from a literal that tsc
/// type-checks against the model's fields.
#[test]
fn modelina_makes_a_typed_model_of_every_event_version_that_tsc_accepts_and_samples_parse_into() {
    let tool = node_tool("modelina", "@asyncapi/modelina");
    let dir = example_catalog::schemas_dir();
    let document: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(Catalog::ASYNCAPI_FILE)).unwrap())
            .unwrap();
    // Each event version's payload component, and a sample of it checked against the version's
    // schema file.
    let mut samples = serde_json::Map::new();
    for (key, message) in document["components"]["messages"].as_object().unwrap() {
        let Some(version) = message["x-factum-schema-version"].as_u64() else {
            continue;
        };
        if key.ends_with(".relayed") {
            continue;
        }
        let reference = message["payload"]["$ref"].as_str().unwrap_or_else(|| {
            panic!(
                "{key}'s payload is a schema of the document: {}",
                message["payload"]
            )
        });
        let component = reference
            .trim_start_matches("#/components/schemas/")
            .to_owned();
        let payload =
            factum::catalog::example_payload(&document, document.pointer(&reference[1..]).unwrap());
        let file = dir.join(format!(
            "events/{}.v{version}.schema.json",
            message["name"].as_str().unwrap()
        ));
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&payload)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "the sample of {key} ({payload}) is not valid: {errors:?}"
        );
        samples.insert(component, payload);
    }
    assert!(
        samples.contains_key("MoneyWithdrawnV1")
            && samples.contains_key("MoneyWithdrawnV2")
            && samples.contains_key("MoneyWithdrawn"),
        "{:?}",
        samples.keys()
    );
    let work = tempfile::tempdir().unwrap();
    let samples_file = work.path().join("samples.json");
    std::fs::write(&samples_file, Value::Object(samples.clone()).to_string()).unwrap();
    let (stdout, lines) = run_node(
        &tool.join("models.mjs"),
        &[
            &dir.join(Catalog::ASYNCAPI_FILE),
            &samples_file,
            &work.path().join("out"),
        ],
    );
    assert_eq!(lines.last(), Some(&json!({ "done": true })), "{stdout}");
    for component in samples.keys() {
        let model = lines
            .iter()
            .find(|line| line["model"] == component.as_str())
            .unwrap_or_else(|| panic!("no model for {component}: {stdout}"));
        assert_eq!(model["kind"], "class", "{component}: {model}");
        assert_eq!(model["any"], false, "{component}: {model}");
        // Parsed from JSON, and built from a typed literal that tsc checked against the model.
        for check in [component.clone(), format!("{component} (typed)")] {
            let parsed = lines
                .iter()
                .find(|line| line["sample"] == check.as_str())
                .unwrap_or_else(|| panic!("no sample parsed for {check}: {stdout}"));
            assert_eq!(parsed["ok"], true, "{check}: {parsed}");
        }
    }
}

/// The Node.js tool `tools/<name>` (its packages pinned by its lock), installed with `npm ci` on
/// first use (when `package` is not there yet).
fn node_tool(name: &str, package: &str) -> std::path::PathBuf {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools")
        .join(name);
    let npm_ok = std::process::Command::new("npm").arg("--version").output();
    assert!(
        npm_ok.is_ok_and(|o| o.status.success()),
        "Node.js and npm are needed for the catalog's checks with the official AsyncAPI tools: install them (e.g. 'apt install nodejs npm')"
    );
    if !tool.join("node_modules").join(package).exists() {
        let installed = std::process::Command::new("npm")
            .args(["ci", "--silent", "--no-audit", "--no-fund"])
            .current_dir(&tool)
            .output()
            .expect("npm runs");
        assert!(
            installed.status.success(),
            "npm ci in {} failed: {}",
            tool.display(),
            String::from_utf8_lossy(&installed.stderr)
        );
    }
    tool
}

/// Runs the Node.js script `script` with `args`, which must succeed and print one JSON object per
/// line: its output, and those objects.
fn run_node(script: &Path, args: &[&Path]) -> (String, Vec<Value>) {
    let output = std::process::Command::new("node")
        .arg(script)
        .args(args)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    (stdout, lines)
}
