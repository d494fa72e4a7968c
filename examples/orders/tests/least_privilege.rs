//! The order fulfillment saga as an application role that owns nothing (issue 15, part 3):
//! the schema's owner migrated it and granted the role what the runtime needs
//! (`PostgresStore::application_grants`); the saga's event side, its instances, outbox and
//! dispatcher all run as that role, for an order that completes and one that is compensated.

use factum::Repository;
use factum::saga::{ManualClock, SagaRunner};
use factum::testing::postgres::LeastPrivilege;
use orders::fulfillment::OrderFulfillment;
use orders::inventory::AddStock;
use orders::order::{Order, OrderStatus, PlaceOrder};
use orders::{Services, inventory_stream, order_stream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fulfillment_saga_runs_as_an_application_role() {
    let roles = LeastPrivilege::new().await.unwrap();
    let store = roles.application().clone();
    store.migrate().await.expect("up to date: no DDL needed");
    let services = Services::new(&store);
    let clock = ManualClock::starting_at("2026-11-30T09:00:00Z".parse().unwrap());
    let mut runner =
        SagaRunner::<_, OrderFulfillment>::new(store.clone(), services.bus()).clock(clock.clone());
    services
        .inventory
        .execute(
            &inventory_stream("book"),
            AddStock {
                sku: "book".into(),
                quantity: 1,
            },
        )
        .await
        .unwrap();
    for (id, card) in [("o-1", "4242"), ("o-2", "declined")] {
        services
            .orders
            .execute(
                &order_stream(id),
                PlaceOrder {
                    order_id: id.into(),
                    customer: "ada".into(),
                    sku: "book".into(),
                    quantity: 1,
                    amount: 1_999,
                    card: card.into(),
                    address: "1 Main St".into(),
                },
            )
            .await
            .unwrap();
    }
    runner
        .settle()
        .await
        .expect("the saga runs as the application role");

    let orders = Repository::<Order, _>::new(store.clone());
    let status = |order: Order| order.status;
    assert_eq!(
        status(orders.load(&order_stream("o-1")).await.unwrap().state),
        OrderStatus::Completed
    );
    assert_eq!(
        status(orders.load(&order_stream("o-2")).await.unwrap().state),
        OrderStatus::Cancelled,
        "no stock left for it (or its card declined): compensated"
    );
}
