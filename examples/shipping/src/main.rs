//! `shipping`: the shipping service, and a demo that runs it beside the orders service.
//!
//! - `shipping` (the demo): places and cancels orders in a PostgreSQL store of its own (a fresh
//!   schema), relays them to NATS JetStream, starts `shipping service` as a process of its own,
//!   waits until the service's Redis read model shows them, prints it, and removes what it made.
//! - `shipping service --stream S --subjects F --prefix P`: the service alone, until Ctrl-C or
//!   SIGTERM.
//!
//! Servers: `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`), `NATS_URL`
//! (default `nats://127.0.0.1:4222`, JetStream on), `REDIS_URL` (default
//! `redis://127.0.0.1:6379`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use clap::{Parser, Subcommand};
use factum::Repository;
use factum::consumer::{Consumer, JetStreamSource};
use factum::relay::{JetStreamSink, Relay};
use factum::store::PostgresStore;
use orders::order::{CancelOrder, CompleteOrder, Order, PlaceOrder};
use orders::order_stream;
use shipping::{Shipment, ShippingBoard};

#[derive(Parser)]
#[command(about = "The shipping service: orders from NATS JetStream into a Redis read model")]
struct Cli {
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    nats: String,
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        global = true
    )]
    redis: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the shipping service until Ctrl-C or SIGTERM.
    Service {
        /// The JetStream stream the orders service's relay publishes to.
        #[arg(long)]
        stream: String,
        /// The subjects to read, e.g. `orders.Order.>`.
        #[arg(long)]
        subjects: String,
        /// The Redis key prefix of the read model.
        #[arg(long, default_value = "shipping:")]
        prefix: String,
    },
    /// The demo (the default).
    Demo {
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        database: String,
    },
}

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Command::Service {
            stream,
            subjects,
            prefix,
        }) => service(&cli.nats, &cli.redis, &stream, &subjects, &prefix).await,
        Some(Command::Demo { database }) => demo(&cli.nats, &cli.redis, &database).await,
        None => {
            let database = std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
            demo(&cli.nats, &cli.redis, &database).await
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The servers, each reached or named in one line with what to do.
async fn connect_nats(url: &str) -> Result<async_nats::Client, Error> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .connect(url)
        .await
        .map_err(|e| {
            format!("NATS is not reachable at {url} ({e}): start `nats-server -js` (apt install nats-server) or set NATS_URL").into()
        })
}

async fn connect_redis(url: &str, prefix: &str) -> Result<ShippingBoard, Error> {
    ShippingBoard::connect(url, prefix).await.map_err(|e| {
        format!("Redis is not reachable at {url} ({e}): start `redis-server` (apt install redis-server) or set REDIS_URL").into()
    })
}

async fn service(
    nats: &str,
    redis: &str,
    stream: &str,
    subjects: &str,
    prefix: &str,
) -> Result<(), Error> {
    let client = connect_nats(nats).await?;
    let board = connect_redis(redis, prefix).await?;
    let source = JetStreamSource::new(client, stream, subjects);
    let consumer = Consumer::new("shipping", source, board);
    eprintln!("shipping service: reading `{subjects}` of JetStream stream `{stream}`");
    consumer.run(shutdown()).await?;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// What the demo made, removed when it ends.
struct Made {
    pool: sqlx::PgPool,
    store: PostgresStore,
    context: jetstream::Context,
    stream: String,
    board: ShippingBoard,
}

impl Made {
    async fn remove(self) {
        let drop_schema = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.store.schema());
        if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(drop_schema))
            .execute(&self.pool)
            .await
        {
            eprintln!(
                "warning: could not drop schema {}: {error}",
                self.store.schema()
            );
        }
        if let Err(error) = self.context.delete_stream(&self.stream).await {
            eprintln!("warning: could not delete stream {}: {error}", self.stream);
        }
        if let Err(error) = self.board.delete().await {
            eprintln!("warning: could not delete the Redis keys: {error}");
        }
    }
}

const ORDERS: [(&str, &str, &str); 4] = [
    ("o-1", "ada", "12 Analytical Row, London"),
    ("o-2", "grace", "1 Compiler Way, Arlington"),
    ("o-3", "alan", "4 Enigma Close, Bletchley"),
    ("o-4", "edsger", "5 Semaphore Lane, Nuenen"),
];

async fn demo(nats: &str, redis: &str, database: &str) -> Result<(), Error> {
    let run = uuid::Uuid::now_v7().simple().to_string();
    let run = &run[run.len() - 8..];
    let client = connect_nats(nats).await?;
    let board = connect_redis(redis, &format!("shipping:{run}:")).await?;
    let pool = sqlx::PgPool::connect(database).await.map_err(|e| {
        format!("PostgreSQL is not reachable at {database} ({e}): start it or set DATABASE_URL")
    })?;
    let store = PostgresStore::with_schema(pool.clone(), &format!("shipping_demo_{run}"))?;
    store.migrate().await?;
    let context = jetstream::new(client.clone());
    let stream = format!("ORDERS_{run}");
    let prefix = format!("orders_{run}");
    context
        .create_stream(stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{prefix}.>")],
            ..Default::default()
        })
        .await
        .map_err(|e| format!("could not create JetStream stream {stream} ({e}): is JetStream on (`nats-server -js`)?"))?;
    let made = Made {
        pool,
        store: store.clone(),
        context,
        stream: stream.clone(),
        board: board.clone(),
    };
    let outcome = run_demo(nats, redis, &store, client, &stream, &prefix, &board, run).await;
    made.remove().await;
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn run_demo(
    nats: &str,
    redis: &str,
    store: &PostgresStore,
    client: async_nats::Client,
    stream: &str,
    prefix: &str,
    board: &ShippingBoard,
    run: &str,
) -> Result<(), Error> {
    println!("Factum shipping example: the orders service (PostgreSQL schema shipping_demo_{run})");
    println!(
        "relays its events to NATS JetStream stream {stream}; the shipping service, a process"
    );
    println!("of its own, keeps a Redis read model (keys shipping:{run}:*).\n");

    // The orders service's relay.
    let sink = JetStreamSink::new(client, stream, prefix).await?;
    let relay = Relay::new(store.clone(), "orders-to-nats", sink);
    let (stop_relay, relay_stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(relay.run(async move {
        let _ = relay_stopped.await;
    }));

    // The shipping service, in a process of its own.
    let mut service = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "--nats", nats, "--redis", redis, "service", "--stream", stream,
        ])
        .args(["--subjects", &format!("{prefix}.Order.>")])
        .args(["--prefix", &format!("shipping:{run}:")])
        .kill_on_drop(true)
        .spawn()?;

    let orders = Repository::<Order, _>::new(store.clone());
    for (id, customer, address) in ORDERS {
        orders
            .execute(
                &order_stream(id),
                PlaceOrder {
                    order_id: id.into(),
                    customer: customer.into(),
                    sku: "book".into(),
                    quantity: 1,
                    amount: 1_999,
                    card: "4242".into(),
                    address: address.into(),
                },
            )
            .await?;
        println!("orders service: placed {id} for {customer}");
    }
    orders
        .execute(
            &order_stream("o-2"),
            CancelOrder {
                order_id: "o-2".into(),
                reason: "the customer changed her mind".into(),
            },
        )
        .await?;
    println!("orders service: cancelled o-2");
    orders
        .execute(
            &order_stream("o-4"),
            CompleteOrder {
                order_id: "o-4".into(),
            },
        )
        .await?;
    println!("orders service: completed o-4 (an event the shipping service does not read)\n");

    // The service has caught up when it has applied all five events it reads.
    let began = Instant::now();
    while board.applied().await? < 5 {
        if began.elapsed() > Duration::from_secs(30) {
            return Err("the shipping service did not catch up within 30 s".into());
        }
        if let Some(status) = service.try_wait()? {
            return Err(format!("the shipping service stopped: {status}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("shipping service's read model (Redis):");
    for (id, _, _) in ORDERS {
        if let Some(Shipment {
            status,
            customer,
            address,
            reason,
            ..
        }) = board.shipment(id).await?
        {
            let detail = reason.or(address).unwrap_or_default();
            let customer = customer.unwrap_or_default();
            println!("  {id}: {status:<9} {customer:<7} {detail}");
        }
    }
    println!("  to ship: {}", board.to_ship().await?.join(", "));

    service.start_kill()?;
    service.wait().await?;
    let _ = stop_relay.send(());
    relay.await??;
    Ok(())
}
