//! The saga process killed between commit and delivery, and at random points, then restarted:
//! every command's effect happens exactly once. On PostgreSQL and on SQLite.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use factum::saga::SagaRunner;
use factum::store::SqlStore;
use factum::testing::postgres::TemporaryStore;
use factum::testing::sqlite::TemporaryDatabase;
use factum::{EventStore, RecordedEvent};
use orders::fulfillment::{OrderFulfillment, Stage};
use orders::inventory::AddStock;
use orders::order::PlaceOrder;
use orders::{Services, inventory_stream, order_stream, payment_stream, shipment_stream};

const ORDERS: usize = 240;
const SKUS: usize = 4;
const RANDOM_KILLS: u32 = 12;

/// A small deterministic generator (no dependency needed).
struct XorShift(u64);

impl XorShift {
    fn between(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        low + self.0 % (high - low)
    }
}

/// What happens to order `n`: most complete, some payments are declined, some shipments fail.
fn card_and_address(n: usize) -> (&'static str, &'static str) {
    match n % 6 {
        4 => ("declined", "1 Main St"),
        5 => ("visa", "nowhere"),
        _ => ("visa", "1 Main St"),
    }
}

/// Where the saga process finds the store.
struct Target {
    url: String,
    schema: String,
}

fn saga_process(target: &Target, crash: Option<&str>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fulfillment"));
    command
        .env("DATABASE_URL", &target.url)
        .env("FACTUM_SCHEMA", &target.schema)
        .env("BATCH_SIZE", "10")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(crash) = crash {
        command.env("FACTUM_CRASH", crash);
    }
    command
}

async fn types(store: &impl EventStore, stream: &str) -> Vec<String> {
    store
        .read_stream(stream, ..)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_takes_effect_once_across_crashes_on_postgres() {
    let temporary = TemporaryStore::new().await.unwrap();
    let store = temporary.another_client().await.unwrap();
    let services = Services::new(&store);
    let target = Target {
        url: temporary.url().to_owned(),
        schema: temporary.schema().to_owned(),
    };
    let inspector = SagaRunner::new(store.clone(), services.bus());
    scenario(&store, &target, &inspector).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_takes_effect_once_across_crashes_on_sqlite() {
    let database = TemporaryDatabase::new().await.unwrap();
    let store = (*database).clone();
    let services = Services::new(&store);
    let target = Target {
        url: format!("sqlite://{}", database.path().display()),
        schema: String::new(),
    };
    let inspector = SagaRunner::new(store.clone(), services.bus());
    scenario(&store, &target, &inspector).await;
}

/// The scenario on either store; `runner` is used only to look at the outcome.
async fn scenario<S: SqlStore>(
    store: &S,
    target: &Target,
    runner: &SagaRunner<S, OrderFulfillment>,
) {
    let services = Services::new(store);
    for sku in 0..SKUS {
        services
            .inventory
            .execute(
                &inventory_stream(&format!("sku{sku}")),
                AddStock {
                    sku: format!("sku{sku}"),
                    quantity: 1_000,
                },
            )
            .await
            .unwrap();
    }
    for n in 0..ORDERS {
        let (card, address) = card_and_address(n);
        services
            .orders
            .execute(
                &order_stream(&format!("o{n}")),
                PlaceOrder {
                    order_id: format!("o{n}"),
                    customer: "ada".into(),
                    sku: format!("sku{}", n % SKUS),
                    quantity: 1 + (n % 3) as u32,
                    amount: 1_000,
                    card: card.into(),
                    address: address.into(),
                },
            )
            .await
            .unwrap();
    }

    // 1. Killed after committing the saga's handling, before delivering any command.
    let status = saga_process(target, Some("after-commit")).status().unwrap();
    assert!(!status.success(), "the process aborted");
    let pending = runner.status().await.unwrap();
    assert_eq!(pending.active, ORDERS as u64, "every instance committed");
    assert_eq!(
        pending.pending_commands, ORDERS as u64,
        "every reservation waits in the outbox"
    );
    assert!(
        types(store, &inventory_stream("sku0")).await.len() == 1,
        "none delivered"
    );

    // 2. Killed after a command was applied by its aggregate, before its delivery was
    //    acknowledged: the restarted process delivers it again, and it is recognised.
    for at in [1, 40, 150, 300] {
        let status = saga_process(target, Some(&format!("after-delivery:{at}")))
            .status()
            .unwrap();
        assert!(!status.success(), "the process aborted at delivery {at}");
    }

    // 3. Killed with SIGKILL at random points while delivering and handling.
    let mut random = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut kills = 0;
    for _ in 0..RANDOM_KILLS {
        let mut child = saga_process(target, None).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(random.between(15, 400))).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
    }
    eprintln!("{kills} of {RANDOM_KILLS} runs killed before they finished");
    assert!(
        kills > 0,
        "no run was killed: the random-kill phase tested nothing (the process is faster than the kill points)"
    );

    // 4. Restarted once more, it finishes.
    assert!(saga_process(target, None).status().unwrap().success());

    let status = runner.status().await.unwrap();
    assert_eq!((status.active, status.completed), (0, ORDERS as u64));
    assert_eq!(status.pending_commands, 0);
    assert_eq!(status.failed_commands, 0);
    assert_eq!(
        status.rejected_commands, 0,
        "no command was executed again (its aggregate would have refused it)"
    );

    let mut reserved = BTreeMap::<String, u32>::new();
    let mut inventory_events: Vec<RecordedEvent> = Vec::new();
    for sku in 0..SKUS {
        inventory_events.extend(
            store
                .read_stream(&inventory_stream(&format!("sku{sku}")), ..)
                .await
                .unwrap(),
        );
    }
    for event in &inventory_events {
        if event.event_type == "InventoryReserved" || event.event_type == "InventoryReleased" {
            let order = event.event.to_value()["order_id"]
                .as_str()
                .unwrap()
                .to_owned();
            *reserved
                .entry(format!("{order}:{}", event.event_type))
                .or_default() += 1;
        }
    }
    for n in 0..ORDERS {
        let id = format!("o{n}");
        let (card, address) = card_and_address(n);
        let (order, payment, shipment, released): (&[&str], &[&str], &[&str], u32) =
            match (card, address) {
                ("declined", _) => (
                    &["OrderPlaced", "OrderCancelled"],
                    &["PaymentDeclined"],
                    &[],
                    1,
                ),
                (_, "nowhere") => (
                    &["OrderPlaced", "OrderCancelled"],
                    &["PaymentProcessed", "PaymentRefunded"],
                    &["ShipmentFailed"],
                    1,
                ),
                _ => (
                    &["OrderPlaced", "OrderCompleted"],
                    &["PaymentProcessed"],
                    &["OrderShipped"],
                    0,
                ),
            };
        assert_eq!(types(store, &order_stream(&id)).await, order, "{id}");
        assert_eq!(types(store, &payment_stream(&id)).await, payment, "{id}");
        assert_eq!(types(store, &shipment_stream(&id)).await, shipment, "{id}");
        assert_eq!(
            reserved.get(&format!("{id}:InventoryReserved")),
            Some(&1),
            "{id}"
        );
        assert_eq!(
            reserved
                .get(&format!("{id}:InventoryReleased"))
                .copied()
                .unwrap_or(0),
            released,
            "{id}"
        );
        let instance = runner.instance(&id).await.unwrap().unwrap();
        assert!(instance.completed, "{id}");
        let expected = if order[1] == "OrderCompleted" {
            Stage::Completed
        } else {
            Stage::Cancelled
        };
        assert_eq!(instance.state.stage, expected, "{id}");
    }
}
