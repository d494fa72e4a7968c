//! `shipping`: the shipping and notifications services, and a demo that runs them beside the
//! orders service.
//!
//! - `shipping` (the demo): places, cancels and completes orders in a PostgreSQL store of its
//!   own (a fresh schema); the orders service's relays publish them to NATS JetStream (stream
//!   `ORDERS`) and RabbitMQ (exchange `orders`), as the event catalog (`schemas/asyncapi.json`)
//!   documents; it starts both services, each a process of its own, waits until their Redis read
//!   models show the orders, prints them, and removes what it made.
//! - `shipping shipping-service`: the shipping service alone (JetStream → Redis), until Ctrl-C
//!   or SIGTERM.
//! - `shipping notifications-service`: the notifications service alone (RabbitMQ → Redis).
//!
//! Servers: `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`), `NATS_URL`
//! (default `nats://127.0.0.1:4222`, JetStream on), `AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`), `REDIS_URL` (default `redis://127.0.0.1:6379`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use clap::{Parser, Subcommand};
use factum::Repository;
use factum::consumer::{Consumer, JetStreamSource, RabbitMqSource};
use factum::relay::{JetStreamSink, RabbitMqSink, Relay};
use factum::store::PostgresStore;
use orders::order::{CancelOrder, CompleteOrder, Order, PlaceOrder};
use orders::{order_stream, relays};
use shipping::redis_model::RedisReadModel;
use shipping::{NotificationOutbox, Notifications, Shipment, Shipping, ShippingBoard};

#[derive(Parser)]
#[command(about = "The shipping and notifications services: orders from brokers into Redis")]
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
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        global = true
    )]
    amqp: String,
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        global = true
    )]
    redis: String,
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        global = true
    )]
    database: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The shipping service: JetStream into Redis, until Ctrl-C or SIGTERM.
    ShippingService {
        /// The JetStream stream the orders service's relay publishes to.
        #[arg(long, default_value = relays::JETSTREAM_STREAM)]
        stream: String,
        /// The subjects to read.
        #[arg(long, default_value = "orders.Order.>")]
        subjects: String,
        /// The Redis key prefix of the read model.
        #[arg(long, default_value = "shipping:")]
        prefix: String,
    },
    /// The notifications service: a RabbitMQ queue into Redis, until Ctrl-C or SIGTERM.
    NotificationsService {
        /// Its queue, bound to the exchange when it starts.
        #[arg(long, default_value = "notifications")]
        queue: String,
        /// The orders service's exchange.
        #[arg(long, default_value = relays::EXCHANGE)]
        exchange: String,
        /// The routing keys to bind.
        #[arg(long, default_value = "orders.Order.#")]
        pattern: String,
        /// The Redis key prefix of the read model.
        #[arg(long, default_value = "notifications:")]
        prefix: String,
    },
    /// The demo (the default).
    Demo,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Some(Command::ShippingService {
            stream,
            subjects,
            prefix,
        }) => shipping_service(&cli, stream, subjects, prefix).await,
        Some(Command::NotificationsService {
            queue,
            exchange,
            pattern,
            prefix,
        }) => notifications_service(&cli, queue, exchange, pattern, prefix).await,
        Some(Command::Demo) | None => demo(&cli).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Each server reached, or named in one line with what to do.
async fn connect_nats(url: &str) -> Result<async_nats::Client, Error> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .connect(url)
        .await
        .map_err(|e| {
            format!("NATS is not reachable at {url} ({e}): start `nats-server -js` (apt install nats-server) or set NATS_URL").into()
        })
}

async fn connect_redis<M: shipping::redis_model::Model>(
    url: &str,
    prefix: &str,
    model: M,
) -> Result<RedisReadModel<M>, Error> {
    RedisReadModel::connect(url, prefix, model).await.map_err(|e| {
        format!("Redis is not reachable at {url} ({e}): start `redis-server` (apt install redis-server) or set REDIS_URL").into()
    })
}

fn amqp_unreachable(url: &str, error: impl std::fmt::Display) -> Error {
    format!("RabbitMQ is not reachable at {url} ({error}): start `rabbitmq-server` (apt install rabbitmq-server) or set AMQP_URL").into()
}

async fn shipping_service(
    cli: &Cli,
    stream: &str,
    subjects: &str,
    prefix: &str,
) -> Result<(), Error> {
    let client = connect_nats(&cli.nats).await?;
    let board = connect_redis(&cli.redis, prefix, Shipping).await?;
    let source = JetStreamSource::new(client, stream, subjects);
    eprintln!("shipping service: reading `{subjects}` of JetStream stream `{stream}`");
    Consumer::new("shipping", source, board)
        .run(shutdown())
        .await?;
    Ok(())
}

async fn notifications_service(
    cli: &Cli,
    queue: &str,
    exchange: &str,
    pattern: &str,
    prefix: &str,
) -> Result<(), Error> {
    let outbox = connect_redis(&cli.redis, prefix, Notifications).await?;
    let source = RabbitMqSource::new(&cli.amqp, queue).bind(exchange, pattern);
    eprintln!(
        "notifications service: reading queue `{queue}` (`{pattern}` of exchange `{exchange}`)"
    );
    Consumer::new("notifications", source, outbox)
        .run(shutdown())
        .await?;
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

/// The names the demo runs under: the catalog's, with the Redis prefixes and the queue made
/// unique to the run.
struct Run {
    id: String,
    queue: String,
    shipping_prefix: String,
    notifications_prefix: String,
}

impl Run {
    fn new() -> Self {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let id = id[id.len() - 8..].to_owned();
        Self {
            queue: format!("notifications-{id}"),
            shipping_prefix: format!("shipping:{id}:"),
            notifications_prefix: format!("notifications:{id}:"),
            id,
        }
    }
}

/// What the demo made, removed when it ends.
struct Made {
    pool: sqlx::PgPool,
    store: PostgresStore,
    context: jetstream::Context,
    amqp: String,
    queue: String,
    board: ShippingBoard,
    outbox: NotificationOutbox,
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
        if let Err(error) = self.context.delete_stream(relays::JETSTREAM_STREAM).await {
            eprintln!(
                "warning: could not delete stream {}: {error}",
                relays::JETSTREAM_STREAM
            );
        }
        if let Err(error) = delete_queue(&self.amqp, &self.queue).await {
            eprintln!("warning: could not delete queue {}: {error}", self.queue);
        }
        for deleted in [self.board.delete().await, self.outbox.delete().await] {
            if let Err(error) = deleted {
                eprintln!("warning: could not delete the Redis keys: {error}");
            }
        }
    }
}

/// Deletes the demo's queue, and the exchange when no other queue is bound to it.
async fn delete_queue(url: &str, queue: &str) -> Result<(), lapin::Error> {
    let connection =
        lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
        .await?;
    let exchange = lapin::options::ExchangeDeleteOptions {
        if_unused: true,
        ..Default::default()
    };
    // In use by another queue: kept (the refusal closes the channel only).
    let _ = channel
        .exchange_delete(relays::EXCHANGE.into(), exchange)
        .await;
    connection.close(200, "done".into()).await
}

const ORDERS: [(&str, &str, &str); 4] = [
    ("o-1", "ada", "12 Analytical Row, London"),
    ("o-2", "grace", "1 Compiler Way, Arlington"),
    ("o-3", "alan", "4 Enigma Close, Bletchley"),
    ("o-4", "edsger", "5 Semaphore Lane, Nuenen"),
];

async fn demo(cli: &Cli) -> Result<(), Error> {
    let run = Run::new();
    let client = connect_nats(&cli.nats).await?;
    let board = connect_redis(&cli.redis, &run.shipping_prefix, Shipping).await?;
    let outbox = connect_redis(&cli.redis, &run.notifications_prefix, Notifications).await?;
    let queue = RabbitMqSource::new(&cli.amqp, &run.queue).bind(relays::EXCHANGE, "orders.Order.#");
    // Bound before the relay publishes: RabbitMQ drops what no queue is bound for.
    queue
        .declare()
        .await
        .map_err(|e| amqp_unreachable(&cli.amqp, e))?;
    let pool = sqlx::PgPool::connect(&cli.database).await.map_err(|e| {
        format!(
            "PostgreSQL is not reachable at {} ({e}): start it or set DATABASE_URL",
            cli.database
        )
    })?;
    let store = PostgresStore::with_schema(pool.clone(), &format!("shipping_demo_{}", run.id))?;
    store.migrate().await?;
    let context = jetstream::new(client.clone());
    // The catalog's stream, made afresh: what an earlier run left would show up in the models.
    let _ = context.delete_stream(relays::JETSTREAM_STREAM).await;
    context
        .create_stream(stream::Config {
            name: relays::JETSTREAM_STREAM.into(),
            subjects: vec![format!("{}.>", relays::PREFIX)],
            ..Default::default()
        })
        .await
        .map_err(|e| {
            format!(
                "could not create JetStream stream {} ({e}): is JetStream on (`nats-server -js`)?",
                relays::JETSTREAM_STREAM
            )
        })?;
    let made = Made {
        pool,
        store: store.clone(),
        context,
        amqp: cli.amqp.clone(),
        queue: run.queue.clone(),
        board: board.clone(),
        outbox: outbox.clone(),
    };
    let outcome = run_demo(cli, &run, &store, client, &board, &outbox).await;
    made.remove().await;
    outcome
}

async fn run_demo(
    cli: &Cli,
    run: &Run,
    store: &PostgresStore,
    client: async_nats::Client,
    board: &ShippingBoard,
    outbox: &NotificationOutbox,
) -> Result<(), Error> {
    println!(
        "Factum shipping example: the orders service (PostgreSQL schema shipping_demo_{}) relays",
        run.id
    );
    println!(
        "its Order events to NATS JetStream (stream {}) and RabbitMQ (exchange {}); two services,",
        relays::JETSTREAM_STREAM,
        relays::EXCHANGE
    );
    println!("each a process of its own, keep Redis read models from them.\n");

    // The orders service's relays, as the catalog documents them.
    let (stop_relays, relays_stopped) = tokio::sync::watch::channel(false);
    let stopped = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
        let _ = receiver.wait_for(|stop| *stop).await;
    };
    let nats_sink = JetStreamSink::new(client, relays::JETSTREAM_STREAM, relays::PREFIX).await?;
    let to_nats = Relay::new(store.clone(), relays::NATS_RELAY, nats_sink)
        .aggregate_types(relays::RELAYED_AGGREGATES);
    let to_nats = tokio::spawn(to_nats.run(stopped(relays_stopped.clone())));
    let amqp_sink = RabbitMqSink::connect(&cli.amqp, relays::EXCHANGE, relays::PREFIX)
        .await
        .map_err(|e| amqp_unreachable(&cli.amqp, e))?;
    let to_rabbitmq = Relay::new(store.clone(), relays::RABBITMQ_RELAY, amqp_sink)
        .aggregate_types(relays::RELAYED_AGGREGATES);
    let to_rabbitmq = tokio::spawn(to_rabbitmq.run(stopped(relays_stopped)));

    // The two services, each in a process of its own.
    let me = std::env::current_exe()?;
    let urls = [
        "--nats", &cli.nats, "--amqp", &cli.amqp, "--redis", &cli.redis,
    ];
    let mut shipping = tokio::process::Command::new(&me)
        .args(urls)
        .args(["shipping-service", "--prefix", &run.shipping_prefix])
        .kill_on_drop(true)
        .spawn()?;
    let mut notifications = tokio::process::Command::new(&me)
        .args(urls)
        .args(["notifications-service", "--queue", &run.queue])
        .args(["--prefix", &run.notifications_prefix])
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
    println!("orders service: completed o-4\n");

    // Caught up: shipping read the 5 events it reads, notifications all 6.
    let began = Instant::now();
    while board.applied().await? < 5 || outbox.applied().await? < 6 {
        if began.elapsed() > Duration::from_secs(30) {
            return Err("the services did not catch up within 30 s".into());
        }
        for (service, process) in [
            ("shipping", &mut shipping),
            ("notifications", &mut notifications),
        ] {
            if let Some(status) = process.try_wait()? {
                return Err(format!("the {service} service stopped: {status}").into());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("shipping service's read model (Redis, from JetStream):");
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
    println!("\nnotifications service's outbox (Redis, from RabbitMQ):");
    for line in outbox.outbox().await? {
        println!("  {line}");
    }

    for process in [&mut shipping, &mut notifications] {
        process.start_kill()?;
        process.wait().await?;
    }
    let _ = stop_relays.send(true);
    to_nats.await??;
    to_rabbitmq.await??;
    Ok(())
}
