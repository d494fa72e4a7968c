//! Runs the order fulfillment example on PostgreSQL (`DATABASE_URL`, default the local server)
//! in the schema `orders_example`, recreated at each run: four orders, one per ending, and the
//! trail of events each one left.

use std::error::Error;

use factum::EventStore;
use factum::saga::{ManualClock, SagaRunner};
use factum::store::PostgresStore;
use orders::fulfillment::{OrderFulfillment, PAYMENT_TIMEOUT};
use orders::inventory::AddStock;
use orders::order::PlaceOrder;
use orders::{Services, inventory_stream, order_stream, payment_stream, shipment_stream};

const SCHEMA: &str = "orders_example";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let pool = sqlx::PgPool::connect(&url)
        .await
        .map_err(|e| format!("cannot reach PostgreSQL at {url} ({e}): set DATABASE_URL"))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"
    )))
    .execute(&pool)
    .await?;
    let store = PostgresStore::with_schema(pool, SCHEMA)?;
    store.migrate().await?;
    let services = Services::new(&store);
    let clock = ManualClock::default();
    let mut saga =
        SagaRunner::<OrderFulfillment>::new(store.clone(), services.bus()).clock(clock.clone());

    println!("Factum order fulfillment example (PostgreSQL, schema `{SCHEMA}`)\n");
    services
        .inventory
        .execute(
            &inventory_stream("book"),
            AddStock {
                sku: "book".into(),
                quantity: 5,
            },
        )
        .await?;
    let orders = [
        ("o-1", 2, "visa", "1 Main St", "completes"),
        ("o-2", 9, "visa", "1 Main St", "out of stock"),
        ("o-3", 1, "declined", "1 Main St", "card declined"),
        ("o-4", 1, "visa", "nowhere", "shipment fails"),
        ("o-5", 1, "3ds", "1 Main St", "payment never confirmed"),
    ];
    for (id, quantity, card, address, _) in orders {
        services
            .orders
            .execute(
                &order_stream(id),
                PlaceOrder {
                    order_id: id.into(),
                    customer: "ada".into(),
                    sku: "book".into(),
                    quantity,
                    amount: 1_999,
                    card: card.into(),
                    address: address.into(),
                },
            )
            .await?;
    }
    saga.settle().await?;
    println!(
        "(the clock moves {} minutes on)\n",
        PAYMENT_TIMEOUT.as_secs() / 60
    );
    clock.advance(PAYMENT_TIMEOUT);
    saga.settle().await?;

    for (id, _, _, _, expected) in orders {
        let instance = saga.instance(id).await?.ok_or("no saga instance")?;
        println!(
            "order {id} ({expected}): {:?}{}",
            instance.state.stage,
            instance
                .state
                .failure
                .as_ref()
                .map(|f| format!(" — {f}"))
                .unwrap_or_default()
        );
        for stream in [order_stream(id), payment_stream(id), shipment_stream(id)] {
            for event in store.read_stream(&stream, ..).await? {
                println!(
                    "    {:<22} {:<20} correlation {}",
                    stream, event.event_type, event.correlation_id
                );
            }
        }
    }
    let stock = services
        .inventory
        .load(&inventory_stream("book"))
        .await?
        .state;
    println!(
        "\nstock of `book`: {} available, reserved {:?}",
        stock.available, stock.reserved
    );
    let status = saga.status().await?;
    println!(
        "saga: {} completed, {} active, {} commands pending, {} refused",
        status.completed, status.active, status.pending_commands, status.rejected_commands
    );
    println!("\nthe events are in the schema `{SCHEMA}` of {url}");
    Ok(())
}
