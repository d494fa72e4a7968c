//! Saga benchmark against PostgreSQL: completion time of the order fulfillment flow (order
//! placed → inventory reserved → payment processed → shipped → order completed) driven by the
//! `order_fulfillment` saga, live, at a steady order rate; against the same five commands
//! executed back to back by one client (the flow's floor: no saga, no feed, no outbox), in the
//! same run, alternating which goes first.
//!
//! Times are the database's: from the `OrderPlaced` append to the `OrderCompleted` append. The
//! clients, the saga runner and its command bus share one store handle, as in one service. The
//! direct phase runs on a schema of its own with no saga runner (the runner runs during the saga
//! phase only), so the baseline does its work alone.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use factum::saga::SagaRunner;
use factum::store::PostgresStore;
use factum::testing::postgres::TemporaryStore;
use factum::{EventStore, Repository};
use orders::fulfillment::OrderFulfillment;
use orders::inventory::{AddStock, ReserveInventory};
use orders::order::{CompleteOrder, PlaceOrder};
use orders::payment::ProcessPayment;
use orders::shipping::ShipOrder;
use orders::{Services, inventory_stream, order_stream, payment_stream, shipment_stream};
use serde::Serialize;

use crate::stats::{median, millis};

pub struct Config {
    pub runs: usize,
    pub orders: usize,
    pub rate: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub runs: usize,
    pub orders_per_run: usize,
    pub rate: u64,
    /// Saga-driven flow, milliseconds, over all runs.
    pub saga: Percentiles,
    /// The five commands back to back, milliseconds, over all runs.
    pub direct: Percentiles,
    /// saga p50 / direct p50, median of the per-run ratios.
    pub p50_ratio: f64,
    /// Orders that did not complete (must be 0).
    pub incomplete: usize,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    fn of(mut values: Vec<Duration>) -> Self {
        values.sort_unstable();
        let at = |p: f64| {
            let rank = ((values.len() as f64 * p).ceil() as usize).clamp(1, values.len().max(1));
            values.get(rank - 1).copied().map_or(0.0, millis)
        };
        Self {
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: values.last().copied().map_or(0.0, millis),
        }
    }
}

const SKUS: usize = 8;

/// A store of its own with stock: the saga phase and the direct phase each have one, so that
/// neither sees the other's orders (a live saga would start on the baseline's `OrderPlaced`
/// and send commands to its streams).
async fn stocked_store() -> Result<TemporaryStore, Box<dyn std::error::Error>> {
    let store = TemporaryStore::with_pool_size(32).await?;
    let services = Services::new(&*store);
    for sku in 0..SKUS {
        services
            .inventory
            .execute(
                &inventory_stream(&format!("sku{sku}")),
                AddStock {
                    sku: format!("sku{sku}"),
                    quantity: 1_000_000,
                },
            )
            .await?;
    }
    Ok(store)
}

pub async fn run(config: &Config) -> Result<Report, Box<dyn std::error::Error>> {
    let saga_store = stocked_store().await?;
    let direct_store = stocked_store().await?;
    // One store handle for the application (clients, saga, command bus), as a service has it.
    let client: PostgresStore = (*saga_store).clone();
    let services = Services::new(&client);
    let direct_client: PostgresStore = (*direct_store).clone();
    let direct_services = Services::new(&direct_client);

    let mut saga_times = Vec::new();
    let mut direct_times = Vec::new();
    let mut ratios = Vec::new();
    let mut incomplete = 0;
    for run in 0..config.runs {
        let mut run_saga = Vec::new();
        let mut run_direct = Vec::new();
        for phase in 0..2 {
            let saga_first = run % 2 == 0;
            if (phase == 0) == saga_first {
                // The saga runs during its phase only: nothing runs beside the baseline.
                let runner = SagaRunner::<_, OrderFulfillment>::new(client.clone(), services.bus())
                    .poll_interval(Duration::from_millis(200));
                let handle = runner.handle();
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let saga = tokio::spawn(runner.run(async {
                    stopped.await.ok();
                }));
                // Timed from a running saga, as in a service that is up.
                while handle.state() != factum::projection::RunnerState::Running {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let (times, missing) = saga_phase(&client, &services, config, run).await?;
                let _ = stop.send(());
                saga.await??;
                incomplete += missing;
                run_saga = times;
            } else {
                run_direct = direct_phase(&direct_client, &direct_services, config, run).await?;
            }
        }
        let p50 = |values: &[Duration]| {
            let mut sorted = values.to_vec();
            sorted.sort_unstable();
            sorted.get(sorted.len() / 2).copied().map_or(0.0, millis)
        };
        ratios.push(p50(&run_saga) / p50(&run_direct).max(f64::EPSILON));
        eprintln!(
            "  run {}: saga p50 {:.1} ms, direct p50 {:.1} ms",
            run + 1,
            p50(&run_saga),
            p50(&run_direct)
        );
        saga_times.extend(run_saga);
        direct_times.extend(run_direct);
    }
    Ok(Report {
        runs: config.runs,
        orders_per_run: config.orders,
        rate: config.rate,
        saga: Percentiles::of(saga_times),
        direct: Percentiles::of(direct_times),
        p50_ratio: median(&ratios),
        incomplete,
    })
}

fn place(order_id: &str, n: usize) -> PlaceOrder {
    PlaceOrder {
        order_id: order_id.to_owned(),
        customer: "bench".into(),
        sku: format!("sku{}", n % SKUS),
        quantity: 1,
        amount: 1_000,
        card: "visa".into(),
        address: "1 Main St".into(),
    }
}

/// Places orders at the steady rate and waits for the saga to complete them.
async fn saga_phase(
    client: &PostgresStore,
    services: &Services<PostgresStore>,
    config: &Config,
    run: usize,
) -> Result<(Vec<Duration>, usize), Box<dyn std::error::Error>> {
    let interval = Duration::from_secs_f64(1.0 / config.rate as f64);
    let started = Instant::now();
    let ids: Vec<String> = (0..config.orders).map(|n| format!("s{run}-{n}")).collect();
    for (n, id) in ids.iter().enumerate() {
        let due = started + interval * u32::try_from(n)?;
        tokio::time::sleep_until(due.into()).await;
        services
            .orders
            .execute(&order_stream(id), place(id, n))
            .await?;
    }
    // Wait (up to 30 s) for the last completions.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = completions(client, &ids).await?;
        if done.len() == ids.len() || Instant::now() > deadline {
            let missing = ids.len() - done.len();
            return Ok((done, missing));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The same five commands, back to back, by one client per order, at the same rate.
async fn direct_phase(
    client: &PostgresStore,
    services: &Services<PostgresStore>,
    config: &Config,
    run: usize,
) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    let interval = Duration::from_secs_f64(1.0 / config.rate as f64);
    let started = Instant::now();
    let ids: Vec<String> = (0..config.orders).map(|n| format!("d{run}-{n}")).collect();
    let mut tasks = Vec::new();
    for (n, id) in ids.iter().cloned().enumerate() {
        let due = started + interval * u32::try_from(n)?;
        tokio::time::sleep_until(due.into()).await;
        let services = services.clone();
        tasks.push(tokio::spawn(
            async move { direct_flow(&services, &id, n).await },
        ));
    }
    for task in tasks {
        task.await?.map_err(|e| e.to_string())?;
    }
    completions(client, &ids).await
}

async fn direct_flow(
    services: &Services<PostgresStore>,
    id: &str,
    n: usize,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let order = place(id, n);
    let sku = order.sku.clone();
    services.orders.execute(&order_stream(id), order).await?;
    execute(
        &services.inventory,
        &inventory_stream(&sku),
        ReserveInventory {
            order_id: id.to_owned(),
            sku,
            quantity: 1,
        },
    )
    .await?;
    execute(
        &services.payments,
        &payment_stream(id),
        ProcessPayment {
            order_id: id.to_owned(),
            amount: 1_000,
            card: "visa".into(),
        },
    )
    .await?;
    execute(
        &services.shipments,
        &shipment_stream(id),
        ShipOrder {
            order_id: id.to_owned(),
            address: "1 Main St".into(),
        },
    )
    .await?;
    execute(
        &services.orders,
        &order_stream(id),
        CompleteOrder {
            order_id: id.to_owned(),
        },
    )
    .await?;
    Ok(())
}

async fn execute<A, C>(
    repository: &Repository<A, PostgresStore>,
    stream: &str,
    command: C,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    A: factum::Handle<C>,
    C: Sync,
{
    repository
        .execute(stream, command)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// For each completed order: from its `OrderPlaced` to its `OrderCompleted`, by the database's
/// clock.
async fn completions(
    client: &PostgresStore,
    ids: &[String],
) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    let mut times = Vec::with_capacity(ids.len());
    for id in ids {
        let events = client.read_stream(&order_stream(id), ..).await?;
        let at = |event_type: &str| -> Option<DateTime<Utc>> {
            events
                .iter()
                .find(|e| e.event_type == event_type)
                .map(|e| e.recorded_at)
        };
        if let (Some(placed), Some(completed)) = (at("OrderPlaced"), at("OrderCompleted")) {
            times.push((completed - placed).to_std().unwrap_or_default());
        }
    }
    Ok(times)
}
