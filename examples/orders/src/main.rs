//! Factum's main example, end to end: commands on four aggregates, the `order_fulfillment` saga
//! (compensations, a payment timeout) and the `order_board` projection.
//!
//! It runs on SQLite by default (a file under `target/`, no server needed), or on PostgreSQL
//! when `DATABASE_URL` names one (in the schema `FACTUM_SCHEMA`, default `orders_example`). Each
//! run starts afresh.

use std::error::Error;
use std::path::{Path, PathBuf};

use factum::projection::ProjectionRunner;
use factum::saga::{ManualClock, SagaRunner};
use factum::store::{PostgresStore, SqlStore, SqliteStore};
use orders::board::{self, OrderBoard};
use orders::fulfillment::{OrderFulfillment, PAYMENT_TIMEOUT};
use orders::inventory::AddStock;
use orders::order::PlaceOrder;
use orders::{Services, inventory_stream, order_stream, payment_stream, shipment_stream};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// The PostgreSQL schema, unless `FACTUM_SCHEMA` names another.
const SCHEMA: &str = "orders_example";

fn schema() -> String {
    std::env::var("FACTUM_SCHEMA").unwrap_or_else(|_| SCHEMA.to_owned())
}

/// The five orders: one per ending.
const ORDERS: [(&str, u32, &str, &str, &str); 5] = [
    ("o-1", 2, "visa", "1 Main St", "completes"),
    ("o-2", 9, "visa", "1 Main St", "out of stock"),
    ("o-3", 1, "declined", "1 Main St", "card declined"),
    ("o-4", 1, "visa", "nowhere", "shipment fails"),
    ("o-5", 1, "3ds", "1 Main St", "payment never confirmed"),
];

/// The example on one store: the saga and the projection, each written once for both stores.
struct Example<S: SqlStore> {
    store: S,
    saga: SagaRunner<S, OrderFulfillment>,
    board: ProjectionRunner<S, OrderBoard>,
    description: String,
}

impl<S: SqlStore> Example<S> {
    /// The example on a migrated `store`, with the board's table created.
    async fn new(store: S, clock: &ManualClock, description: String) -> Result<Self> {
        store.migrate().await?;
        let mut transaction = store.begin().await?;
        sqlx::raw_sql(board::CREATE_TABLE)
            .execute(&mut transaction.tx())
            .await?;
        transaction.commit().await?;
        let services = Services::new(&store);
        Ok(Self {
            saga: SagaRunner::new(store.clone(), services.bus()).clock(clock.clone()),
            board: ProjectionRunner::new(store.clone(), OrderBoard),
            store,
            description,
        })
    }

    /// The board, once the projection has caught up.
    async fn board(&mut self) -> Result<Vec<board::Row>> {
        self.board.catch_up().await?;
        let mut transaction = self.store.begin().await?;
        let rows = sqlx::query_as(board::SELECT_ALL)
            .fetch_all(&mut transaction.tx())
            .await?;
        transaction.rollback().await?;
        Ok(rows)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let clock = ManualClock::default();
    match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => {
            let example = postgres(&url, &clock).await?;
            demo(example, &clock).await
        }
        _ => {
            let path = Path::new("target").join("factum-orders-example.db");
            let example = sqlite(path, &clock).await?;
            demo(example, &clock).await
        }
    }
}

async fn sqlite(path: PathBuf, clock: &ManualClock) -> Result<Example<SqliteStore>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Start afresh.
    SqliteStore::remove_files(&path)?;
    let store = SqliteStore::open(&path).await?;
    let description = format!("the SQLite file {}", path.display());
    Example::new(store, clock, description).await
}

async fn postgres(url: &str, clock: &ManualClock) -> Result<Example<PostgresStore>> {
    // The read model's tables are unqualified: they live in the store's schema.
    let schema = schema();
    let options = url
        .parse::<sqlx::postgres::PgConnectOptions>()?
        .options([("search_path", schema.as_str())]);
    let pool = sqlx::PgPool::connect_with(options).await.map_err(|e| {
        format!("cannot reach PostgreSQL at {url} ({e}): unset DATABASE_URL to run on SQLite")
    })?;
    // A plain identifier (checked by the store) before it goes into SQL.
    let store = PostgresStore::with_schema(pool.clone(), &schema)?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await?;
    let description = format!("the schema `{schema}` of {url}");
    Example::new(store, clock, description).await
}

async fn demo<S: SqlStore>(mut example: Example<S>, clock: &ManualClock) -> Result<()> {
    let services = Services::new(&example.store);
    println!(
        "Factum order fulfillment example, on {}\n",
        example.description
    );
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
    for (id, quantity, card, address, _) in ORDERS {
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
    example.saga.settle().await?;
    println!(
        "(the clock moves {} minutes on)\n",
        PAYMENT_TIMEOUT.as_secs() / 60
    );
    clock.advance(PAYMENT_TIMEOUT);
    example.saga.settle().await?;

    for (id, _, _, _, expected) in ORDERS {
        let instance = example.saga.instance(id).await?.ok_or("no saga instance")?;
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
            for event in example.store.read_stream(&stream, ..).await? {
                println!(
                    "    {:<14} {:<18} correlation {}",
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
    println!("\nthe `order_board` read model (projection):");
    for (order, customer, amount, status, reason) in example.board().await? {
        println!(
            "    {order:<5} {customer:<5} {amount:>6} {status:<10} {}",
            reason.unwrap_or_default()
        );
    }
    println!(
        "\nthe events and read models are in {}",
        example.description
    );
    let catalog = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    println!(
        "the event catalog (JSON Schema, AsyncAPI, flow diagram) is in {}",
        catalog.canonicalize().unwrap_or(catalog).display()
    );
    Ok(())
}
