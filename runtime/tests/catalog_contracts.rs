//! Consumer contracts: a consumer's committed expectations (events, versions, fields and their
//! types), generated from its own `#[event]` types or written by hand, checked against a
//! producer's catalog: a contract that holds, and producer changes that each break it with a
//! message naming the consumer, the event, the version and the field.

use factum::catalog::{Catalog, ConsumerContract, ContractBreak, FieldType};
use factum::event::EventSchema;

/// The producer's events, as they are today.
mod producer {
    #[factum::event]
    #[derive(Debug, Clone, PartialEq)]
    pub struct OrderPlaced {
        pub order_id: String,
        pub customer: String,
        pub total: u64,
        pub lines: Vec<LineItem>,
        pub note: Option<String>,
    }

    #[derive(
        Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
    )]
    pub struct LineItem {
        pub sku: String,
        pub quantity: u32,
    }

    #[factum::event]
    #[derive(Debug, Clone, PartialEq)]
    pub struct OrderCancelled {
        pub order_id: String,
    }
}

/// The consumer's own copies of the events, with only the fields it reads.
mod consumer {
    #[factum::event]
    #[derive(Debug, Clone, PartialEq)]
    pub struct OrderPlaced {
        pub order_id: String,
        pub total: u64,
        pub note: Option<String>,
    }

    #[factum::event]
    #[derive(Debug, Clone, PartialEq)]
    pub struct OrderCancelled {
        pub order_id: String,
    }
}

fn contract() -> ConsumerContract {
    ConsumerContract::new("shipping-service")
        .reads::<consumer::OrderPlaced>()
        .reads::<consumer::OrderCancelled>()
}

fn schemas(list: &[EventSchema]) -> Vec<(&str, u32, &serde_json::Value)> {
    list.iter()
        .map(|schema| (schema.name, schema.version, &schema.schema))
        .collect()
}

fn today() -> Vec<EventSchema> {
    vec![
        EventSchema::of::<producer::OrderPlaced>(),
        EventSchema::of::<producer::OrderCancelled>(),
    ]
}

#[test]
fn a_contract_from_the_consumers_types_states_its_fields_and_round_trips_as_json() {
    let contract = contract();
    let placed = &contract.reads[0];
    assert_eq!(placed.event, "OrderPlaced");
    assert_eq!(placed.versions, [1]);
    let fields: Vec<(&str, String)> = placed
        .fields
        .iter()
        .map(|(path, field)| (path.as_str(), String::from(*field)))
        .collect();
    assert_eq!(
        fields,
        [
            ("note", "string?".to_owned()),
            ("order_id", "string".to_owned()),
            ("total", "integer".to_owned())
        ]
    );
    let json = contract.to_json();
    let read: ConsumerContract = serde_json::from_str(&json).unwrap();
    assert_eq!(read, contract);
}

#[test]
fn the_producers_catalog_of_today_keeps_the_contract() {
    assert_eq!(
        contract().breaks(schemas(&today())),
        Vec::<ContractBreak>::new()
    );
    // Nested paths through arrays, written by hand.
    let by_hand: ConsumerContract = serde_json::from_value(serde_json::json!({
        "consumer": "warehouse",
        "reads": [{ "event": "OrderPlaced", "versions": [1],
                    "fields": { "lines[].sku": "string", "lines[].quantity": "number",
                                "lines": "array", "customer": "any" } }]
    }))
    .unwrap();
    assert_eq!(
        by_hand.breaks(schemas(&today())),
        Vec::<ContractBreak>::new()
    );
}

/// Each producer change below breaks the contract, and says whom, what, which version and
/// which field.
#[test]
fn producer_changes_that_break_the_consumer_are_named() {
    mod removed {
        #[factum::event(name = "OrderPlaced")]
        pub struct OrderPlaced {
            pub order_id: String,
            pub note: Option<String>,
        }
    }
    mod retyped {
        #[factum::event(name = "OrderPlaced")]
        pub struct OrderPlaced {
            pub order_id: String,
            pub total: String,
            pub note: Option<String>,
        }
    }
    mod made_optional {
        #[factum::event(name = "OrderPlaced")]
        pub struct OrderPlaced {
            pub order_id: Option<String>,
            pub total: u64,
            pub note: Option<String>,
        }
    }
    mod new_version {
        #[factum::event(name = "OrderPlaced", version = 2)]
        pub struct OrderPlacedV2 {
            pub order_id: String,
            pub total: u64,
            pub note: Option<String>,
        }
        #[factum::upcast]
        fn to_v2(old: super::producer::OrderPlaced) -> OrderPlacedV2 {
            OrderPlacedV2 {
                order_id: old.order_id,
                total: old.total,
                note: old.note,
            }
        }
    }
    let cancelled = EventSchema::of::<producer::OrderCancelled>();
    let cases: Vec<(&str, Vec<EventSchema>, &str)> = vec![
        (
            "a field removed",
            vec![EventSchema::of::<removed::OrderPlaced>(), cancelled.clone()],
            "consumer `shipping-service`: `OrderPlaced` v1, field `total`: `total` is not in the producer's schema (removed or renamed)",
        ),
        (
            "a field retyped",
            vec![EventSchema::of::<retyped::OrderPlaced>(), cancelled.clone()],
            "consumer `shipping-service`: `OrderPlaced` v1, field `total`: the producer's schema has it as string, the consumer reads it as integer",
        ),
        (
            "a field it needs made optional",
            vec![
                EventSchema::of::<made_optional::OrderPlaced>(),
                cancelled.clone(),
            ],
            "consumer `shipping-service`: `OrderPlaced` v1, field `order_id`: the producer's schema lets it be absent or null, and the consumer needs it (read it as optional, with `?`, or the producer makes it required)",
        ),
        (
            "an event no longer produced",
            vec![EventSchema::of::<producer::OrderPlaced>()],
            "consumer `shipping-service`: `OrderCancelled`: the producer no longer produces this event (it is not in its catalog)",
        ),
        (
            "a version it cannot read",
            vec![
                EventSchema::of::<producer::OrderPlaced>(),
                EventSchema::of::<new_version::OrderPlacedV2>(),
                cancelled.clone(),
            ],
            "consumer `shipping-service`: `OrderPlaced` v2: the producer writes version 2, which the consumer does not read (it reads v1): read it, or upcast it to one it reads",
        ),
    ];
    for (change, catalog, expected) in cases {
        let breaks: Vec<String> = contract()
            .breaks(schemas(&catalog))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(breaks, [expected], "{change}");
    }
}

#[test]
fn bad_contract_files_say_what_to_write() {
    let error = serde_json::from_value::<ConsumerContract>(serde_json::json!({
        "consumer": "x",
        "reads": [{ "event": "OrderPlaced", "versions": [1], "fields": { "total": "int" } }]
    }))
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("`int` is not a field type: use string, integer, number"),
        "{error}"
    );
    assert!(FieldType::try_from("integer?".to_owned()).unwrap().optional);
}

/// The producer's aggregate, for its catalog.
mod orders {
    use super::producer::{OrderCancelled, OrderPlaced};

    #[factum::event]
    #[derive(Debug, Clone, PartialEq)]
    pub enum OrderEvent {
        Placed(OrderPlaced),
        Cancelled(OrderCancelled),
    }

    #[derive(Debug, Default)]
    pub struct Order;

    #[factum::aggregate(events = OrderEvent)]
    impl Order {
        #[apply]
        fn placed(&mut self, _: &OrderPlaced) {}

        #[apply]
        fn cancelled(&mut self, _: &OrderCancelled) {}
    }
}

#[test]
fn a_catalog_checks_contracts_against_the_code() {
    let catalog = Catalog::new("orders", "1.0.0").aggregate::<orders::Order>();
    assert_eq!(
        catalog.contract_breaks(&contract()),
        Vec::<ContractBreak>::new()
    );
    let empty = Catalog::new("orders", "1.0.0");
    let breaks = empty.contract_breaks(&contract());
    assert_eq!(
        breaks.len(),
        2,
        "an empty catalog produces neither event: {breaks:?}"
    );
}

/// The build-script path: contract files checked against the code's catalog, every break in
/// one error.
#[test]
fn contract_files_are_checked_against_the_catalog() {
    let dir = tempfile_dir();
    let kept = dir.join("kept.json");
    std::fs::write(&kept, contract().to_json()).unwrap();
    let broken = dir.join("broken.json");
    std::fs::write(
        &broken,
        serde_json::json!({
            "consumer": "billing",
            "reads": [{ "event": "OrderPlaced", "versions": [1], "fields": { "coupon": "string" } }]
        })
        .to_string(),
    )
    .unwrap();
    let catalog = Catalog::new("orders", "1.0.0").aggregate::<orders::Order>();
    let kept_result = catalog.check_contracts([&kept]);
    let broken_result = catalog.check_contracts([&kept, &broken]);
    let missing = catalog.check_contracts([dir.join("missing.json")]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(kept_result.is_ok(), "{kept_result:?}");
    let error = broken_result.unwrap_err().to_string();
    assert_eq!(
        error,
        "the catalog breaks consumers' contracts:\n  - consumer `billing`: `OrderPlaced` v1, field `coupon`: `coupon` is not in the producer's schema (removed or renamed)"
    );
    assert!(missing.unwrap_err().to_string().contains("missing.json"));
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("factum-contracts-{}", factum::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
