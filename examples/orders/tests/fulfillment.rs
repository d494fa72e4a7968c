//! The order fulfillment saga, on PostgreSQL and on SQLite: the happy path, a failure at each
//! step (with the final state of every aggregate involved and of the saga), the payment timeout
//! on a manual clock, correlation and causation through the flow, and redelivered commands.

use std::time::Duration;

use factum::saga::{ManualClock, SagaRunner};
use factum::testing::TestDatabase;
use factum::{EventStore, RecordedEvent, Repository};
use orders::fulfillment::{OrderFulfillment, PAYMENT_TIMEOUT, Stage};
use orders::inventory::{AddStock, Inventory};
use orders::order::{Order, OrderStatus, PlaceOrder};
use orders::payment::{ConfirmPayment, PaymentStatus};
use orders::shipping::ShipmentStatus;
use orders::{Services, inventory_stream, order_stream, payment_stream, shipment_stream};

/// A saga runner on the test database's store.
type Runner<D> = SagaRunner<<D as TestDatabase>::Store, OrderFulfillment>;

struct World<D: TestDatabase> {
    database: D,
    store: D::Store,
    services: Services<D::Store>,
    clock: ManualClock,
    runner: Runner<D>,
}

impl<D: TestDatabase> World<D> {
    async fn new() -> Self {
        let database = D::create().await.unwrap();
        let store = database.another_client().await.unwrap();
        let services = Services::new(&store);
        let clock = ManualClock::starting_at("2026-11-23T09:00:00Z".parse().unwrap());
        let runner = SagaRunner::new(store.clone(), services.bus()).clock(clock.clone());
        services
            .inventory
            .execute(
                &inventory_stream("book"),
                AddStock {
                    sku: "book".into(),
                    quantity: 10,
                },
            )
            .await
            .unwrap();
        Self {
            database,
            store,
            services,
            clock,
            runner,
        }
    }

    /// A runner as a restarted process would have it.
    fn restarted_runner(&self) -> Runner<D> {
        SagaRunner::new(self.store.clone(), self.services.bus()).clock(self.clock.clone())
    }

    /// Puts an instance's delivered commands back in the outbox, as if the dispatcher had
    /// crashed before acknowledging them. Returns how many.
    async fn reset_outbox(&self, saga_id: &str) -> u64 {
        let outbox = self.database.table("saga_outbox");
        factum::testing::execute(
            &self.store,
            &format!("UPDATE {outbox} SET status = 'pending' WHERE saga_id = '{saga_id}'"),
        )
        .await
        .unwrap()
    }

    async fn place(&self, order_id: &str, sku: &str, quantity: u32, card: &str, address: &str) {
        self.services
            .orders
            .execute(
                &order_stream(order_id),
                PlaceOrder {
                    order_id: order_id.into(),
                    customer: "ada".into(),
                    sku: sku.into(),
                    quantity,
                    amount: 2_500,
                    card: card.into(),
                    address: address.into(),
                },
            )
            .await
            .unwrap();
    }

    async fn settle(&mut self) {
        self.runner.settle().await.unwrap();
    }

    async fn order(&self, order_id: &str) -> Order {
        self.services
            .orders
            .load(&order_stream(order_id))
            .await
            .unwrap()
            .state
    }

    async fn inventory(&self, sku: &str) -> Inventory {
        self.services
            .inventory
            .load(&inventory_stream(sku))
            .await
            .unwrap()
            .state
    }

    async fn payment(&self, order_id: &str) -> PaymentStatus {
        self.services
            .payments
            .load(&payment_stream(order_id))
            .await
            .unwrap()
            .state
            .status
    }

    async fn shipment(&self, order_id: &str) -> ShipmentStatus {
        self.services
            .shipments
            .load(&shipment_stream(order_id))
            .await
            .unwrap()
            .state
            .status
    }

    async fn saga(&self, order_id: &str) -> (OrderFulfillment, bool) {
        let instance = self.runner.instance(order_id).await.unwrap().unwrap();
        (instance.state, instance.completed)
    }

    async fn types(&self, stream: &str) -> Vec<String> {
        self.store
            .read_stream(stream, ..)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }
}

async fn an_order_is_reserved_paid_shipped_and_completed<D: TestDatabase>() {
    let mut world = World::<D>::new().await;
    world.place("o-1", "book", 3, "visa", "1 Main St").await;
    world.settle().await;

    assert_eq!(world.order("o-1").await.status, OrderStatus::Completed);
    let inventory = world.inventory("book").await;
    assert_eq!(inventory.available, 7);
    assert_eq!(inventory.reserved.get("o-1"), Some(&3));
    assert_eq!(world.payment("o-1").await, PaymentStatus::Processed);
    assert_eq!(world.shipment("o-1").await, ShipmentStatus::Shipped);
    let (saga, completed) = world.saga("o-1").await;
    assert!(completed);
    assert_eq!(saga.stage, Stage::Completed);
    assert!(saga.compensations.is_empty());

    let status = world.runner.status().await.unwrap();
    assert_eq!((status.active, status.completed), (0, 1));
    assert_eq!(status.pending_commands, 0);
    assert_eq!(
        status.pending_timeouts, 0,
        "the payment timeout was cancelled"
    );

    // One correlation id from the order through every command's events; each event caused
    // by its command, each command by the event before it.
    let placed = &world
        .store
        .read_stream(&order_stream("o-1"), ..)
        .await
        .unwrap()[0];
    let mut flow: Vec<RecordedEvent> = Vec::new();
    for stream in [
        inventory_stream("book"),
        payment_stream("o-1"),
        shipment_stream("o-1"),
        order_stream("o-1"),
    ] {
        flow.extend(
            world
                .store
                .read_stream(&stream, ..)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.event_type != "StockAdded" && e.event_type != "OrderPlaced"),
        );
    }
    assert_eq!(flow.len(), 4, "reserved, paid, shipped, completed");
    for event in &flow {
        assert_eq!(
            event.correlation_id, placed.correlation_id,
            "{}",
            event.event_type
        );
        assert_eq!(event.metadata["saga"], "order_fulfillment");
        assert_eq!(event.metadata["saga_id"], "o-1");
    }
    let reserved = flow
        .iter()
        .find(|e| e.event_type == "InventoryReserved")
        .unwrap();
    assert_eq!(
        reserved.metadata["command_causation_id"],
        placed.event_id.to_string(),
        "ReserveInventory was caused by OrderPlaced"
    );
    let paid = flow
        .iter()
        .find(|e| e.event_type == "PaymentProcessed")
        .unwrap();
    assert_eq!(
        paid.metadata["command_causation_id"],
        reserved.event_id.to_string(),
        "ProcessPayment was caused by InventoryReserved"
    );
    assert_ne!(
        paid.causation_id, reserved.event_id,
        "an event is caused by its command"
    );

    // A late event for the completed instance changes nothing.
    let late = factum::NewEvent::new(
        "InventoryReservationFailed",
        1,
        factum::Payload::encode(&serde_json::json!({
            "order_id": "o-1", "sku": "book", "requested": 3, "available": 0
        }))
        .unwrap(),
    );
    world
        .store
        .append(
            &inventory_stream("book"),
            "Inventory",
            factum::ExpectedVersion::Any,
            vec![late],
        )
        .await
        .unwrap();
    assert_eq!(world.runner.settle().await.unwrap().events, 1);
    let status = world.runner.status().await.unwrap();
    assert_eq!((status.active, status.completed), (0, 1));
    assert_eq!(status.pending_commands, 0);
    assert_eq!(world.saga("o-1").await.0.stage, Stage::Completed);
}

async fn out_of_stock_cancels_the_order_and_touches_nothing_else<D: TestDatabase>() {
    let mut world = World::<D>::new().await;
    world.place("o-2", "book", 11, "visa", "1 Main St").await;
    world.settle().await;

    let order = world.order("o-2").await;
    assert_eq!(order.status, OrderStatus::Cancelled);
    assert!(order.cancel_reason.unwrap().contains("out of stock"));
    let inventory = world.inventory("book").await;
    assert_eq!(inventory.available, 10);
    assert!(inventory.reserved.is_empty());
    assert!(world.types(&payment_stream("o-2")).await.is_empty());
    assert!(world.types(&shipment_stream("o-2")).await.is_empty());
    let (saga, completed) = world.saga("o-2").await;
    assert!(completed);
    assert_eq!(saga.stage, Stage::Cancelled);
    assert_eq!(saga.compensations, ["CancelOrder"]);
}

async fn a_refused_command_goes_back_to_the_saga_which_cancels_the_order<D: TestDatabase>() {
    let mut world = World::<D>::new().await;
    world
        .place("o-3", "unknown-sku", 1, "visa", "1 Main St")
        .await;
    world.settle().await;

    let order = world.order("o-3").await;
    assert_eq!(order.status, OrderStatus::Cancelled);
    assert!(
        order
            .cancel_reason
            .unwrap()
            .contains("ReserveInventory refused"),
        "the rejection reached the saga"
    );
    assert!(
        world
            .types(&inventory_stream("unknown-sku"))
            .await
            .is_empty()
    );
    let status = world.runner.status().await.unwrap();
    assert_eq!(status.rejected_commands, 1);
    assert_eq!((status.active, status.completed), (0, 1));
}

async fn a_declined_payment_releases_the_inventory_then_cancels_the_order<D: TestDatabase>() {
    let mut world = World::<D>::new().await;
    world.place("o-4", "book", 4, "declined", "1 Main St").await;
    world.settle().await;

    assert_eq!(world.order("o-4").await.status, OrderStatus::Cancelled);
    let inventory = world.inventory("book").await;
    assert_eq!(inventory.available, 10, "the reservation was released");
    assert!(inventory.reserved.is_empty());
    assert_eq!(
        world.types(&inventory_stream("book")).await,
        ["StockAdded", "InventoryReserved", "InventoryReleased"]
    );
    assert_eq!(world.payment("o-4").await, PaymentStatus::Declined);
    assert!(world.types(&shipment_stream("o-4")).await.is_empty());
    let (saga, completed) = world.saga("o-4").await;
    assert!(completed);
    assert_eq!(saga.compensations, ["ReleaseInventory", "CancelOrder"]);
    assert_eq!(world.runner.status().await.unwrap().pending_timeouts, 0);
}

async fn a_failed_shipment_refunds_releases_and_cancels_in_reverse_order<D: TestDatabase>() {
    let mut world = World::<D>::new().await;
    world.place("o-5", "book", 2, "visa", "nowhere").await;
    world.settle().await;

    assert_eq!(world.order("o-5").await.status, OrderStatus::Cancelled);
    assert_eq!(world.payment("o-5").await, PaymentStatus::Refunded);
    assert_eq!(world.inventory("book").await.available, 10);
    assert_eq!(world.shipment("o-5").await, ShipmentStatus::Failed);
    let (saga, completed) = world.saga("o-5").await;
    assert!(completed);
    assert_eq!(
        saga.compensations,
        ["RefundPayment", "ReleaseInventory", "CancelOrder"]
    );
    // The compensations happened in that order.
    let position = |stream: String, event_type: &'static str| {
        let store = &world.store;
        async move {
            store
                .read_stream(&stream, ..)
                .await
                .unwrap()
                .into_iter()
                .find(|e| e.event_type == event_type)
                .unwrap()
                .global_position
        }
    };
    let refunded = position(payment_stream("o-5"), "PaymentRefunded").await;
    let released = position(inventory_stream("book"), "InventoryReleased").await;
    let cancelled = position(order_stream("o-5"), "OrderCancelled").await;
    assert!(refunded < released && released < cancelled);
}

async fn a_payment_that_never_answers_times_out_after_a_restart_and_compensates<D: TestDatabase>() {
    let mut world = World::<D>::new().await;
    world.place("o-6", "book", 5, "3ds", "1 Main St").await;
    world.settle().await;
    assert_eq!(world.payment("o-6").await, PaymentStatus::Pending);
    assert_eq!(world.inventory("book").await.available, 5);
    assert_eq!(world.runner.status().await.unwrap().pending_timeouts, 1);

    // Not yet due.
    world
        .clock
        .advance(PAYMENT_TIMEOUT - Duration::from_secs(1));
    assert_eq!(world.runner.fire_due_timeouts().await.unwrap(), 0);
    assert_eq!(world.saga("o-6").await.0.stage, Stage::Paying);

    // The process restarts; the deadline passes; the new runner fires it.
    let mut restarted = world.restarted_runner();
    world.clock.advance(Duration::from_secs(2));
    let settled = restarted.settle().await.unwrap();
    assert_eq!(settled.timeouts, 1);

    assert_eq!(world.payment("o-6").await, PaymentStatus::Cancelled);
    assert_eq!(world.inventory("book").await.available, 10);
    assert_eq!(world.order("o-6").await.status, OrderStatus::Cancelled);
    let (saga, completed) = world.saga("o-6").await;
    assert!(completed);
    assert_eq!(
        saga.compensations,
        ["CancelPayment", "ReleaseInventory", "CancelOrder"]
    );
    // The card holder confirms too late: the payment was voided.
    let late = world
        .services
        .payments
        .execute(
            &payment_stream("o-6"),
            ConfirmPayment {
                order_id: "o-6".into(),
            },
        )
        .await;
    assert!(late.is_err());
    assert_eq!(
        restarted.fire_due_timeouts().await.unwrap(),
        0,
        "fired once"
    );
}

async fn a_payment_confirmed_in_time_cancels_the_timeout<D: TestDatabase>() {
    let mut world = World::<D>::new().await;
    world.place("o-7", "book", 1, "3ds", "1 Main St").await;
    world.settle().await;
    world
        .services
        .payments
        .execute(
            &payment_stream("o-7"),
            ConfirmPayment {
                order_id: "o-7".into(),
            },
        )
        .await
        .unwrap();
    world.settle().await;
    assert_eq!(world.order("o-7").await.status, OrderStatus::Completed);
    world.clock.advance(PAYMENT_TIMEOUT * 2);
    assert_eq!(world.runner.fire_due_timeouts().await.unwrap(), 0);
    assert_eq!(world.saga("o-7").await.0.stage, Stage::Completed);
}

async fn a_command_delivered_again_is_recognised_and_not_applied_twice<D: TestDatabase>() {
    let mut world = World::<D>::new().await;
    world.place("o-8", "book", 2, "visa", "1 Main St").await;
    world.settle().await;
    let before: Vec<_> = world.types(&inventory_stream("book")).await;

    // As if the dispatcher had crashed after delivering, before acknowledging: every command
    // of the instance is pending again.
    let reset = world.reset_outbox("o-8").await;
    assert_eq!(reset, 4);
    assert_eq!(world.runner.dispatch().await.unwrap(), 4);
    let status = world.runner.status().await.unwrap();
    assert_eq!(
        status.rejected_commands, 0,
        "recognised as applied, not handled again (and refused by the aggregate)"
    );

    assert_eq!(world.types(&inventory_stream("book")).await, before);
    assert_eq!(
        world.types(&payment_stream("o-8")).await,
        ["PaymentProcessed"]
    );
    assert_eq!(world.types(&shipment_stream("o-8")).await, ["OrderShipped"]);
    assert_eq!(
        world.types(&order_stream("o-8")).await,
        ["OrderPlaced", "OrderCompleted"]
    );
    // The redelivered events were redelivered to the saga too: no effect.
    world.settle().await;
    assert_eq!(world.runner.status().await.unwrap().pending_commands, 0);
    let repository: &Repository<Inventory, _> = &world.services.inventory;
    assert_eq!(
        repository
            .load(&inventory_stream("book"))
            .await
            .unwrap()
            .state
            .available,
        8
    );
}

/// A dispatcher delivers every pending command in one call, over as many rounds as it takes,
/// and once it is done another process's dispatcher delivers at once: the dispatch lease is
/// released when a round ends (on PostgreSQL it is a lock of a pooled transaction, which merely
/// dropping would leave held until that connection is used again).
async fn dispatchers_take_the_lease_again_as_soon_as_a_round_ends<D: TestDatabase>() {
    let mut world = World::<D>::new().await;
    world
        .services
        .inventory
        .execute(
            &inventory_stream("pen"),
            AddStock {
                sku: "pen".into(),
                quantity: 1_000,
            },
        )
        .await
        .unwrap();
    // More commands than one round takes (100): the second round takes the lease again right
    // after the first released it.
    for n in 0..120 {
        world
            .place(&format!("o-{}", 100 + n), "pen", 1, "visa", "1 Main St")
            .await;
    }
    assert_eq!(world.runner.handle_events().await.unwrap(), 120);
    assert_eq!(
        world.runner.dispatch().await.unwrap(),
        120,
        "every reservation delivered in one call, over two rounds"
    );
    // The reservations' events make the payments; another process handles and sends them.
    let other_store = world.database.another_client().await.unwrap();
    let other_services = Services::new(&other_store);
    let mut other = SagaRunner::<_, OrderFulfillment>::new(other_store, other_services.bus())
        .clock(world.clock.clone());
    assert_eq!(other.handle_events().await.unwrap(), 120);
    assert_eq!(
        other.dispatch().await.unwrap(),
        120,
        "the other process's dispatcher takes the lease the first one released"
    );
    assert_eq!(
        world.types(&payment_stream("o-219")).await,
        ["PaymentProcessed"]
    );
}

async fn an_event_the_saga_cannot_read_parks_its_stream_while_other_orders_flow<D: TestDatabase>() {
    let mut world = World::<D>::new().await;
    // Options set before the clock stay set.
    world.runner = SagaRunner::new(world.store.clone(), world.services.bus())
        .retries(0, Duration::ZERO)
        .batch_size(7)
        .clock(world.clock.clone());
    let debug = format!("{:?}", world.runner);
    assert!(debug.contains("batch_size: 7"), "{debug}");
    assert!(debug.contains("max: 0"), "{debug}");
    let broken = factum::NewEvent::new(
        "OrderPlaced",
        1,
        factum::Payload::encode(&serde_json::json!({ "order_id": 42 })).unwrap(),
    );
    world
        .store
        .append(
            &order_stream("o-bad"),
            "Order",
            factum::ExpectedVersion::NoStream,
            vec![broken],
        )
        .await
        .unwrap();
    world.place("o-9", "book", 1, "visa", "1 Main St").await;
    world.settle().await;

    assert_eq!(world.order("o-9").await.status, OrderStatus::Completed);
    let parked = world.runner.parked().await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].stream_id, order_stream("o-bad"));
    assert!(
        parked[0]
            .error
            .as_deref()
            .unwrap()
            .contains("does not decode")
    );
    let status = world.runner.status().await.unwrap();
    assert_eq!(status.events.parked_streams, 1);
    assert!(world.runner.instance("o-bad").await.unwrap().is_none());
    // Skipped for the record: the stream flows again.
    assert_eq!(
        world
            .runner
            .skip_parked(&order_stream("o-bad"))
            .await
            .unwrap(),
        Some(1)
    );
    assert!(world.runner.parked().await.unwrap().is_empty());
}

/// A command to a stream id no store accepts (NUL, too long) is refused at once, for good:
/// recorded as rejected in the outbox and handed to the saga's `#[rejected]` handler, which
/// cancels the order; other orders flow.
async fn a_command_to_an_invalid_stream_is_refused_and_the_outbox_flows_on<D: TestDatabase>() {
    let mut world = World::<D>::new().await;
    let long_sku = "x".repeat(factum::store::MAX_STREAM_ID_BYTES);
    world.place("o-nul", "bo\0ok", 1, "visa", "1 Main St").await;
    world
        .place("o-long", &long_sku, 1, "visa", "1 Main St")
        .await;
    world.place("o-ok", "book", 1, "visa", "1 Main St").await;
    world.settle().await;

    for (order, problem) in [
        ("o-nul", "control character '\\0'"),
        ("o-long", "above the limit of 1024"),
    ] {
        let cancelled = world.order(order).await;
        assert_eq!(cancelled.status, OrderStatus::Cancelled, "{order}");
        let reason = cancelled.cancel_reason.unwrap();
        assert!(
            reason.contains("ReserveInventory refused: invalid stream id")
                && reason.contains(problem),
            "{reason}"
        );
        let (saga, completed) = world.saga(order).await;
        assert!(completed);
        assert_eq!(saga.compensations, ["CancelOrder"]);
    }
    assert_eq!(world.order("o-ok").await.status, OrderStatus::Completed);
    let status = world.runner.status().await.unwrap();
    assert_eq!(status.rejected_commands, 2);
    assert_eq!(status.pending_commands, 0);
    assert!(world.runner.parked().await.unwrap().is_empty());
    // Nothing was written to an invalid stream.
    assert!(world.types(&inventory_stream(&long_sku)).await.is_empty());
}

/// An instance whose stored state no longer decodes (changed by hand) is parked: its events wait
/// in the saga's dead-letter queue and its due timeout stays pending, with a typed error, while
/// other instances and their timeouts go on; repaired and retried, it completes.
async fn an_instance_whose_state_does_not_decode_is_parked_while_the_others_flow<
    D: TestDatabase,
>() {
    let mut world = World::<D>::new().await;
    for order in ["o-a", "o-b", "o-c"] {
        world.place(order, "book", 1, "3ds", "1 Main St").await;
    }
    world.settle().await;
    let sagas = world.database.table("sagas");
    let state: Vec<(String,)> = factum::testing::fetch_all(
        &world.store,
        &format!("SELECT CAST(state AS TEXT) FROM {sagas} WHERE saga_id = 'o-a'"),
    )
    .await
    .unwrap();
    let corrupt =
        |state: &str| format!("UPDATE {sagas} SET state = '{state}' WHERE saga_id = 'o-a'");
    factum::testing::execute(&world.store, &corrupt(r#"{"stage": 42}"#))
        .await
        .unwrap();
    match world.runner.instance("o-a").await {
        Err(factum::Error::SagaState { saga_id, .. }) => assert_eq!(saga_id, "o-a"),
        other => panic!("expected a typed state error, got {other:?}"),
    }

    // o-a's and o-b's payments are confirmed; o-c's is not, and all deadlines pass.
    for order in ["o-a", "o-b"] {
        world
            .services
            .payments
            .execute(
                &payment_stream(order),
                ConfirmPayment {
                    order_id: order.into(),
                },
            )
            .await
            .unwrap();
    }
    world.clock.advance(PAYMENT_TIMEOUT * 2);
    world.settle().await;

    assert_eq!(world.order("o-b").await.status, OrderStatus::Completed);
    assert_eq!(
        world.order("o-c").await.status,
        OrderStatus::Cancelled,
        "o-c's timeout fired"
    );
    assert_eq!(world.order("o-a").await.status, OrderStatus::Placed);
    let parked = world.runner.parked().await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].stream_id, payment_stream("o-a"));
    let error = parked[0].error.as_deref().unwrap();
    assert!(error.contains("instance `o-a` does not decode"), "{error}");
    let status = world.runner.status().await.unwrap();
    assert_eq!(status.pending_timeouts, 1, "o-a's timeout waits");

    // Repaired and retried: the instance goes on (its payment cancels the timeout).
    factum::testing::execute(&world.store, &corrupt(&state[0].0))
        .await
        .unwrap();
    assert!(matches!(
        world
            .runner
            .retry_parked(&payment_stream("o-a"))
            .await
            .unwrap(),
        factum::projection::RetryOutcome::Drained { handled: 1 }
    ));
    world.settle().await;
    assert_eq!(world.order("o-a").await.status, OrderStatus::Completed);
    assert_eq!(world.runner.status().await.unwrap().pending_timeouts, 0);
}

factum::on_both_stores!(
    #[tokio::test]
    a_command_to_an_invalid_stream_is_refused_and_the_outbox_flows_on,
    #[tokio::test]
    an_instance_whose_state_does_not_decode_is_parked_while_the_others_flow,
    #[tokio::test]
    an_event_the_saga_cannot_read_parks_its_stream_while_other_orders_flow,
    #[tokio::test]
    an_order_is_reserved_paid_shipped_and_completed,
    #[tokio::test]
    out_of_stock_cancels_the_order_and_touches_nothing_else,
    #[tokio::test]
    a_refused_command_goes_back_to_the_saga_which_cancels_the_order,
    #[tokio::test]
    a_declined_payment_releases_the_inventory_then_cancels_the_order,
    #[tokio::test]
    a_failed_shipment_refunds_releases_and_cancels_in_reverse_order,
    #[tokio::test]
    a_payment_that_never_answers_times_out_after_a_restart_and_compensates,
    #[tokio::test]
    a_payment_confirmed_in_time_cancels_the_timeout,
    #[tokio::test]
    a_command_delivered_again_is_recognised_and_not_applied_twice,
    #[tokio::test]
    dispatchers_take_the_lease_again_as_soon_as_a_round_ends,
);
