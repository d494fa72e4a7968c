//! Runs the order fulfillment saga until every order has settled, then exits.
//!
//! `DATABASE_URL` names the store (`postgres://…`, with `FACTUM_SCHEMA` its schema, default
//! `factum`; or `sqlite://…`),
//! `BATCH_SIZE` the events per transaction. For the crash test:
//!
//! - `FACTUM_CRASH=after-commit`: abort right after committing the saga's handling of the events
//!   (instances, outbox, checkpoint), before delivering a single command;
//! - `FACTUM_CRASH=after-delivery:N`: abort when the N-th command has been delivered (its
//!   aggregate applied it) but before its delivery is acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};

use factum::saga::SagaRunner;
use factum::store::{PostgresStore, SqlStore, SqliteStore};
use orders::Services;
use orders::fulfillment::OrderFulfillment;
use tracing_subscriber::layer::{Context, SubscriberExt as _};

/// Aborts the process at the N-th delivered command, before its acknowledgement (the runtime
/// reports each delivery under the target `factum::saga::delivered`).
struct CrashAfterDelivery {
    delivered: AtomicU64,
    at: u64,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CrashAfterDelivery {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "factum::saga::delivered"
            && self.delivered.fetch_add(1, Ordering::SeqCst) + 1 == self.at
        {
            eprintln!(
                "command {} delivered; aborting before acknowledging it",
                self.at
            );
            std::process::abort();
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .map_err(|_| "set DATABASE_URL to the store (postgres://… or sqlite://…)")?;
    let schema = std::env::var("FACTUM_SCHEMA").unwrap_or_else(|_| "factum".to_owned());
    let batch_size = std::env::var("BATCH_SIZE")
        .ok()
        .and_then(|size| size.parse().ok())
        .unwrap_or(500);
    let crash = std::env::var("FACTUM_CRASH").unwrap_or_default();
    let crash_after_commit = crash == "after-commit";
    if let Some(at) = crash.strip_prefix("after-delivery:") {
        let layer = CrashAfterDelivery {
            delivered: AtomicU64::new(0),
            at: at.parse()?,
        };
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))?;
    }
    if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(&url).await?;
        drive(store, batch_size, crash_after_commit).await?;
    } else {
        let pool = sqlx::PgPool::connect(&url).await?;
        let store = PostgresStore::with_schema(pool, &schema)?;
        drive(store, batch_size, crash_after_commit).await?;
    }
    Ok(())
}

/// Settles every order on `store` (or aborts where the crash test asks).
async fn drive<S: SqlStore>(
    store: S,
    batch_size: usize,
    crash_after_commit: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    store.migrate().await?;
    let services = Services::new(&store);
    let mut runner =
        SagaRunner::<_, OrderFulfillment>::new(store, services.bus()).batch_size(batch_size);
    if crash_after_commit {
        let handled = runner.handle_events().await?;
        eprintln!("handled {handled} events; aborting before delivering their commands");
        std::process::abort();
    }
    let settled = runner.settle().await?;
    let status = runner.status().await?;
    println!(
        "settled: {} events, {} commands, {} timeouts; {} instances active, {} completed",
        settled.events, settled.commands, settled.timeouts, status.active, status.completed
    );
    Ok(())
}
