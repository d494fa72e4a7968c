//! Projections on PostgreSQL: the read model is committed with the checkpoint, so redelivered
//! events have no second effect; one runner at a time holds the lease, and another takes over
//! when it dies; live events follow; failing handlers roll their batch back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use factum::projection::{ProjectionRunner, RunnerError};
use factum::testing::postgres::TemporaryStore;
use factum::{Envelope, EventStore, ExpectedVersion, FeedPosition, FeedQuery, NewEvent, Payload};
use sqlx::PgConnection;

#[factum::event(name = "Deposited")]
#[derive(Debug)]
pub struct DepositedV1 {
    pub dollars: i64,
}

#[factum::event(version = 2)]
#[derive(Debug)]
pub struct Deposited {
    pub cents: i64,
}

#[factum::upcast]
fn to_cents(old: DepositedV1) -> Deposited {
    Deposited {
        cents: old.dollars * 100,
    }
}

#[factum::event]
#[derive(Debug)]
pub struct Withdrawn {
    pub cents: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("the read model is unavailable")]
pub struct Unavailable;

/// Balances per account, in a table of the test's schema.
#[derive(Debug)]
pub struct Balances {
    table: String,
    handled: Arc<AtomicU64>,
    /// Failures to inject before succeeding.
    failures: Arc<AtomicU32>,
}

#[factum::projection(name = "balances")]
impl Balances {
    #[handle]
    async fn deposited(
        &mut self,
        event: &Deposited,
        envelope: &Envelope,
        tx: &mut PgConnection,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.add(&envelope.stream_id, event.cents, tx).await
    }

    #[handle]
    async fn withdrawn(
        &mut self,
        event: &Withdrawn,
        envelope: &Envelope,
        tx: &mut PgConnection,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.add(&envelope.stream_id, -event.cents, tx).await
    }

    async fn add(
        &mut self,
        account: &str,
        cents: i64,
        tx: &mut PgConnection,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Box::new(Unavailable));
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} (account, cents, events) VALUES ($1, $2, 1)
             ON CONFLICT (account) DO UPDATE SET cents = {0}.cents + $2, events = {0}.events + 1",
            self.table
        )))
        .bind(account)
        .bind(cents)
        .execute(&mut *tx)
        .await?;
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

async fn setup() -> (TemporaryStore, String) {
    let store = TemporaryStore::new().await.unwrap();
    let table = format!("\"{}\".balances", store.schema());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (account text PRIMARY KEY, cents bigint NOT NULL, events bigint NOT NULL)"
    )))
    .execute(store.pool())
    .await
    .unwrap();
    (store, table)
}

fn balances(table: &str) -> Balances {
    Balances {
        table: table.to_owned(),
        handled: Arc::default(),
        failures: Arc::default(),
    }
}

fn deposit(cents: i64) -> NewEvent {
    NewEvent::new(
        "Deposited",
        2,
        Payload::encode(&serde_json::json!({ "cents": cents })).unwrap(),
    )
}

fn withdrawal(cents: i64) -> NewEvent {
    NewEvent::new(
        "Withdrawn",
        1,
        Payload::encode(&serde_json::json!({ "cents": cents })).unwrap(),
    )
}

fn noise() -> NewEvent {
    NewEvent::new(
        "Audited",
        1,
        Payload::encode(&serde_json::json!({})).unwrap(),
    )
}

async fn read_model(store: &TemporaryStore, table: &str) -> Vec<(String, i64, i64)> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT account, cents, events FROM {table} ORDER BY account"
    )))
    .fetch_all(store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn catching_up_projects_every_event_once_upcasting_old_versions() {
    let (store, table) = setup().await;
    let v1 = NewEvent::new(
        "Deposited",
        1,
        Payload::encode(&serde_json::json!({ "dollars": 3 })).unwrap(),
    );
    store
        .append(
            "acc-1",
            "Account",
            ExpectedVersion::Any,
            vec![deposit(500), noise(), withdrawal(200), v1],
        )
        .await
        .unwrap();
    store
        .append("acc-2", "Account", ExpectedVersion::Any, vec![deposit(70)])
        .await
        .unwrap();

    let mut runner = ProjectionRunner::new(store.another_client().await.unwrap(), balances(&table))
        .batch_size(2);
    assert_eq!(
        runner.catch_up().await.unwrap(),
        4,
        "the event of another type is not delivered"
    );
    assert_eq!(
        read_model(&store, &table).await,
        [("acc-1".to_owned(), 600, 3), ("acc-2".to_owned(), 70, 1)],
        "v1 was read as v2 (3 dollars = 300 cents)"
    );
    assert_eq!(runner.catch_up().await.unwrap(), 0, "nothing twice");
    let status = runner.status().await.unwrap();
    assert_eq!(status.event_lag, 0);
    assert_eq!(status.time_lag, Duration::ZERO);
    assert!(status.checkpoint >= FeedPosition::new(status.head.tx, status.head.position));

    store
        .append(
            "acc-2",
            "Account",
            ExpectedVersion::Any,
            vec![withdrawal(20)],
        )
        .await
        .unwrap();
    let status = runner.status().await.unwrap();
    assert_eq!(status.event_lag, 1);
    assert!(status.time_lag > Duration::ZERO);
}

#[tokio::test]
async fn a_redelivered_batch_has_no_second_effect() {
    let (store, table) = setup().await;
    store
        .append(
            "acc-1",
            "Account",
            ExpectedVersion::Any,
            vec![deposit(100), deposit(10)],
        )
        .await
        .unwrap();
    // Other tests' open transactions may hold the feed back for a moment.
    let batch = loop {
        let batch = store.read_feed(&FeedQuery::from_start()).await.unwrap();
        if batch.events.len() == 2 {
            break batch;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut runner = ProjectionRunner::new(store.another_client().await.unwrap(), balances(&table));
    assert_eq!(
        runner
            .apply_batch(&batch.events, batch.next)
            .await
            .unwrap()
            .handled,
        2
    );
    assert_eq!(
        runner
            .apply_batch(&batch.events, batch.next)
            .await
            .unwrap()
            .handled,
        0,
        "the same batch again"
    );
    assert_eq!(
        runner
            .apply_batch(&batch.events[1..], batch.next)
            .await
            .unwrap()
            .handled,
        0,
        "a part of it"
    );
    assert_eq!(
        read_model(&store, &table).await,
        [("acc-1".to_owned(), 110, 2)]
    );
    assert_eq!(runner.checkpoint().await.unwrap(), batch.next);
}

#[tokio::test]
async fn a_failing_handler_rolls_its_batch_back_and_is_retried() {
    let (store, table) = setup().await;
    store
        .append(
            "acc-1",
            "Account",
            ExpectedVersion::Any,
            vec![deposit(1), deposit(2), deposit(3)],
        )
        .await
        .unwrap();
    // Fails twice (on the second event, after the first was written), then works.
    let projection = balances(&table);
    let failures = projection.failures.clone();
    failures.store(0, Ordering::SeqCst);
    let mut runner = ProjectionRunner::new(store.another_client().await.unwrap(), projection)
        .retries(3, Duration::from_millis(1))
        .dead_letters(false);
    failures.store(2, Ordering::SeqCst);
    assert_eq!(runner.catch_up().await.unwrap(), 3);
    assert_eq!(
        read_model(&store, &table).await,
        [("acc-1".to_owned(), 6, 3)],
        "no partial batch survived"
    );

    // Without the dead-letter queue, a handler that keeps failing stops the runner; nothing of
    // its batch is applied.
    let pending = store
        .append(
            "acc-1",
            "Account",
            ExpectedVersion::Any,
            vec![deposit(10), deposit(20)],
        )
        .await
        .unwrap();
    failures.store(100, Ordering::SeqCst);
    let error = runner.catch_up().await.unwrap_err();
    assert!(
        matches!(
            &error,
            RunnerError::Handler {
                projection: "balances",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("the read model is unavailable"),
        "{error}"
    );
    // The checkpoint may have moved over empty stretches of the feed, never onto the batch.
    assert!(runner.checkpoint().await.unwrap() < pending[0].feed_position());
    assert_eq!(
        read_model(&store, &table).await,
        [("acc-1".to_owned(), 6, 3)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runner_holds_the_lease_and_another_takes_over_when_it_dies() {
    let (store, table) = setup().await;
    for i in 0..50 {
        store
            .append(
                &format!("acc-{}", i % 5),
                "Account",
                ExpectedVersion::Any,
                vec![deposit(1)],
            )
            .await
            .unwrap();
    }
    let first = balances(&table);
    let second = balances(&table);
    let (first_handled, second_handled) = (first.handled.clone(), second.handled.clone());
    let runner = |projection| async {
        ProjectionRunner::new(store.another_client().await.unwrap(), projection)
            .batch_size(10)
            .poll_interval(Duration::from_millis(20))
            .lease_retry(Duration::from_millis(20))
    };
    let first_task = tokio::spawn(runner(first).await.run(std::future::pending()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (stop_second, stopped) = tokio::sync::oneshot::channel::<()>();
    let second_task = tokio::spawn(runner(second).await.run(async {
        let _ = stopped.await;
    }));

    wait_for(|| first_handled.load(Ordering::SeqCst) == 50).await;
    for _ in 0..20 {
        store
            .append("acc-0", "Account", ExpectedVersion::Any, vec![deposit(1)])
            .await
            .unwrap();
    }
    wait_for(|| first_handled.load(Ordering::SeqCst) == 70).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        second_handled.load(Ordering::SeqCst),
        0,
        "the second instance waits for the lease"
    );

    // The first instance dies: its lease connection closes, the second takes over.
    first_task.abort();
    let _ = first_task.await;
    for _ in 0..30 {
        store
            .append("acc-1", "Account", ExpectedVersion::Any, vec![deposit(1)])
            .await
            .unwrap();
    }
    wait_for(|| second_handled.load(Ordering::SeqCst) == 30).await;
    stop_second.send(()).unwrap();
    second_task.await.unwrap().unwrap();

    assert_eq!(
        first_handled.load(Ordering::SeqCst) + second_handled.load(Ordering::SeqCst),
        100
    );
    let model = read_model(&store, &table).await;
    let total: i64 = model.iter().map(|(_, cents, _)| cents).sum();
    let events: i64 = model.iter().map(|(_, _, events)| events).sum();
    assert_eq!((total, events), (100, 100), "every deposit counted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_projection_follows_new_events_and_stops_gracefully() {
    let (store, table) = setup().await;
    let projection = balances(&table);
    let handled = projection.handled.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        ProjectionRunner::new(store.another_client().await.unwrap(), projection)
            .poll_interval(Duration::from_secs(3600))
            .run(async {
                let _ = stopped.await;
            }),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let writer = store.another_client().await.unwrap();
    writer
        .append("acc-9", "Account", ExpectedVersion::Any, vec![deposit(42)])
        .await
        .unwrap();
    // The poll interval is an hour: the notification wakes the runner.
    wait_for(|| handled.load(Ordering::SeqCst) == 1).await;
    stop.send(()).unwrap();
    let projection = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(projection.handled.load(Ordering::SeqCst), 1);
    assert_eq!(
        read_model(&store, &table).await,
        [("acc-9".to_owned(), 42, 1)]
    );
}

async fn wait_for(condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_checkpoint_reset_between_or_during_catch_ups_rebuilds_everything() {
    let (store, table) = setup().await;
    for i in 0..40 {
        store
            .append(
                &format!("acc-{}", i % 4),
                "Account",
                ExpectedVersion::Any,
                vec![deposit(1)],
            )
            .await
            .unwrap();
    }
    let mut runner = ProjectionRunner::new(store.another_client().await.unwrap(), balances(&table))
        .batch_size(3);
    let mut handled = 0;
    while handled < 40 {
        handled += runner.catch_up().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reset = format!(
        "TRUNCATE {table}; UPDATE \"{}\".projection_checkpoints SET tx = 0, position = 0",
        store.schema()
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(reset.clone()))
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(runner.catch_up().await.unwrap(), 40, "the reset is noticed");

    // A reset in the middle of a catch-up (the runner's position is cached and the next batch
    // read ahead): the runner notices it at its next batch and reads from the reset checkpoint.
    let store_events = 40 + 1_500;
    let writer = store.another_client().await.unwrap();
    let new: Vec<NewEvent> = (0..1_500).map(|_| deposit(1)).collect();
    writer
        .append("acc-big", "Account", ExpectedVersion::Any, new)
        .await
        .unwrap();
    let projection = balances(&table);
    let handled = projection.handled.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        ProjectionRunner::new(store.another_client().await.unwrap(), projection)
            .batch_size(5)
            .run(async {
                let _ = stopped.await;
            }),
    );
    wait_for(|| handled.load(Ordering::SeqCst) > 300).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(reset))
        .execute(store.pool())
        .await
        .unwrap();
    let total = || {
        let store = store.pool().clone();
        let table = table.clone();
        async move {
            sqlx::query_scalar::<_, Option<i64>>(sqlx::AssertSqlSafe(format!(
                "SELECT sum(events)::bigint FROM {table}"
            )))
            .fetch_one(&store)
            .await
            .unwrap()
            .unwrap_or(0)
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while total().await < store_events {
        assert!(std::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let model = read_model(&store, &table).await;
    assert_eq!(
        model.iter().map(|row| row.2).sum::<i64>(),
        store_events,
        "every event once after the reset: {model:?}"
    );
    assert_eq!(model.iter().map(|row| row.1).sum::<i64>(), store_events);
}
